"""Hydra callbacks for sweeps: keep each run's multirun.yaml, fail fast on any bad cell before the
first job runs, and print one table of every cell at the end."""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from pathlib import Path

from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from qresafe_exp.cache import write_text_atomic
from qresafe_exp.schema import STAMP_FORMAT, run_stamp

log = logging.getLogger(__name__)


BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


class UnlistableSweep(Exception):
    """The sweeper picks (some) values as it runs: its cells cannot be listed before the first job."""


def sweeper_name(config: DictConfig) -> str:
    return str(config.hydra.sweeper.get("_target_") or BASIC_SWEEPER).rsplit(".", 1)[-1]


def is_basic_sweep(config: DictConfig) -> bool:
    return sweeper_name(config) == BASIC_SWEEPER.rsplit(".", 1)[-1]


def sweep_job_configs(config: DictConfig) -> list[DictConfig]:
    """Compose the config of every job of the sweep (no model is touched): the basic sweeper's jobs, or
    every combination of another sweeper's discrete choices (a superset of what it picks). Raises
    UnlistableSweep, naming the value, where the sweeper draws values as it runs (an interval, a search
    space given as a mapping)."""
    from hydra import compose
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    for key, value in params.items():
        if not isinstance(value, (str, int, float, bool)):  # e.g. {type: range, bounds: [...]}
            raise UnlistableSweep(f"hydra.sweeper.params.{key} is a search space ({value})")
    overrides = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(overrides)
    for override in parsed:
        if override.is_sweep_override() and not override.is_discrete_sweep():
            raise UnlistableSweep(f"{override.input_line} is drawn as the sweep runs")
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
            stamp = datetime.fromtimestamp(latest.stat().st_mtime).strftime(STAMP_FORMAT)
            write_text_atomic(records / stamp / "multirun.yaml", text)
    path = records / run_stamp() / "multirun.yaml"
    write_text_atomic(path, OmegaConf.to_yaml(config))  # the config the sweeper saves next
    return path


class PreflightCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from qresafe_exp.cell_identity import check_unique_cell_names
        from qresafe_exp.pipeline import ConfigError, validate

        keep_run_record(config)
        sweeper = sweeper_name(config)
        try:
            jobs = sweep_job_configs(config)
        except (HydraException, OmegaConfBaseException) as err:  # e.g. bits=4,abc: the cell does not compose
            from qresafe_exp.preflight import compose_error_line

            print(f"Error in sweep, no cell was run: {compose_error_line(err)}", file=sys.stderr, flush=True)
            raise SystemExit(2) from err
        except UnlistableSweep as why:
            # run_cell validates its own config first, so a bad cell still stops before its model loads
            log.warning(
                "preflight: the %s's cells cannot be listed before it runs (%s); each cell is "
                "validated at its start, before its model loads",
                sweeper,
                why,
            )
            return
        try:
            check_unique_cell_names(jobs)
            for job in jobs:
                validate(job)
        except (ConfigError, ValueError) as err:
            # Hydra turns a callback's exceptions into warnings and goes on; a bad cell must stop
            # the sweep before its first job, so exit here (SystemExit is not caught).
            print(f"Error in sweep, no cell was run: {err}", file=sys.stderr, flush=True)
            raise SystemExit(2) from err
        if is_basic_sweep(config):
            log.info("preflight: %d cells valid", len(jobs))
        else:
            log.info(
                "preflight: %d cells valid: every combination of the %s's choices in "
                "hydra.sweeper.params and the command line (each cell is validated again at its start)",
                len(jobs),
                sweeper,
            )


class SummaryCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from qresafe_exp.metrics import load as load_metrics
        from qresafe_exp.pipeline import cell_dir, reference_cell_name
        from qresafe_exp.summary import format_table, table_row

        cells: dict[str, Path] = {}
        if is_basic_sweep(config):
            for job in sweep_job_configs(config):
                for name in (reference_cell_name(job), job.cell):
                    cells.setdefault(name, cell_dir(job, name) / "metrics.json")
        else:  # another sweeper's cells: those that ran now (Hydra records of this run), with their references
            sweep_dir = Path(config.hydra.sweep.dir)
            for record in sorted(sweep_dir.glob(f"*/.hydra/{run_stamp()}")):
                metrics = record.parent.parent / "metrics.json"
                reference = load_metrics(metrics).reference_cell if metrics.is_file() else None
                for name in filter(None, (reference, record.parent.parent.name)):
                    cells.setdefault(name, sweep_dir / name / "metrics.json")
        rows, missing = [], []
        for name, path in cells.items():
            if path.exists():
                rows.append(table_row(load_metrics(path)))
            else:
                missing.append(name)
        text = format_table(rows)
        if missing:
            text += "\nno results (failed or not run): " + ", ".join(missing)
        study_dir = next(iter(cells.values())).parent.parent if cells else None
        if study_dir is not None:
            write_text_atomic(study_dir / "summary.md", text + "\n")
        print(f"\n{text}\n", flush=True)
