"""Hydra callbacks for sweeps: fail fast on any bad cell before the first job runs, and print
one table of every cell at the end."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from qresafe_exp.cache import write_text_atomic

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


class PreflightCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from qresafe_exp.pipeline import ConfigError, validate

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
