"""Every option of every group composes and resolves; bad configs fail before any model loads."""

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from qresafe_exp.pipeline import ConfigError, validate
from tests.conftest import CONF, run_cli

GROUPS = ["model", "quant", "patch", "calib", "eval", "judge", "logger", "paths", "launcher", "debug", "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), f"qresafe_exp/conf/{group}/ is empty"


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_resolves(compose_cfg, group, option):
    extra = ["model.path=/tmp/some-model", "model.name=some-model"] if (group, option) == ("model", "hf") else []
    cfg = compose_cfg([f"{group}={option}", *extra])
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["cell"].count(".") >= 2
    if group == "quant" and option != "none":
        assert container["quant"]["bits"] == container["bits"]  # bits interpolated from top level


def test_bits_is_top_level_and_reaches_the_quantizer(compose_cfg):
    cfg = compose_cfg(["quant=gptq", "bits=8"])
    assert cfg.quant.bits == 8
    assert cfg.cell == "smollm2-135m.gptq-w8g64-alpaca.none"


def test_misspelt_key_fails_at_compose_naming_the_key(compose_cfg):
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(["quant=gptq", "quant.group_sise=32"])
    assert "group_sise" in str(err.value.__cause__ or err.value)
    with pytest.raises(ConfigCompositionException, match="bitz"):
        compose_cfg(["bitz=4"])


def test_wrong_type_fails_at_compose(compose_cfg):
    with pytest.raises(ConfigCompositionException):
        compose_cfg(["quant=gptq", "quant.group_size=sixty-four"])


def test_unknown_quantizer_lists_the_available_options(compose_cfg):
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(["quant=gptqq"])
    message = str(err.value)
    assert "gptqq" in message
    for name in ("awq", "gptq", "none", "rtn"):
        assert name in message


@pytest.mark.parametrize(
    "quant,bits,ok",
    [
        ("gptq", 4, True),
        ("gptq", 8, True),
        ("gptq", 3, True),
        ("awq", 2, True),
        ("gptq", 9, False),
        ("rtn", 2, True),
        ("rtn", 3, True),
        ("rtn", 9, False),
        ("none", 3, True),
        ("bnb", 4, True),
        ("bnb", 8, True),
        ("bnb", 3, False),
        ("qlora", 4, True),
        ("qlora", 2, False),
        ("llm_qat", 2, True),
        ("llm_qat", 1, False),
    ],
)
def test_bits_a_method_cannot_do_are_refused_with_the_allowed_values(compose_cfg, quant, bits, ok):
    cfg = compose_cfg([f"quant={quant}", f"bits={bits}"])
    if ok:
        validate(cfg)
    else:
        with pytest.raises(ConfigError) as err:
            validate(cfg)
        assert f"bits={bits}" in str(err.value) and "Allowed bits" in str(err.value)


def test_missing_data_dir_is_a_config_error(compose_cfg, tmp_path):
    cfg = compose_cfg([f"paths.data_dir={tmp_path / 'no-such-dir'}"])
    with pytest.raises(ConfigError, match="does not exist"):
        validate(cfg)


def test_cli_bad_bits_fails_fast_without_loading_a_model(tmp_path):
    out = tmp_path / "outputs"
    proc = run_cli("quant=bnb", "bits=3", f"paths.output_dir={out}", "logger=none")
    assert proc.returncode == 2
    assert "Error: [smollm2-135m.bnb-w3.none] quant=bnb cannot do bits=3. Allowed bits for bnb: 4, 8" in proc.stderr
    assert not (out / "cache" / "model").exists()  # nothing was loaded or built


def test_cli_sweep_with_one_bad_cell_fails_before_any_cell_runs(tmp_path):
    out = tmp_path / "outputs"
    proc = run_cli("-m", "debug=smoke", "model=tiny-random-llama", "quant=rtn,bnb", "bits=3", f"paths.output_dir={out}")
    assert proc.returncode != 0
    assert "bnb cannot do bits=3" in proc.stderr
    assert not list(Path(out).glob("studies/*/*/metrics.json"))


def test_cli_misspelt_key_names_the_key_the_fix_and_the_allowed_keys(tmp_path):
    proc = run_cli("quant=gptq", "quant.group_sise=32", f"paths.output_dir={tmp_path}")
    assert proc.returncode == 2
    assert "unknown config key 'quant.group_sise'" in proc.stderr
    assert "Did you mean 'quant.group_size'?" in proc.stderr
    assert "Allowed keys of quant:" in proc.stderr and "dampening_frac" in proc.stderr


def test_override_key_check_follows_group_choices_and_sweeps():
    from qresafe_exp.cli import UnknownKeyError, check_override_keys

    check_override_keys(["-m", "quant=gptq,awq", "bits=4,8", "quant.group_size=32", "+new.key=1"])
    check_override_keys(["debug=smoke", "model=tiny-random-llama", "eval.limit=2", "model.architecture.hidden_size=32"])
    check_override_keys(["model=hf", "model.name=mine", "model.path=/x"])  # keys whose default is ??? exist
    with pytest.raises(UnknownKeyError, match="Did you mean 'bits'"):
        check_override_keys(["bitz=4"])
    with pytest.raises(UnknownKeyError, match="quant has no key 'dampening_frac'"):
        check_override_keys(["quant=awq", "quant.dampening_frac=0.1"])


def test_claim_qresafe_composes_the_documented_damaged_cell(compose_cfg):
    """One command runs the regime docs/patches.md measured: the served QLoRA adapter cell, patch lr 2e-5."""
    cfg = compose_cfg(["experiment=claim_qresafe"])
    assert (cfg.quant.name, cfg.quant.merge, cfg.quant.seed, cfg.quant.train.lr) == ("qlora", "adapter", 0, 1e-3)
    assert cfg.calib.name == "hh-harmful-n128e3"
    assert (cfg.patch.lr, cfg.patch.beta, cfg.patch.epochs, cfg.patch.mask_every) == (2e-5, 0.1, 2, 16)


def test_claim_safepatching_grid_names_each_knob_it_sweeps(compose_cfg):
    """The grid varies beta and the ascent bound, which the base tag leaves out: two settings never share a cell."""
    cells = {
        compose_cfg(["experiment=claim_safepatching_grid", f"patch.beta={beta}", f"patch.se.max_nll_rise={rise}"]).cell
        for beta in (0.5, 0.0)
        for rise in (1.5, 3.0)
    }
    assert len(cells) == 4
    cfg = compose_cfg(["experiment=claim_safepatching_grid", "patch.beta=0", "patch.rescale=false"])
    assert (
        cfg.cell
        == "smollm2-135m.fp.safepatching-random_plus_diffset-a0.05b0.05p0.3-al1.0be0.0-rise1.5-norescale.claims"
    )
    assert (cfg.patch.data.num_samples, cfg.patch.se.max_nll_rise) == (128, 1.5)  # the claim study's settings
    # a step budget on the ascent names the cell only when set (the cells above keep their names)
    steps = compose_cfg(["experiment=claim_safepatching_grid", "patch.beta=0", "patch.se.max_steps=3"])
    assert steps.cell.endswith("-al1.0be0.0-rise1.5-steps3.claims") and steps.patch.se.max_steps == 3
    held = compose_cfg(["experiment=claim_safepatching_grid", "patch.beta=0", "patch.se.stop_on=set"])
    assert held.cell.endswith("-al1.0be0.0-rise1.5-setnll.claims")


def test_claim_safepatching_seeds_names_the_cells_the_seed_study_wrote(compose_cfg):
    """One command re-runs (or resumes) the seed study of docs/safepatching.md: the safety patch alone, the bound
    held on all of D_h, each seed its own cell, under the names those cells were written with by hand."""
    cfg = compose_cfg(["experiment=claim_safepatching_seeds", "seed=3"])
    assert cfg.cell == (
        "smollm2-135m-safe.fp.safepatching-random_plus_diffset-a0.05b0.05p0.3-al1.0be0.0-rise1.5-setnll-norescale"
        ".claims.seed3"
    )
    assert (cfg.study, cfg.patch.beta, cfg.patch.rescale, cfg.patch.se.stop_on) == (
        "claim_safepatching",
        0,
        False,
        "set",
    )
    lower = compose_cfg(["experiment=claim_safepatching_seeds", "patch.se.max_nll_rise=1.0"])
    assert lower.cell.endswith("-al1.0be0.0-rise1.0-setnll-norescale.claims")
