"""Hydra callbacks for sweeps: keep each run's multirun.yaml, fail fast on any bad cell before the
first job runs, and print one table of every cell at the end."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from qresafe_exp.cache import write_text_atomic
from qresafe_exp.schema import run_stamp

log = logging.getLogger(__name__)


def sweep_job_configs(config: DictConfig) -> list[DictConfig]:
    """Compose the config of every job the basic sweeper will launch (no model is touched)."""
    from hydra import compose
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    overrides = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(overrides)
    jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    return [compose(config_name=config.hydra.job.config_name, overrides=list(job)) for job in jobs]


def keep_run_record(config: DictConfig) -> Path:
    """Save this run's multirun config as <sweep dir>/.hydra/<run stamp>/multirun.yaml, beside the cells'
    .hydra/<run stamp>/ records; Hydra's own <sweep dir>/multirun.yaml is the latest run's only. One
    written before this layout (no copy under .hydra/) is kept there under its modification time."""
    sweep_dir = Path(config.hydra.sweep.dir)
    records = sweep_dir / ".hydra"
    latest = sweep_dir / "multirun.yaml"
    if latest.is_file():
        text = latest.read_text()
        if not any(p.read_text() == text for p in records.glob("*/multirun.yaml")):
            stamp = datetime.fromtimestamp(latest.stat().st_mtime).strftime("%Y-%m-%d_%H-%M-%S_%f")
            write_text_atomic(records / stamp / "multirun.yaml", text)
    path = records / run_stamp() / "multirun.yaml"
    write_text_atomic(path, OmegaConf.to_yaml(config))  # the config the sweeper saves next
    return path


class PreflightCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from qresafe_exp.pipeline import ConfigError, validate

        keep_run_record(config)

        jobs = sweep_job_configs(config)
        try:
            for job in jobs:
                validate(job)
        except ConfigError as err:
            # Hydra turns a callback's exceptions into warnings and goes on; a bad cell must stop
            # the sweep before its first job, so exit here (SystemExit is not caught).
            print(f"Error in sweep, no cell was run: {err}", file=sys.stderr, flush=True)
            raise SystemExit(2) from err
        log.info("preflight: %d cells valid", len(jobs))


class SummaryCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from qresafe_exp.pipeline import cell_dir, reference_cell_name
        from qresafe_exp.summary import format_table, table_row

        cells: dict[str, Path] = {}
        for job in sweep_job_configs(config):
            for name in (reference_cell_name(job), job.cell):
                cells.setdefault(name, cell_dir(job, name) / "metrics.json")
        rows, missing = [], []
        for name, path in cells.items():
            if path.exists():
                rows.append(table_row(json.loads(path.read_text())))
            else:
                missing.append(name)
        text = format_table(rows)
        if missing:
            text += "\nno results (failed or not run): " + ", ".join(missing)
        study_dir = next(iter(cells.values())).parent.parent if cells else None
        if study_dir is not None:
            write_text_atomic(study_dir / "summary.md", text + "\n")
        print(f"\n{text}\n", flush=True)
