"""Eval suites by name. A suite fixes its prompts, how they are evaluated and the rate it reports.

Kinds (each has a runner, ``run(suite, records, ctx) -> (rows, score block)``):
- ``harmful``: generate, the judge decides ``jailbroken``; ASR (per category where the set has them).
- ``overrefusal``: generate on prompts that should be answered; refusal rate (XSTest's string match
  or the judge's 3-way label, ``eval.refusal_judge``); XSTest's contrast prompts reported apart.
- ``qos``: the quality-of-service probe: benign templates x demographic groups; per-group refusal and
  answer length, and the disparity between groups.
- ``mcq``: multiple-choice accuracy by the option letters' log-probabilities (SafetyBench).
- ``utility_ppl``: perplexity of benign reference answers under the model (no generation, no judge).
- ``mtbench``: two-turn answers graded 1-10 by the judge; ``pairwise``: AlpacaEval win rate.
- ``lm_eval``: lm-evaluation-harness tasks (``eval.lm_eval``) on the cell's model; the harness brings
  its own documents (``params.own_data``: no records, ``eval.limit`` does not apply).
Bump a suite's ``version`` whenever a change could move its numbers.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from qresafe_exp.registry import Registry

RUNNERS: Registry[Callable] = Registry(
    "suite kind",
    {
        "harmful": "qresafe_exp.evals.asr:run_harmful",
        "overrefusal": "qresafe_exp.evals.overrefusal:run_overrefusal",
        "qos": "qresafe_exp.evals.qos_probe:run_qos",
        "mcq": "qresafe_exp.evals.safetybench:run_safetybench",
        "utility_ppl": "qresafe_exp.evals.utility:run_reference_perplexity",
        "mtbench": "qresafe_exp.evals.utility:run_mtbench",
        "pairwise": "qresafe_exp.evals.utility:run_pairwise",
        "lm_eval": "qresafe_exp.evals.lm_harness:run_lm_eval",
    },
)
# the judge task a kind needs (checked before anything runs)
JUDGE_TASK = {"harmful": "harm", "mtbench": "mtbench", "pairwise": "pairwise"}


@dataclass(frozen=True)
class Suite:
    name: str
    dataset: str
    kind: str
    metric: str
    version: int = 1
    keep: Callable[[dict], bool] | None = None
    params: dict = field(default_factory=dict)

    def runner(self) -> Callable:
        return RUNNERS.get(self.kind)

    def select(
        self, records: list[dict], limit: int | None, seed: int, exclude: frozenset[str] = frozenset()
    ) -> tuple[list[dict], int]:
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


def _not_copyright(record: dict) -> bool:
    # HarmBench's copyright behaviours are scored by a hash check of the reproduced text, not by a
    # harm judge; they are left out of ASR (as HarmBench's judge-based numbers do)
    return record.get("functional_category") != "copyright"


_S = Suite
ADVBENCH = _S("advbench", "advbench", "harmful", "asr")
HARMBENCH_VAL = _S("harmbench_val", "harmbench_val", "harmful", "asr", keep=_not_copyright)
HARMBENCH_TEST = _S("harmbench_test", "harmbench_test", "harmful", "asr", keep=_not_copyright)
HARMFULQA = _S("harmfulqa", "harmfulqa", "harmful", "asr")
DANGEROUSQA = _S("dangerousqa", "dangerousqa", "harmful", "asr")
CATQA = _S("catqa", "catqa", "harmful", "asr")
BEAVERTAILS = _S("beavertails", "beavertails_eval", "harmful", "asr")
PROMPTS_FILE = _S("prompts", "${prompts}", "harmful", "asr")  # the user's file (top-level `prompts=`)
XSTEST_SAFE = _S("xstest_safe", "xstest", "overrefusal", "refusal_rate", keep=lambda r: r["label"] == "safe")
XSTEST = _S("xstest", "xstest", "overrefusal", "refusal_rate")  # all 450: safe + contrast
OKTEST = _S("oktest", "oktest", "overrefusal", "refusal_rate")
# every template x every group, always: a sample would unbalance the groups (eval.limit does not apply)
QOS = _S("qos", "qos_templates", "qos", "refusal_disparity", params={"complete": True})
SAFETYBENCH_ZH = _S("safetybench_zh", "safetybench_zh", "mcq", "accuracy", params={"lang": "zh"})
SAFETYBENCH_EN = _S("safetybench_en", "safetybench_en", "mcq", "accuracy", params={"lang": "en"})
ALPACA_EVAL_PPL = _S("alpaca_eval_ppl", "alpaca_eval", "utility_ppl", "reference_perplexity")
MTBENCH = _S("mtbench", "mt_bench", "mtbench", "mtbench_score")
ALPACA_EVAL = _S("alpaca_eval", "alpaca_eval", "pairwise", "win_rate")  # v1: vs text-davinci-003
ALPACA_EVAL2 = _S("alpaca_eval2", "alpaca_eval2", "pairwise", "win_rate")  # v2: vs gpt-4-1106-preview
# per task metrics with the harness's stderr under `tasks` (evals/lm_harness.py); no single headline
LM_EVAL = _S("lm_eval", "lm_eval", "lm_eval", "tasks", params={"own_data": True})

SUITES: Registry[Suite] = Registry(
    "eval suite",
    {
        name: f"qresafe_exp.evals.suites:{attr}"
        for name, attr in [
            ("advbench", "ADVBENCH"),
            ("harmbench_val", "HARMBENCH_VAL"),
            ("harmbench_test", "HARMBENCH_TEST"),
            ("harmfulqa", "HARMFULQA"),
            ("dangerousqa", "DANGEROUSQA"),
            ("catqa", "CATQA"),
            ("beavertails", "BEAVERTAILS"),
            ("prompts", "PROMPTS_FILE"),
            ("xstest_safe", "XSTEST_SAFE"),
            ("xstest", "XSTEST"),
            ("oktest", "OKTEST"),
            ("qos", "QOS"),
            ("safetybench_zh", "SAFETYBENCH_ZH"),
            ("safetybench_en", "SAFETYBENCH_EN"),
            ("alpaca_eval_ppl", "ALPACA_EVAL_PPL"),
            ("mtbench", "MTBENCH"),
            ("alpaca_eval", "ALPACA_EVAL"),
            ("alpaca_eval2", "ALPACA_EVAL2"),
            ("lm_eval", "LM_EVAL"),
        ]
    },
)
