"""What every suite's evaluation needs from the run: the model (loaded lazily), its tokenizer and
chat rendering, cached generation, the FP fluency scorer for the degeneration guard, the judge with
cached verdicts. One per evaluated model; suites get it and return (rows, score block)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from omegaconf import DictConfig

from qresafe_exp.cache import RequestCache
from qresafe_exp.evals.degeneration import degeneration_signals
from qresafe_exp.evals.judging import cached_verdicts
from qresafe_exp.evals.perplexity import cached_perplexities
from qresafe_exp.evals.protocols import Protocol
from qresafe_exp.generate import GenerationSpec, generate_cached, render_chat


@dataclass
class EvalContext:
    cfg: DictConfig
    tokenizer: object
    engine: Callable  # an EngineFactory: () -> the engine, built (model loaded) on first call
    model_key: str
    requests: RequestCache
    judge: object
    protocol: Protocol
    system_prompt: str | None
    label: str
    fp_model: Callable | None = None  # () -> the FP model that scores fluency (None = guard off)
    scorer_key: str | None = None
    stats: dict = field(default_factory=lambda: {"generated": 0})

    def render(self, prompt: str, history: tuple = ()) -> str:
        return render_chat(self.tokenizer, prompt, self.system_prompt, history)

    def spec(self, **overrides) -> GenerationSpec:
        base = GenerationSpec(max_new_tokens=self.cfg.eval.max_new_tokens, system_prompt=self.system_prompt)
        return dataclasses.replace(base, **overrides)

    def generate(self, texts: list[str], spec: GenerationSpec, desc: str) -> list[str]:
        responses, generated = generate_cached(
            self.engine, self.model_key, texts, spec, self.requests, desc=f"{self.label} {desc}"
        )
        self.stats["generated"] += generated
        return responses

    def response_rows(
        self,
        suite_name: str,
        records: list[dict],
        texts: list[str],
        responses: list[str],
        keep: tuple = ("category", "functional_category", "type", "label"),
    ) -> list[dict]:
        """One row per response with the degeneration signals (FP perplexity when a scorer is set)."""
        perplexities = [None] * len(texts)
        if self.fp_model is not None:
            perplexities = cached_perplexities(
                self.fp_model,
                self.tokenizer,
                self.scorer_key,
                texts,
                responses,
                self.requests,
                self.cfg.eval.batch_size,
                desc=f"fp perplexity {suite_name}",
            )
        rows = []
        for rec, response, ppl in zip(records, responses, perplexities):
            extra = {k: rec[k] for k in keep if rec.get(k) is not None}
            rows.append(
                {
                    "suite": suite_name,
                    "id": rec["id"],
                    "prompt": rec["prompt"],
                    **extra,
                    "response": response,
                    **degeneration_signals(response, self.cfg.eval.degeneration, ppl),
                }
            )
        return rows

    def verdicts(self, task: str, items: list) -> list[dict]:
        return cached_verdicts(self.judge, task, items, self.requests)
