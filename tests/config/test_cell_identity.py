"""A cell's name is its identity on disk: a config that differs from the one a cell was written with, but
gets the same name (SafePatching's default tag leaves out beta, alpha and the ascent bound), is stopped
before any model loads instead of overwriting the results; a rerun of the same config still resumes."""

import json

import pytest

from qresafe_exp.cell_identity import check_cell_not_taken, check_unique_cell_names, patch_knobs, quant_knobs
from qresafe_exp.pipeline import ConfigError, cell_dir, validate
from tests.conftest import run_cli

CLAIM = ["experiment=claim_safepatching", "debug=smoke"]
# Q-resafe's damaged cell: the QLoRA fine-tune's lr is not in the cell's name
DAMAGE = ["model=tiny-random-llama", "quant=qlora", "bits=4", "calib=hh_harmful", "quant.merge=adapter", "patch=none"]


def _write_cell(cfg) -> None:
    out = cell_dir(cfg, cfg.cell)
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps({"cell": cfg.cell, "axes": {"patch_knobs": patch_knobs(cfg.patch)}}))


def test_a_cell_written_with_other_patch_knobs_is_not_overwritten(compose_cfg):
    written = compose_cfg(CLAIM)
    _write_cell(written)
    rerun = compose_cfg(CLAIM)
    check_cell_not_taken(rerun, cell_dir(rerun, rerun.cell) / "metrics.json")  # the same config resumes

    other = compose_cfg([*CLAIM, "patch.beta=0.0", "patch.se.max_nll_rise=3.0"])
    assert other.cell == written.cell  # the default tag names neither knob
    with pytest.raises(ConfigError) as err:
        validate(other)
    message = str(err.value)
    assert "patch.beta: 0.5 there, 0.0 now" in message and "patch.se.max_nll_rise: 1.5 there, 3.0 now" in message
    assert "experiment=claim_safepatching_grid" in message and str(cell_dir(other, other.cell)) in message


def test_the_grid_names_the_knobs_so_its_cells_never_collide(compose_cfg):
    written = compose_cfg(CLAIM)
    _write_cell(written)
    grid = compose_cfg(["experiment=claim_safepatching_grid", "debug=smoke", "patch.beta=0.0"])
    assert grid.cell != written.cell
    check_cell_not_taken(grid, cell_dir(grid, grid.cell) / "metrics.json")


def test_a_knob_added_to_the_code_later_is_no_collision(compose_cfg):
    cfg = compose_cfg(CLAIM)
    out = cell_dir(cfg, cfg.cell)
    out.mkdir(parents=True)
    older = {k: v for k, v in patch_knobs(cfg.patch).items() if k != "se.max_nll_rise"}
    (out / "metrics.json").write_text(json.dumps({"cell": cfg.cell, "axes": {"patch_knobs": older}}))
    check_cell_not_taken(cfg, out / "metrics.json")


def test_two_jobs_of_one_sweep_with_one_name_and_two_patches_are_refused(compose_cfg):
    jobs = [compose_cfg([*CLAIM, f"patch.beta={beta}"]) for beta in (0.5, 0.0)]
    with pytest.raises(ValueError, match=r"both named .*patch\.beta: 0\.5 in one, 0\.0 in the other"):
        check_unique_cell_names(jobs)


def test_quant_none_ignores_bits_so_a_bits_sweep_runs_its_fp_cell_once(compose_cfg):
    jobs = [compose_cfg(["model=tiny-random-llama", "quant=none", f"bits={bits}"]) for bits in (4, 8)]
    assert jobs[0].cell == jobs[1].cell
    check_unique_cell_names(jobs)


def test_the_sweep_stops_before_any_cell_and_names_the_knob(tmp_path):
    out = tmp_path / "outputs"
    proc = run_cli("-m", *CLAIM, "patch.beta=0.5,0.0", f"paths.output_dir={out}", "logger=none")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no cell was run" in proc.stderr and "patch.beta: 0.5 in one, 0.0 in the other" in proc.stderr
    assert not list(out.glob("studies/*/*/metrics.json"))  # only the sweep's own record was written


def test_a_damaged_cell_written_with_another_fine_tune_lr_is_not_overwritten(compose_cfg):
    written = compose_cfg([*DAMAGE, "quant.train.lr=1e-3"])
    out = cell_dir(written, written.cell)
    out.mkdir(parents=True)
    axes = {"patch_knobs": patch_knobs(written.patch), "quant_knobs": quant_knobs(written)}
    (out / "metrics.json").write_text(json.dumps({"cell": written.cell, "axes": axes}))
    check_cell_not_taken(compose_cfg([*DAMAGE, "quant.train.lr=1e-3"]), out / "metrics.json")  # resumes

    other = compose_cfg([*DAMAGE, "quant.train.lr=2e-4"])
    assert other.cell == written.cell  # the QLoRA tag names the calibration set, not the lr
    with pytest.raises(ConfigError) as err:
        validate(other)
    message = str(err.value)
    assert "quant.train.lr: 0.001 there, 0.0002 now" in message and "study=" in message


def test_a_sweep_over_a_knob_the_quantizer_tag_leaves_out_is_refused(compose_cfg):
    jobs = [compose_cfg([*DAMAGE, f"quant.train.lr={lr}"]) for lr in ("1e-3", "2e-4")]
    with pytest.raises(ValueError, match=r"quant\.train\.lr: 0\.001 in one, 0\.0002 in the other"):
        check_unique_cell_names(jobs)


def test_an_fp_cell_has_no_quantizer_knobs_and_cells_written_before_them_resume(compose_cfg):
    assert quant_knobs(compose_cfg(["model=tiny-random-llama", "quant=none"])) == {}
    cfg = compose_cfg(DAMAGE)
    assert quant_knobs(cfg)["quant.train.lr"] == cfg.quant.train.lr
    out = cell_dir(cfg, cfg.cell)
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps({"cell": cfg.cell, "axes": {}}))  # no quant_knobs recorded
    check_cell_not_taken(cfg, out / "metrics.json")
