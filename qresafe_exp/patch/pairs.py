"""Q-resafe's patch data (Algorithm 1, lines 1-5): for each prompt, the FP model's response is
preferred over the response of the quantized model that will be patched.

Both sides are generated greedily with the same chat template, system prompt and length, through
the per-request cache, so the FP responses are shared by every cell of a study and a rerun
generates nothing. Pairs whose two responses are the same (after whitespace normalisation) teach
nothing and are dropped; how many is reported.
"""

from __future__ import annotations

import random

from qresafe_exp.cache import RequestCache
from qresafe_exp.engines.hf import HFEngine
from qresafe_exp.generate import GenerationSpec, generate_cached, render_chat
from qresafe_exp.judges.refusal_rules import classify_refusal
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


BENIGN_REJECTED = ("quantized", "refusal")
MAX_REFUSAL_CONTENT_WORDS = 20  # a refusal to reuse says no and little else (no topic-specific advice)


def _plain_refusal(response: str) -> bool:
    found = classify_refusal(response)
    return found.label == "2_full_refusal" and found.content_words <= MAX_REFUSAL_CONTENT_WORDS


def fp_refused(prompts: list[str], chosen: list[str], benign: set[str]) -> set[int]:
    """Indices of the benign prompts whose FP (preferred) answer is a refusal."""
    return {i for i, p in enumerate(prompts) if p in benign and classify_refusal(chosen[i]).refused}


def refusals_as_benign_rejected(
    prompts: list[str], chosen: list[str], rejected: list[str], benign: set[str], seed: int
) -> tuple[list[str], dict]:
    """``rejected`` with each benign prompt's answer replaced by one of the FP model's plain refusals
    to the harmful prompts (seeded draw), so its pair prefers answering over refusing.

    A benign prompt the FP model itself refused keeps its quantized answer: preferring a refusal over
    a refusal teaches nothing. Raises ValueError when the FP model refused none of the harmful prompts.
    """
    pool = [c for p, c in zip(prompts, chosen) if p not in benign and _plain_refusal(c)]
    targets = [i for i, p in enumerate(prompts) if p in benign]
    if targets and not pool:
        raise ValueError(
            "patch.data.benign_rejected=refusal: the FP model refused none of the harmful patch prompts "
            "plainly, so there is no refusal to reject on the benign ones; use benign_rejected=quantized "
            "or more harmful prompts (patch.data.num_harmful)"
        )
    rng = random.Random(seed)
    refused = fp_refused(prompts, chosen, benign)
    out, replaced = list(rejected), 0
    for i in targets:
        if i in refused:
            continue
        out[i] = rng.choice(pool)
        replaced += 1
    facts = {"source": "refusal", "replaced": replaced, "fp_refused_kept": len(refused), "refusal_pool": len(set(pool))}
    return out, facts


BENIGN_REFUSED = ("keep", "drop", "reference")


def refused_benign_pairs(
    prompts: list[str],
    chosen: list[str],
    rejected: list[str],
    benign: set[str],
    mode: str,
    answers: dict[str, str] | None = None,
) -> tuple[list[int], list[str], list[str], dict]:
    """(indices kept, chosen, rejected, facts) after ``mode`` acts on the benign prompts whose FP answer
    is a refusal: keep them | drop them | reference (the set's written answer, from ``answers``, is
    preferred over the FP refusal; a prompt without one is dropped)."""
    if mode == "keep":
        return list(range(len(prompts))), chosen, rejected, {"mode": mode, "dropped": 0}  # nothing to classify
    refused = fp_refused(prompts, chosen, benign)
    chosen, rejected = list(chosen), list(rejected)
    facts = {"mode": mode, "fp_refused": len(refused)}
    dropped = refused
    if mode == "reference":
        answers = answers or {}
        dropped = {i for i in refused if prompts[i] not in answers}
        for i in refused - dropped:
            chosen[i], rejected[i] = answers[prompts[i]], chosen[i]
        facts["referenced"] = len(refused) - len(dropped)
    facts["dropped"] = len(dropped)
    return [i for i in range(len(prompts)) if i not in dropped], chosen, rejected, facts


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
    benign: set[str] = frozenset(),
    benign_rejected: str = "quantized",
    benign_refused: str = "keep",
    answers: dict[str, str] | None = None,
    seed: int = 0,
) -> tuple[list[dict], dict]:
    """([{'prompt', 'chosen', 'rejected'}], facts) for ``prompts``; ``benign_rejected="refusal"``
    disprefers a refusal on the ``benign`` prompts instead of the quantized model's answer, and
    ``benign_refused`` says what becomes of a benign pair whose FP answer is a refusal (refused_benign_pairs)."""

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
    swapped = None  # benign_rejected is one of BENIGN_REJECTED: TrainedPatch.validate checks it
    if benign_rejected == "refusal":
        rejected, swapped = refusals_as_benign_rejected(prompts, chosen, rejected, benign, seed)
    kept, chosen, rejected, refused = refused_benign_pairs(prompts, chosen, rejected, benign, benign_refused, answers)
    candidates = [(prompts[i], chosen[i], rejected[i]) for i in kept]
    pairs = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in candidates if not _same(c, r)]
    facts = {
        "prompts": len(prompts),
        "identical_dropped": len(candidates) - len(pairs),
        "pairs": len(pairs),
        "generated_now": {"fp": generated_fp, "quantized": generated_q},
    }
    if swapped is not None:
        facts["benign_rejected"] = swapped
    if benign_refused != "keep":
        facts["benign_refused"] = refused
    return pairs, facts


def drop_unsafe_chosen(pairs: list[dict], harmful: set[str], judge_cfg) -> tuple[list[dict], int]:
    """Drop pairs on harmful prompts whose preferred (FP) answer the judge scores as jailbroken, or
    could not score (a failed verdict is no evidence that the answer is safe)."""
    from qresafe_exp.judges import build_judge

    verdicts = build_judge(judge_cfg).judge([(p["prompt"], p["chosen"]) for p in pairs])
    kept = [p for p, v in zip(pairs, verdicts) if not (p["prompt"] in harmful and v["jailbroken"] is not False)]
    return kept, len(pairs) - len(kept)
