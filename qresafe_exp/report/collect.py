"""A study's metrics.json files -> one tidy row per cell (axes, headline metrics with n and CIs,
degeneration, cost, provenance). Never needs W&B; ``from_wandb`` reads the same rows back from the
W&B API when asked."""

from __future__ import annotations

from pathlib import Path

from qresafe_exp import metrics as cell_metrics
from qresafe_exp.schema import DegenerationConfig, Estimate

KNOB_PREFIX = "patch."  # a patch's numeric settings as axes: patch.tau, patch.lr, patch.data.num_harmful ...


def _task_columns(m: cell_metrics.CellMetrics, suite: str, block: dict) -> dict:
    """lm_eval: '<suite>.<task>.<metric>' with its .stderr, .n, .lo, .hi and .vs_fp, for each top-level task
    (a group's subtasks stay in metrics.json)."""
    from qresafe_exp.evals.lm_harness import task_metrics, top_level

    out = {}
    for task in top_level(block):
        for metric in task_metrics(block, task):
            value = block["tasks"][task][metric]
            name = f"{suite}.{task}.{metric}"
            lo, hi = (value.get("ci95") or [None, None])[:2]
            out.update(
                {
                    name: value.get("value"),
                    f"{name}.stderr": value.get("stderr"),
                    f"{name}.n": value.get("n"),
                    f"{name}.lo": lo,
                    f"{name}.hi": hi,
                }
            )
            delta = m.vs_reference.get(name)
            if delta is not None:
                out[f"{name}.vs_fp"] = delta
    return out


def _estimate(row: dict, name: str, value: Estimate) -> None:
    row.update({name: value.value, f"{name}.n": value.n, f"{name}.lo": value.lo, f"{name}.hi": value.hi})


def judge_name(judge: dict | str | None) -> str | None:
    """The harm-ASR judge as a table names it: 'harm rules v3' for a rule judge, 'labels (testbed_labels.csv)'
    for the labels judge, else its name."""
    if not isinstance(judge, dict):
        return judge
    if judge.get("labels"):
        return f"{judge.get('name')} ({', '.join(judge['labels'])})"
    rules = judge.get("rules")
    return f"{judge.get('name')} rules v{rules}" if rules is not None else judge.get("name")


def refusal_judge_name(protocol: dict) -> str | None:
    """eval.refusal_judge as a table names it; ``judge`` (the cell's judge does the refusal task too) by that judge."""
    refusal = protocol.get("refusal_judge")
    return judge_name(protocol.get("judge")) if refusal == "judge" else refusal


def tidy_row(metrics) -> dict:
    """One cell (a metrics.json dict or metrics.CellMetrics) as a flat row."""
    m = cell_metrics.parse(metrics)
    axes = m.axes
    row = {
        "cell": m.cell,
        "study": m.study,
        "status": m.status,
        "model": axes.model,
        "quant": axes.quant,
        "bits": axes.bits,
        "group_size": axes.group_size,
        "calib": axes.calib,
        "patch": axes.patch,
        "patch_tag": axes.patch_tag,
        "eval": m.protocol.get("eval"),
        "protocol": m.protocol.get("protocol"),
        "reference_cell": m.reference_cell,
        "judge": judge_name(m.protocol.get("judge")),
        "refusal_judge": refusal_judge_name(m.protocol),
    }
    # numbers, so a sweep over one (Table 5's tau) sorts and plots as numbers, not as its cell-name tag
    row.update({f"{KNOB_PREFIX}{knob}": value for knob, value in sorted(axes.patch_knobs.items())})
    for suite, block in m.scores.items():
        if block.metric == "tasks":  # lm_eval: one column per task metric, with the harness's stderr
            row.update(_task_columns(m, suite, m.raw["scores"][suite]))
            continue
        if block.headline is None:
            continue
        name = f"{suite}.{block.metric}"
        _estimate(row, name, block.headline)
        delta = m.vs_reference.get(name)
        if delta is not None:
            row[f"{name}.vs_fp"] = delta
        for config, rate in block.per_config.items():
            row[f"{suite}.decoding.{config}"] = rate
        if block.keyword is not None:  # the GCG "suffix match" ASR beside a validated judge's headline
            _estimate(row, f"{name}_keyword", block.keyword)
        if block.refused is not None:  # refusal statements on a harmful suite
            _estimate(row, f"{suite}.refused", block.refused)
        for kind, value in block.by_functional_category.items():  # HarmBench's standard / contextual
            _estimate(row, f"{name}.{kind}", value)
        if block.degenerate is not None:
            row[f"{suite}.degenerate"] = block.degenerate.value
    # the paired test against the cell's own FP reference (absent in studies written before it existed);
    # its delta (same prompts only) is the one the test and interval are about, so it wins where present
    for name, test in m.paired.items():
        row.update(paired_columns(name, test))
    row["seed"] = m.seed
    train = m.patch.get("train") or {}
    # what ranked the patch's mask (snip, or a control's random / magnitude): a control is not a recipe
    row["mask_score"] = train.get("mask_score")
    row["degenerate"] = m.degenerate.value if m.degenerate is not None else None
    row["broken"] = m.broken
    cost = m.patch_cost
    row["patch_seconds"] = cost.get("wall_seconds")
    # the patch's own compute: its optimizer steps and mask selections, without the pair generation that
    # the patch stage also times (shared by every method on the same pairs, and served by the response
    # cache to whichever runs second), so two methods' costs compare even when only one generated the pairs
    steps = train.get("train_seconds")
    row["patch_train_seconds"] = None if steps is None else round(steps + (train.get("snip_seconds") or 0.0), 1)
    row["patch_peak_rss_mb"] = cost.get("rss_peak_mb")
    row["patch_cuda_peak_mb"] = cost.get("cuda_peak_mb")
    adapter = m.variant_scores("adapter").get("advbench")
    row["advbench.asr.unmerged"] = adapter.headline.value if adapter is not None and adapter.headline else None
    quant = m.quantization
    row["quantize_seconds"] = quant.get("quantize_seconds")
    row["checkpoint_mb"] = round(quant["checkpoint_bytes"] / 1e6, 1) if quant.get("checkpoint_bytes") else None
    row["eval_seconds"] = m.cost.get("eval_seconds")
    row["reason"] = m.reason
    row["git_commit"] = (m.git_commit or "")[:12] or None
    return row


def paired_columns(name: str, test: cell_metrics.PairedDelta) -> dict:
    """A paired test's columns: ``<name>.vs_fp`` (the delta, where there is one) and its .lo, .hi, .p."""
    columns = {f"{name}.vs_fp.lo": test.lo, f"{name}.vs_fp.hi": test.hi, f"{name}.vs_fp.p": test.p_value}
    return columns if test.delta is None else {f"{name}.vs_fp": test.delta, **columns}


VARIANT_LABELS = {"adapter": "unmerged"}  # patch.variants' names as a reader knows them


def variant_cell(cell: str, variant: str) -> str:
    """The row name of a cell's patch variant: 'CELL [unmerged]'."""
    return f"{cell} [{VARIANT_LABELS.get(variant, variant)}]"


def variant_rows(metrics) -> list[dict]:
    """One row per patch variant (Q-resafe's unmerged form: quantized base + 16-bit delta), with its own
    scores and paired deltas vs FP: a result of its own beside the merged cell, marked by ``variant``."""
    m = cell_metrics.parse(metrics)
    rows = []
    for name, variant in ((m.raw.get("patch") or {}).get("variants") or {}).items():
        if not variant.get("scores"):
            continue
        raw = dict(m.raw)
        raw.update(
            scores=variant["scores"],
            vs_reference=variant.get("vs_reference") or {},
            paired_vs_reference=variant.get("paired_vs_reference") or {},
            summary=cell_metrics.summarize(variant["scores"], DegenerationConfig()),
            patch={**raw["patch"], "variants": {}},  # the variant is the row: no unmerged form of its own
        )
        row = tidy_row(raw)
        label = VARIANT_LABELS.get(name, name)
        row.update(cell=variant_cell(m.cell, name), patch_tag=f"{row['patch_tag']} ({label})", variant=label)
        rows.append(row)
    return rows


def without_variants(rows: list[dict]) -> list[dict]:
    """The cells themselves (what every table and figure but the claims' shows)."""
    return [r for r in rows if not r.get("variant")]


def read_study(studies_dir: str | Path, study: str) -> list[cell_metrics.CellMetrics]:
    root = Path(studies_dir) / study
    files = sorted(root.glob("*/metrics.json"))
    if not files:
        raise FileNotFoundError(
            f"study '{study}': no metrics.json under {root}. Run the study first, or check "
            "study= and paths.output_dir (studies are listed under <output_dir>/studies/)"
        )
    return [cell_metrics.load(path) for path in files]


def cell_dirs(studies_dir: str | Path, study: str) -> dict[str, Path]:
    """{cell name: its folder} (where samples.jsonl lies beside metrics.json)."""
    root = Path(studies_dir) / study
    return {cell_metrics.load(path).cell: path.parent for path in sorted(root.glob("*/metrics.json"))}


def from_wandb(entity: str | None, project: str, study: str) -> list[dict]:
    """The metrics dicts of a study's runs from the W&B API (each run stores metrics.json as a file)."""
    import tempfile

    import wandb

    api = wandb.Api()
    path = f"{entity}/{project}" if entity else project
    runs = api.runs(path, filters={"group": study})
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            try:
                handle = run.file("metrics.json").download(root=tmp, replace=True)
            except Exception as err:  # a run without the file (e.g. a report run) is skipped, and said
                print(f"skipping W&B run {run.name}: no metrics.json ({type(err).__name__})")
                continue
            out.append(cell_metrics.load(handle.name))  # a malformed one stops the report, naming it
    if not out:
        raise FileNotFoundError(f"no W&B run of group '{study}' in {path} has a metrics.json")
    return out
