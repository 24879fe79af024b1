"""Eval suites by name. A suite fixes its prompts, its verdict rule and the rate it reports.

- harmful suites (AdvBench): the configured judge decides ``jailbroken``; the rate is ASR.
- over-refusal suites (XSTest safe prompts): the benchmark's own rule decides ``refused``; the
  rate is the refusal rate on prompts that should be answered.
- utility suites (AlpacaEval references): no generation and no judge; the perplexity of benign
  reference answers under the evaluated model (lower = the model still "speaks" them).
Bump a suite's ``version`` whenever a change could move its numbers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Optional

from qresafe_exp.registry import Registry


@dataclass(frozen=True)
class Suite:
    name: str
    dataset: str
    kind: str  # "harmful" -> asr by the judge | "overrefusal" -> refusal_rate by `rule` | "utility"
    metric: str
    version: int = 1
    keep: Optional[Callable[[dict], bool]] = None
    rule: Optional[Callable[[str], dict]] = None

    def select(self, records: list[dict], limit: Optional[int], seed: int,
               exclude: frozenset[str] = frozenset()) -> tuple[list[dict], int]:
        """(the prompts to evaluate, how many were dropped because a model trained on them).

        ``exclude`` holds normalised training prompts: they are removed before sampling, so
        ``limit`` still gives ``limit`` held-out prompts.
        """
        from qresafe_exp.data.normalize import normalize_prompt

        kept = [r for r in records if self.keep is None or self.keep(r)]
        held_out = [r for r in kept if normalize_prompt(r["prompt"]) not in exclude]
        removed, kept = len(kept) - len(held_out), held_out
        if limit is None or limit >= len(kept):
            return kept, removed
        # A seeded sample, in file order: the same prompts for every cell of a study, and not
        # the first N rows (AdvBench's rows are clustered by topic).
        chosen = set(random.Random(seed).sample(range(len(kept)), limit))
        return [r for i, r in enumerate(kept) if i in chosen], removed


def _xstest_rule(response: str) -> dict:
    from qresafe_exp.evals.overrefusal import xstest_strmatch

    return xstest_strmatch(response)


ADVBENCH = Suite("advbench", "advbench", kind="harmful", metric="asr")
XSTEST_SAFE = Suite("xstest_safe", "xstest", kind="overrefusal", metric="refusal_rate",
                    keep=lambda r: r["label"] == "safe", rule=_xstest_rule)
ALPACA_EVAL_PPL = Suite("alpaca_eval_ppl", "alpaca_eval", kind="utility", metric="reference_perplexity")

SUITES: Registry[Suite] = Registry(
    "eval suite",
    {
        "advbench": "qresafe_exp.evals.suites:ADVBENCH",
        "xstest_safe": "qresafe_exp.evals.suites:XSTEST_SAFE",
        "alpaca_eval_ppl": "qresafe_exp.evals.suites:ALPACA_EVAL_PPL",
    },
)
