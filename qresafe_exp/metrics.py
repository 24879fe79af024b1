"""The one reader of a cell's metrics.json: ``load(path)`` / ``parse(dict)`` -> ``CellMetrics``, typed
and checked (shapes in schema.py), used by the end-of-run summary (summary.py), the report's tidy rows
(report/collect.py) and the pipeline's deltas to the FP reference (pipeline._delta).

A malformed file is one error naming the file and the key. A ``CellMetrics`` is also a read-only
mapping of the raw JSON, for the few readers of parts not typed here (figures, W&B logging).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qresafe_exp.schema import CellAxes, Estimate, PairedDelta, ScoreBlock
from qresafe_exp.stats import rate

STATUSES = ("ok", "unsupported")


class MetricsError(ValueError):
    """A metrics.json that is not what a cell writes; the message names the file and the key."""


def estimate(entry: Any) -> Estimate | None:
    """A rate ({k, n, rate, ci95}) or a value ({value, ci95[, n]}) entry; None when absent."""
    if not isinstance(entry, Mapping) or not entry:
        return None
    is_rate = "rate" in entry
    lo, hi = (list(entry.get("ci95") or []) + [None, None])[:2]
    return Estimate(
        value=entry["rate"] if is_rate else entry.get("value"), n=entry.get("n"), lo=lo, hi=hi, is_rate=is_rate
    )


def headline(block: Mapping | None) -> Estimate | None:
    """The estimate a score block's ``metric`` names (ASR, refusal rate, perplexity ...)."""
    if not isinstance(block, Mapping):
        return None
    return estimate(block.get(block.get("metric", "")))


def score_block(block: Mapping, where: str) -> ScoreBlock:
    metric = block.get("metric")
    if not isinstance(metric, str):
        raise MetricsError(f"{where}.metric: a score block names its headline entry (got {metric!r})")
    # lm_eval's block ("metric": "tasks") holds a table of task metrics, read by its own columns, no headline
    return ScoreBlock(
        metric=metric,
        headline=None if metric == "tasks" else headline(block),
        keyword=estimate(block.get(f"{metric}_keyword")),
        non_degenerate=estimate(block.get(f"{metric}_non_degenerate")),
        degenerate=estimate(block.get("degenerate")),
        per_config={name: (entry or {}).get("rate") for name, entry in (block.get("per_config") or {}).items()},
        judge_failures=dict(block.get("judge_failures") or {}),
        refused=estimate(block.get("refused")),
        by_functional_category={
            name: estimate(entry) for name, entry in (block.get("by_functional_category") or {}).items() if entry
        },
    )


def _numeric_knobs(knobs: Any) -> dict[str, float]:
    return {k: v for k, v in (knobs or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _axes(raw: Mapping) -> CellAxes:
    axes = raw.get("axes") or {}
    knobs = _numeric_knobs(axes.get("patch_knobs"))
    tau = (raw.get("patch") or {}).get("tau")
    if "tau" not in knobs and isinstance(tau, (int, float)):  # cells written before patch_knobs: the patch's own record
        knobs["tau"] = tau
    return CellAxes(
        model=axes.get("model"),
        quant=axes.get("quant"),
        bits=axes.get("bits"),
        group_size=axes.get("group_size"),
        calib=axes.get("calib"),
        patch=axes.get("patch"),
        patch_tag=axes.get("patch_tag") or axes.get("patch"),
        patch_knobs=knobs,
        quant_knobs=_numeric_knobs(axes.get("quant_knobs")),
    )


def paired_delta(test: Mapping) -> PairedDelta:
    """A paired test as written (paired.py's dict) -> PairedDelta."""
    lo, hi = (list(test.get("ci95") or []) + [None, None])[:2]
    return PairedDelta(
        delta=test.get("delta"), lo=lo, hi=hi, p_value=test.get("p_value"), significant=bool(test.get("significant"))
    )


@dataclass(frozen=True)
class CellMetrics(Mapping):
    cell: str
    status: str  # ok | unsupported
    axes: CellAxes
    scores: dict[str, ScoreBlock]
    raw: dict = field(repr=False)

    # ---- the rest, read from raw (absent parts are empty)
    @property
    def study(self) -> str | None:
        return self.raw.get("study")

    @property
    def reason(self) -> str | None:  # why an unsupported cell was not run
        return self.raw.get("reason")

    @property
    def reference_cell(self) -> str | None:
        return self.raw.get("reference_cell")

    @property
    def protocol(self) -> dict:
        return self.raw.get("protocol") or {}

    @property
    def degenerate(self) -> Estimate | None:  # over all generated suites
        return estimate((self.raw.get("summary") or {}).get("degenerate"))

    @property
    def broken(self) -> bool | None:
        return (self.raw.get("summary") or {}).get("broken")

    @property
    def vs_reference(self) -> dict[str, float | None]:
        """'<suite>.<metric>' -> the cell's headline minus its FP reference's (the plain delta)."""
        return self.raw.get("vs_reference") or {}

    @property
    def paired(self) -> dict[str, PairedDelta]:
        """'<suite>.<metric>' -> the paired delta on the same prompts, its interval and test."""
        return {name: paired_delta(test) for name, test in (self.raw.get("paired_vs_reference") or {}).items()}

    @property
    def patch(self) -> dict:
        return self.raw.get("patch") or {}

    @property
    def patch_cost(self) -> dict:  # resources.Measurement.cost_facts of the patch's steps
        return self.patch.get("cost") or {}

    def variant_scores(self, name: str) -> dict[str, ScoreBlock]:
        """The scores of a patch's other form (e.g. ``adapter``: the unmerged 16-bit patch)."""
        variant = (self.patch.get("variants") or {}).get(name) or {}
        return {
            suite: score_block(block, f"patch.variants.{name}.scores.{suite}")
            for suite, block in (variant.get("scores") or {}).items()
        }

    @property
    def quantization(self) -> dict:
        return self.raw.get("quantization") or {}

    @property
    def cost(self) -> dict:
        return self.raw.get("cost") or {}

    @property
    def seed(self) -> int | None:  # a claim's seeds are separate cells (`.seedN`) of one configuration
        return ((self.raw.get("provenance") or {}).get("determinism") or {}).get("seed")

    @property
    def git_commit(self) -> str | None:
        return ((self.raw.get("provenance") or {}).get("git") or {}).get("commit")

    # ---- the raw JSON, read-only
    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)


def parse(raw: Mapping, source: str = "metrics.json") -> CellMetrics:
    """Check and type one cell's metrics (a dict as written, or a CellMetrics, returned as it is)."""
    if isinstance(raw, CellMetrics):
        return raw
    if not isinstance(raw, Mapping):
        raise MetricsError(f"{source}: not a JSON object (a cell's metrics.json is one)")
    cell = raw.get("cell")
    if not isinstance(cell, str) or not cell:
        raise MetricsError(
            f"{source}: key 'cell' is missing or not a name; re-run the cell to rewrite its metrics.json"
        )
    status = raw.get("status", "ok")
    if status not in STATUSES:
        raise MetricsError(f"{source}: status={status!r} is unknown. Allowed: {', '.join(STATUSES)}")
    scores = raw.get("scores") or {}
    if not isinstance(scores, Mapping):
        raise MetricsError(f"{source}: key 'scores' is not an object of suite -> score block")
    blocks = {}
    for suite, block in scores.items():
        if not isinstance(block, Mapping):
            raise MetricsError(f"{source}: scores.{suite} is not a score block")
        try:
            blocks[suite] = score_block(block, f"scores.{suite}")
        except MetricsError as err:
            raise MetricsError(f"{source}: {err}") from None
    return CellMetrics(cell=cell, status=status, axes=_axes(raw), scores=blocks, raw=dict(raw))


def load(path: str | Path) -> CellMetrics:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise MetricsError(f"{path}: not valid JSON ({err}); re-run the cell to rewrite it") from None
    return parse(raw, str(path))


def summarize(scores: dict, degeneration_cfg) -> dict:
    """metrics.json ``summary`` of a set of score blocks: the degenerate share over the generated suites,
    and ``broken`` past ``degeneration_cfg.broken_if_rate_above`` (the pipeline, rescore, report variants)."""
    generated = [block for block in scores.values() if "degenerate" in block]  # not utility suites
    n = sum(block["degenerate"]["n"] for block in generated)
    k = sum(block["degenerate"]["k"] for block in generated)
    degenerate = rate([True] * k + [False] * (n - k))
    broken = degenerate["rate"] is not None and degenerate["rate"] > degeneration_cfg.broken_if_rate_above
    return {"degenerate": degenerate, "broken": broken}
