"""Q-resafe's patch data (Algorithm 1, lines 1-5): for each prompt, the FP model's response is
preferred over the response of the quantized model that will be patched.

Both sides are generated greedily with the same chat template, system prompt and length, through
the per-request cache, so the FP responses are shared by every cell of a study and a rerun
generates nothing. Pairs whose two responses are the same (after whitespace normalisation) teach
nothing and are dropped; how many is reported.
"""

from __future__ import annotations

from qresafe_exp.cache import RequestCache
from qresafe_exp.engines.hf import HFEngine
from qresafe_exp.generate import GenerationSpec, generate_cached, render_chat
from qresafe_exp.models import ModelRef, load_model, load_tokenizer


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def model_responses(
    model: ModelRef,
    prompts: list[str],
    requests: RequestCache,
    device,
    *,
    max_new_tokens: int,
    system_prompt: str | None = None,
    batch_size: int = 16,
    side: str = "FP",
) -> tuple[list[str], int]:
    """(greedy responses of ``model`` to ``prompts``, how many were generated now), through the cache."""
    tokenizer = load_tokenizer(model.path)
    texts = [render_chat(tokenizer, p, system_prompt) for p in prompts]
    spec = GenerationSpec(max_new_tokens=max_new_tokens, system_prompt=system_prompt)
    engine = lambda: HFEngine(load_model(model.path, device), load_tokenizer(model.path), batch_size)  # noqa: E731
    return generate_cached(engine, model.key, texts, spec, requests, desc=f"patch data: {side} ({model.name})")


def preference_pairs(
    fp: ModelRef,
    quantized: ModelRef,
    prompts: list[str],
    requests: RequestCache,
    device,
    *,
    max_new_tokens: int,
    system_prompt: str | None = None,
    batch_size: int = 16,
) -> tuple[list[dict], dict]:
    """([{'prompt', 'chosen', 'rejected'}], facts) for ``prompts``."""

    def responses(model: ModelRef, side: str) -> tuple[list[str], int]:
        return model_responses(
            model,
            prompts,
            requests,
            device,
            max_new_tokens=max_new_tokens,
            system_prompt=system_prompt,
            batch_size=batch_size,
            side=side,
        )

    chosen, generated_fp = responses(fp, "preferred, FP")
    rejected, generated_q = responses(quantized, "rejected, quantized")
    pairs = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in zip(prompts, chosen, rejected) if not _same(c, r)]
    facts = {
        "prompts": len(prompts),
        "identical_dropped": len(prompts) - len(pairs),
        "pairs": len(pairs),
        "generated_now": {"fp": generated_fp, "quantized": generated_q},
    }
    return pairs, facts


def drop_unsafe_chosen(pairs: list[dict], harmful: set[str], judge_cfg) -> tuple[list[dict], int]:
    """Drop pairs on harmful prompts whose preferred (FP) answer the judge scores as jailbroken, or
    could not score (a failed verdict is no evidence that the answer is safe)."""
    from qresafe_exp.judges import build_judge

    verdicts = build_judge(judge_cfg).judge([(p["prompt"], p["chosen"]) for p in pairs])
    kept = [p for p, v in zip(pairs, verdicts) if not (p["prompt"] in harmful and v["jailbroken"] is not False)]
    return kept, len(pairs) - len(kept)
