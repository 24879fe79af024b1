"""`python -m qresafe_exp.report study=NAME`: the paper's tables and figures from a study's results.

Reads outputs/studies/NAME/*/metrics.json (or, with source=wandb, the same files from the W&B API),
with ``versus=<patch tag>`` (or a list of tags) the claims table again, paired against each control patch instead of FP;
writes outputs/reports/NAME/: results.csv + results.parquet (one tidy row per cell), tables/*.md and
*.tex, figures/*.png and *.pdf, dashboard.html (one self-contained interactive file: sortable tables,
Plotly figures, a sample browser over every cell's samples.jsonl); and logs the summary table
and the figures to the study's W&B group (logger=none to skip).
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from qresafe_exp.conf import CONFIG_PATH
from qresafe_exp.schema import register_configs

register_configs()
log = logging.getLogger(__name__)


def check_safety_suite(suite: str) -> None:
    from qresafe_exp.evals.suites import SUITES

    harmful = sorted(name for name in SUITES.names() if SUITES.get(name).kind == "harmful")
    if suite not in harmful:
        raise ValueError(
            f"safety_suite={suite}: the safety-utility figure plots a harmful suite's ASR. "
            f"Allowed: {', '.join(harmful)}"
        )


def claim_readings(options: DictConfig):
    """The claim-target table's thresholds and suites from the report options (claim_targets.Readings)."""
    from qresafe_exp.report.claim_targets import Readings
    from qresafe_exp.report.options import one_or_many

    suites = one_or_many(options.suites)
    return Readings(
        headroom=float(options.headroom),
        within=float(options.within),
        suites=None if suites is None else tuple(suites),
        sides=str(options.get("sides", "both")),
        asr=str(options.get("asr", "harm")),
    )


def build_report(cfg: DictConfig) -> dict:
    import pandas as pd

    from qresafe_exp.cache import write_text_atomic
    from qresafe_exp.report import collect, dashboard, figures, groups, interactive, options, tables, versus

    check_safety_suite(cfg.safety_suite)
    readings = claim_readings(cfg.claim_targets)  # a bad option fails before any file is read
    if cfg.source == "wandb":
        metrics = collect.from_wandb(cfg.logger.entity, cfg.logger.project, cfg.study)
    elif cfg.source == "files":
        metrics = collect.read_study(cfg.studies_dir, cfg.study)
    else:
        raise ValueError(f"source={cfg.source} is unknown. Allowed: files, wandb")
    # each cell, then each patch variant (the unmerged form) as a row of its own (column `variant`)
    rows = [collect.tidy_row(m) for m in metrics] + [r for m in metrics for r in collect.variant_rows(m)]
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    write_text_atomic(out / "results.csv", frame.to_csv(index=False))
    frame.to_parquet(out / "results.parquet", index=False)
    # each cell's folder (its samples.jsonl); source=wandb reads metrics.json only, so no answers
    dirs = collect.cell_dirs(cfg.studies_dir, cfg.study) if cfg.source == "files" else {}
    answers = versus.answers(metrics, dirs, Path(cfg.paths.cache_dir) / "eval")
    rows = versus.pooled_vs_reference(rows, answers)  # a setting's seeds in one test vs FP (its mean row)
    made = tables.all_tables(rows, answers, readings)
    # the testbed targets read from fuller studies of the same models (testbed_targets.wider_from)
    if wider := options.one_or_many((cfg.get("testbed_targets") or {}).get("wider_from")):
        from qresafe_exp.report import testbed_targets

        fuller = {name: [collect.tidy_row(m) for m in collect.read_study(cfg.studies_dir, name)] for name in wider}
        made = testbed_targets.tables_with_wider_readings(made, rows, fuller, readings)
    for tag in versus.tags(cfg.get("versus")):  # the claims table again, paired against each control instead of FP
        made += versus.versus_tables(rows, tag, answers)
    # a rerun's names may differ (one file per eval/protocol group): no stale tables or figures beside them
    for folder, suffixes in ((out / "tables", {".md", ".tex"}), (out / "figures", {".png", ".pdf"})):
        for stale in (p for p in folder.glob("*") if p.suffix in suffixes):
            stale.unlink()
    for table in made:
        write_text_atomic(out / "tables" / f"{table.name}.md", table.markdown())
        write_text_atomic(out / "tables" / f"{table.name}.tex", table.latex())
    skipped = [b.__name__ for b in tables.BUILDERS if b.__name__ not in {t.kind for t in made}]
    notes = [f"not in this study (no cells of that shape): {', '.join(skipped)}"] if skipped else []
    notes.insert(
        0,
        "one table and figure per eval config and protocol, each cell against the FP reference of its own "
        "group: " + "; ".join(groups.label(g) for g in groups.split(rows)),
    )
    pictures = figures.all_figures(rows, metrics, out / "figures", cfg.safety_suite)
    wandb = dashboard.wandb_html(dashboard.wandb_links(metrics))  # the study's W&B group(s), if logged there
    cells = collect.without_variants(rows)  # the page's cell table and figures (unmerged forms: the claims table)
    write_text_atomic(
        out / "dashboard.html",
        dashboard.render(
            cfg.study,
            made,
            pictures,
            len(cells),
            notes,
            rows=cells,
            interactive=interactive.all_figures(cells, cfg.safety_suite),
            browser=_browser(cfg, metrics, dirs, answers),
            wandb=wandb,
        ),
    )
    _log_to_wandb(cfg, rows, pictures)
    return {
        "out": out,
        "cells": len(cells),
        "tables": [t.name for t in made],
        "figures": list(pictures),
        "skipped": skipped,
    }


def _browser(cfg: DictConfig, metrics: list[dict], dirs: dict[str, Path], answers) -> dict | None:
    from qresafe_exp.report import samples

    if not cfg.dashboard.samples:
        return None
    # no folders (source=wandb): the browser then says that each cell has no samples; the files the tables
    # read are not read again (``answers``: report/versus.py Answers)
    return samples.browser_data(
        metrics,
        dirs,
        cfg.dashboard.max_response_chars,
        rows_of=answers.samples_if_any,
    )


def _log_to_wandb(cfg: DictConfig, rows: list[dict], pictures: dict) -> None:
    from qresafe_exp.tracking import build_tracker

    tracker = build_tracker(cfg.logger)
    try:
        tracker.start(
            run_dir=Path(cfg.out_dir),
            name=f"report-{cfg.study}",
            group=cfg.study,
            job_type="report",
            config={"study": cfg.study, "source": cfg.source},
            tags=["report"],
        )
        tracker.log_table("summary", rows)
        tracker.log_images({f"figures/{name}": path for name, path in pictures.items()})
    finally:
        tracker.finish()


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="report")
def main(cfg: DictConfig) -> None:
    result = build_report(cfg)
    print(
        f"\nreport for study {cfg.study}: {result['cells']} cells, tables {', '.join(result['tables']) or '-'}, "
        f"figures {', '.join(result['figures']) or '-'}"
        + (f" (not in this study: {', '.join(result['skipped'])})" if result["skipped"] else "")
        + f"\n  -> {result['out'] / 'dashboard.html'}\n"
    )


if __name__ == "__main__":
    main()
