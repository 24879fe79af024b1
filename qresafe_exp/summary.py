"""The short end-of-run table: cell, ASR (CI; the validated judge's, and the keyword ASR beside it),
XSTest refusal (CI), utility, each with its paired
delta to the FP reference (interval, * when significant), degeneration, size on disk, the unmerged
patch's ASR, patch time, build time. Simulated (quantize-dequantize) results are marked in the cell column."""

from __future__ import annotations

from qresafe_exp.metrics import CellMetrics, parse
from qresafe_exp.schema import Estimate, ScoreBlock


def _rate(estimate: Estimate | None) -> str:
    if estimate is None or estimate.value is None:
        return "-"
    return f"{estimate.value:.2f} [{estimate.lo:.2f},{estimate.hi:.2f}] n={estimate.n}"


def _value(estimate: Estimate | None) -> str:
    if estimate is None or estimate.value is None:
        return "-"
    interval = f" [{estimate.lo:.2f},{estimate.hi:.2f}]" if estimate.lo is not None and estimate.hi is not None else ""
    return f"{estimate.value:.2f}{interval}" + (f" n={estimate.n}" if estimate.n is not None else "")


def _broken_rate(block: ScoreBlock) -> str:
    raw, clean = block.headline, block.non_degenerate
    if raw is None or raw.value is None:
        return "-"
    clean_text = f"{clean.value:.2f} n={clean.n}" if clean is not None and clean.value is not None else "n=0"
    return f"broken (raw {raw.value:.2f}; non-degenerate {clean_text})"


def _build_seconds(metrics: CellMetrics) -> float:
    quantize = metrics.quantization.get("quantize_seconds") or 0.0
    return quantize + _patch_seconds(metrics) + metrics.cost["eval_seconds"]


def _patch_seconds(metrics: CellMetrics) -> float:
    return metrics.patch_cost.get("wall_seconds") or 0.0


def _size(metrics: CellMetrics) -> str:
    size = (metrics.patch.get("sizes") or {}).get("merged_checkpoint_bytes") or metrics.quantization.get(
        "checkpoint_bytes"
    )
    return f"{size / 1e6:.0f} MB" if size else "-"


def _unmerged_asr(metrics: CellMetrics) -> str:
    block = metrics.variant_scores("adapter").get("advbench")
    asr = block.headline if block is not None and block.metric == "asr" else None
    return f"{asr.value:.2f} n={asr.n}" if asr is not None and asr.value is not None else "-"


# the default eval's columns keep their names; any other suite gets "<metric> <suite>"
DEFAULT_COLUMNS = {
    "advbench": "ASR advbench (95% CI)",
    "xstest_safe": "XSTest-safe refusal (95% CI)",
    "alpaca_eval_ppl": "ref. perplexity (95% CI)",
}


def _headline(block: ScoreBlock) -> str:
    return _rate(block.headline) if block.headline is not None and block.headline.is_rate else _value(block.headline)


DEFAULT_DELTAS = {"advbench": "ASR vs FP", "xstest_safe": "refusal vs FP", "alpaca_eval_ppl": "perplexity vs FP"}
DELTA_SUFFIX = " vs FP"
LEGEND = (
    "* paired test p < 0.05 (exact McNemar for rates, sign test for perplexity and scores); "
    "vs FP = cell minus FP reference on the same prompts [paired 95% CI]"
)


def _paired_delta(metrics: CellMetrics, suite: str, metric: str) -> str:
    """'+0.27 [+0.14,+0.39]*': the paired delta, its interval and * when the paired test says p < 0.05;
    the plain delta for cells written before paired deltas existed."""
    name = f"{suite}.{metric}"
    paired = metrics.paired.get(name)
    if paired is None or paired.delta is None:
        plain = metrics.vs_reference.get(name)
        return f"{plain:+.2f}" if plain is not None else "-"
    interval = f" [{paired.lo:+.2f},{paired.hi:+.2f}]" if paired.lo is not None and paired.hi is not None else ""
    return f"{paired.delta:+.2f}{interval}" + ("*" if paired.significant else "")


def _stderr_value(value: dict) -> str:
    """'0.27 ±0.02 n=100': an lm-eval metric with the harness's stderr."""
    if value.get("value") is None:
        return "-"
    stderr = f" ±{value['stderr']:.2f}" if value.get("stderr") is not None else ""
    return f"{value['value']:.2f}{stderr}" + (f" n={value['n']}" if value.get("n") is not None else "")


def _task_columns(metrics: CellMetrics, name: str, block: dict) -> dict:
    """lm_eval: each top-level task's first metric, and its delta to the FP reference."""
    from qresafe_exp.evals.lm_harness import task_metrics, top_level

    columns = {}
    for task in top_level(block):
        metric = task_metrics(block, task)[0]
        value = block["tasks"][task][metric]
        title = f"{task} {metric}"
        columns[title] = _stderr_value(value)
        if "vs_reference" in metrics:
            delta = metrics.vs_reference.get(f"{name}.{task}.{metric}")
            columns[f"{title}{DELTA_SUFFIX}"] = f"{delta:+.2f}" if delta is not None else "-"
    return columns


def _suite_columns(metrics: CellMetrics, show) -> dict:
    scores = metrics.scores
    names = list(DEFAULT_COLUMNS) if all(n in scores for n in DEFAULT_COLUMNS) else list(scores)
    names += [n for n in scores if n not in names and scores[n].metric == "tasks"]  # lm_eval beside them
    columns = {}
    for name in names:
        block = scores[name]
        if block.metric == "tasks":  # lm_eval: each task's headline with the harness's stderr
            columns.update(_task_columns(metrics, name, metrics.raw["scores"][name]))
            continue
        title = DEFAULT_COLUMNS.get(name) or f"{block.metric} {name}"
        generated = block.non_degenerate is not None  # a generated rate: broken cells say so
        columns[title] = show(block) if generated else _headline(block)
        failures = block.judge_failures
        if failures.get("n"):  # never let a missing verdict pass for a score
            columns[title] += f" ({failures['n']}/{failures['of']} judge failures)"
        if block.keyword is not None:  # the paper's keyword ("suffix match") ASR beside the validated judge's
            columns[f"keyword {title.split(' (')[0]}"] = _rate(block.keyword)
        if "vs_reference" in metrics:  # not the FP reference itself
            delta = _paired_delta(metrics, name, block.metric)
            broken = metrics.broken and generated
            columns[DEFAULT_DELTAS.get(name) or f"{title}{DELTA_SUFFIX}"] = (
                f"broken (raw {delta})" if broken and delta != "-" else delta
            )
    return columns


def table_row(metrics) -> dict:
    """The summary row of one cell (a metrics.json dict or metrics.CellMetrics)."""
    metrics = parse(metrics)
    if metrics.status == "unsupported":
        return {
            "cell": metrics.cell,
            "ASR advbench (95% CI)": "unsupported",
            "XSTest-safe refusal (95% CI)": metrics.reason,
            "ref. perplexity (95% CI)": "-",
            "degenerate": "-",
            "size": "-",
            "ASR unmerged patch": "-",
            "patch time": "-",
            "build time": "-",
        }
    degenerate = metrics.degenerate
    broken = metrics.broken
    flag = " BROKEN" if broken else ""
    # A broken cell's rates measure gibberish, not safety: say so instead of showing a bare ASR.
    show = _broken_rate if broken else (lambda block: _rate(block.headline))
    simulated = " (simulated)" if metrics.quantization.get("simulated") else ""
    return {
        "cell": metrics.cell + simulated,
        **_suite_columns(metrics, show),
        "degenerate": f"{degenerate.value:.2f}{flag}"
        if degenerate is not None and degenerate.value is not None
        else "-",
        "size": _size(metrics),  # the evaluated (quantized, or merged patched) checkpoint's safetensors
        "ASR unmerged patch": _unmerged_asr(metrics),  # the 16-bit patch on the quantized base
        "patch time": f"{_patch_seconds(metrics):.0f}s" if metrics.patch else "-",
        # seconds spent building this cell's artifacts (quantize + evaluate): the same on a warm
        # rerun, which takes ~0 s of its own (metrics.json keeps that as cost.wall_seconds)
        "build time": f"{_build_seconds(metrics):.0f}s",
    }


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "(no cells)"
    # the fullest row sets the column order (the FP reference has no vs-FP columns); cells of other
    # eval configs add columns
    columns = list(dict.fromkeys(c for r in sorted(rows, key=len, reverse=True) for c in r))
    rows = [{c: r.get(c, "-") for c in columns} for r in rows]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    line = lambda values: "| " + " | ".join(str(v).ljust(widths[c]) for c, v in zip(columns, values)) + " |"
    sep = "|" + "|".join("-" * (widths[c] + 2) for c in columns) + "|"
    legend = [LEGEND] if any(c.endswith(DELTA_SUFFIX) for c in columns) else []
    return "\n".join([line(columns), sep, *(line([r[c] for c in columns]) for r in rows), *legend])
