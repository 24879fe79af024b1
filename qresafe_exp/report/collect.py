"""A study's metrics.json files -> one tidy row per cell (axes, headline metrics with n and CIs,
degeneration, cost, provenance). Never needs W&B; ``from_wandb`` reads the same rows back from the
W&B API when asked."""

from __future__ import annotations

import json
from pathlib import Path

def _headline(block: dict) -> dict | None:
    value = block.get(block.get("metric", ""))
    if not isinstance(value, dict):
        return None
    point = value.get("rate", value.get("value"))
    lo, hi = (value.get("ci95") or [None, None])[:2]
    return {"value": point, "n": value.get("n"), "lo": lo, "hi": hi}


def _task_columns(metrics: dict, suite: str, block: dict) -> dict:
    """lm_eval: '<suite>.<task>.<metric>' with its .stderr, .n, .lo, .hi and .vs_fp, for each top-level task
    (a group's subtasks stay in metrics.json)."""
    from qresafe_exp.evals.lm_harness import task_metrics, top_level

    out = {}
    for task in top_level(block):
        for metric in task_metrics(block, task):
            value = block["tasks"][task][metric]
            name = f"{suite}.{task}.{metric}"
            lo, hi = (value.get("ci95") or [None, None])[:2]
            out.update({name: value.get("value"), f"{name}.stderr": value.get("stderr"), f"{name}.n": value.get("n"),
                        f"{name}.lo": lo, f"{name}.hi": hi})
            delta = (metrics.get("vs_reference") or {}).get(name)
            if delta is not None:
                out[f"{name}.vs_fp"] = delta
    return out


def tidy_row(metrics: dict) -> dict:
    axes = metrics.get("axes") or {}
    row = {"cell": metrics["cell"], "study": metrics.get("study"), "status": metrics.get("status", "ok"),
           "model": axes.get("model"), "quant": axes.get("quant"), "bits": axes.get("bits"),
           "group_size": axes.get("group_size"), "calib": axes.get("calib"), "patch": axes.get("patch"),
           "patch_tag": axes.get("patch_tag") or axes.get("patch"), "eval": (metrics.get("protocol") or {}).get("eval"),
           "protocol": (metrics.get("protocol") or {}).get("protocol"), "reference_cell": metrics.get("reference_cell")}
    for suite, block in (metrics.get("scores") or {}).items():
        if "tasks" in block:
            row.update(_task_columns(metrics, suite, block))
            continue
        head = _headline(block)
        if head is None:
            continue
        name = f"{suite}.{block['metric']}"
        row.update({name: head["value"], f"{name}.n": head["n"], f"{name}.lo": head["lo"], f"{name}.hi": head["hi"]})
        delta = (metrics.get("vs_reference") or {}).get(name)
        if delta is not None:
            row[f"{name}.vs_fp"] = delta
        for config, rate in (block.get("per_config") or {}).items():
            row[f"{suite}.decoding.{config}"] = rate.get("rate")
        keyword = block.get("asr_keyword")  # the GCG "suffix match" ASR beside a validated judge's headline
        if isinstance(keyword, dict):
            lo, hi = (keyword.get("ci95") or [None, None])[:2]
            row.update({f"{suite}.asr_keyword": keyword.get("rate"), f"{suite}.asr_keyword.n": keyword.get("n"),
                        f"{suite}.asr_keyword.lo": lo, f"{suite}.asr_keyword.hi": hi})
        if isinstance(block.get("degenerate"), dict):
            row[f"{suite}.degenerate"] = block["degenerate"].get("rate")
    # the paired test against the cell's own FP reference (absent in studies written before it existed);
    # its delta (same prompts only) is the one the test and interval are about, so it wins where present
    for name, test in (metrics.get("paired_vs_reference") or {}).items():
        lo, hi = (test.get("ci95") or [None, None])[:2]
        if test.get("delta") is not None:
            row[f"{name}.vs_fp"] = test["delta"]
        row.update({f"{name}.vs_fp.lo": lo, f"{name}.vs_fp.hi": hi, f"{name}.vs_fp.p": test.get("p_value")})
    summary = metrics.get("summary") or {}
    row["degenerate"] = (summary.get("degenerate") or {}).get("rate")
    row["broken"] = summary.get("broken")
    patch = metrics.get("patch") or {}
    cost = patch.get("cost") or {}
    row["patch_seconds"] = cost.get("wall_seconds")
    row["patch_peak_rss_mb"] = cost.get("rss_peak_mb")
    row["patch_cuda_peak_mb"] = cost.get("cuda_peak_mb")
    adapter = ((patch.get("variants") or {}).get("adapter") or {}).get("scores", {}).get("advbench", {})
    row["advbench.asr.unmerged"] = (adapter.get("asr") or {}).get("rate")
    quant = metrics.get("quantization") or {}
    row["quantize_seconds"] = quant.get("quantize_seconds")
    row["checkpoint_mb"] = round(quant["checkpoint_bytes"] / 1e6, 1) if quant.get("checkpoint_bytes") else None
    row["eval_seconds"] = (metrics.get("cost") or {}).get("eval_seconds")
    row["reason"] = metrics.get("reason")
    row["git_commit"] = (((metrics.get("provenance") or {}).get("git") or {}).get("commit") or "")[:12] or None
    return row


def read_study(studies_dir: str | Path, study: str) -> list[dict]:
    root = Path(studies_dir) / study
    files = sorted(root.glob("*/metrics.json"))
    if not files:
        raise FileNotFoundError(f"study '{study}': no metrics.json under {root}. Run the study first, or check "
                                "study= and paths.output_dir (studies are listed under <output_dir>/studies/)")
    return [json.loads(path.read_text()) for path in files]


def cell_dirs(studies_dir: str | Path, study: str) -> dict[str, Path]:
    """{cell name: its folder} (where samples.jsonl lies beside metrics.json)."""
    root = Path(studies_dir) / study
    return {json.loads(path.read_text())["cell"]: path.parent for path in sorted(root.glob("*/metrics.json"))}


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
                out.append(json.loads(Path(handle.name).read_text()))
            except Exception as err:  # a run without the file (e.g. a report run) is skipped, and said
                print(f"skipping W&B run {run.name}: no metrics.json ({type(err).__name__})")
    if not out:
        raise FileNotFoundError(f"no W&B run of group '{study}' in {path} has a metrics.json")
    return out
