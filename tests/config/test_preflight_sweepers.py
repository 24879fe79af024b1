"""The sweep preflight under a sweeper other than Hydra's basic one (Optuna, Ax, Nevergrad...): it
validates every cell it can list (discrete choices: every combination the sweeper may pick), and where
the sweeper draws values as it runs (an interval) it says so in the log and each cell is validated at
its start, before its model loads. Never a silent skip. No model is loaded here."""

import logging
import os
import textwrap

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import read_write

from qresafe_exp.callbacks import PreflightCallback
from qresafe_exp.schema import register_configs
from tests.conftest import CONF, run_cli

OPTUNA = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"  # its config, not its code


def _multirun_config(tmp_path, sweeper, params):
    """The config a sweep's callbacks get, with another sweeper's `hydra.sweeper` (its params as in YAML)."""
    register_configs()
    cfg = compose(
        "config",
        overrides=[
            "debug=smoke",
            "model=tiny-random-llama",
            "quant=rtn",
            "patch=qresafe",
            f"paths.output_dir={tmp_path / 'outputs'}",
            f"hydra.sweeper._target_={sweeper}",
        ],
        return_hydra_config=True,
    )
    with read_write(cfg.hydra.sweeper):
        cfg.hydra.sweeper.params = params
    return cfg


def test_interval_params_are_named_in_the_log_and_left_to_each_cells_start(tmp_path, caplog):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = _multirun_config(tmp_path, OPTUNA, {"patch.tau": "interval(0.1, 1.0)", "bits": "choice(2, 4)"})
        with caplog.at_level(logging.INFO, logger="qresafe_exp.callbacks"):
            PreflightCallback().on_multirun_start(cfg)
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "OptunaSweeper" in message and "patch.tau=interval(0.1, 1.0)" in message
    assert "cannot be listed" in message and "validated at its start" in message


def test_discrete_params_of_another_sweeper_are_all_validated_before_any_cell(tmp_path, capsys):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = _multirun_config(tmp_path, OPTUNA, {"patch.tau": "choice(0.5, 1.5)"})
        with pytest.raises(SystemExit) as stop:
            PreflightCallback().on_multirun_start(cfg)
    assert stop.value.code == 2
    assert "patch.tau=1.5" in capsys.readouterr().err


DRAW_SWEEPER = '''
    """A sweeper that draws each interval's value as it runs, as optimizing sweepers do."""
    import random

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper


    class DrawSweeper(Sweeper):
        def __init__(self, max_batch_size=None, params=None):
            self.params = params or {}

        def setup(self, *, hydra_context, task_function, config):
            self.config = config
            self.launcher = Plugins.instance().instantiate_launcher(
                hydra_context=hydra_context, task_function=task_function, config=config)

        def sweep(self, arguments):
            rng, job = random.Random(0), []
            for override in OverridesParser.create().parse_overrides(arguments):
                if override.is_interval_sweep():
                    value = override.value()
                    job.append(f"{override.get_key_element()}={rng.uniform(value.start, value.end):.3f}")
                else:
                    job.append(override.input_line)
            return self.launcher.launch([job], initial_job_idx=0)
'''


def _draw_sweep(tmp_path, *args):
    plugin = tmp_path / "plugins" / "hydra_plugins" / "qresafe_draw_sweeper"
    plugin.mkdir(parents=True, exist_ok=True)
    (plugin / "__init__.py").write_text(textwrap.dedent(DRAW_SWEEPER))
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "plugins"), os.environ.get("PYTHONPATH", "")])}
    return run_cli(
        "-m",
        "debug=smoke",
        "model=tiny-random-llama",
        "quant=rtn",
        "patch=qresafe",
        *args,
        f"paths.output_dir={tmp_path / 'outputs'}",
        "hydra.sweeper._target_=hydra_plugins.qresafe_draw_sweeper.DrawSweeper",
        env=env,
    )


def test_a_drawing_sweeper_runs_and_its_bad_cell_is_refused_at_its_start(tmp_path):
    proc = _draw_sweep(tmp_path, "bits=2", "patch.tau=interval(1.5,2.0)")
    assert proc.returncode == 2, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "DrawSweeper" in log and "patch.tau=interval(1.5,2.0)" in log and "cannot be listed" in log
    assert "patch.tau=1." in proc.stderr and "in [0, 1]" in proc.stderr  # the drawn cell, refused
    assert not (tmp_path / "outputs" / "cache" / "model").exists()  # before any model was built or loaded


def test_a_drawing_sweepers_summary_lists_the_cells_it_ran(tmp_path):
    # bits=9: rtn cannot, and on_unsupported=record writes the cell without loading a model
    proc = _draw_sweep(tmp_path, "bits=9", "on_unsupported=record", "patch.tau=interval(0.2,0.4)", "study=draw")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = (tmp_path / "outputs" / "studies" / "draw" / "summary.md").read_text()
    assert "tiny-random-llama.rtn-w9g64.qresafe-t0.3" in summary and "unsupported" in summary
