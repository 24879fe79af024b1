import pytest

from qresafe_exp.registry import Registry, UnknownNameError


def test_unknown_name_lists_allowed_and_suggests():
    reg = Registry("quantizer", {"gptq": "json:dumps", "awq": "json:loads"})
    with pytest.raises(UnknownNameError) as err:
        reg.get("gptqq")
    message = str(err.value)
    assert "unknown quantizer 'gptqq'" in message
    assert "Did you mean 'gptq'?" in message
    assert "Allowed: awq, gptq" in message


def test_lazy_import_resolves_target_once():
    import json

    reg = Registry("thing", {"dumps": "json:dumps"})
    assert reg.get("dumps") is json.dumps
    assert reg.get("dumps") is reg.get("dumps")


def test_duplicate_registration_is_refused():
    reg = Registry("thing", {"a": "json:dumps"})
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", "json:loads")


def test_project_registries_resolve_every_entry():
    from qresafe_exp.engines import ENGINES
    from qresafe_exp.evals.suites import RUNNERS, SUITES
    from qresafe_exp.formats import FORMATS
    from qresafe_exp.judges import JUDGES
    from qresafe_exp.patch import PATCHES
    from qresafe_exp.quant import QUANTIZERS
    from qresafe_exp.tracking import TRACKERS

    for registry in (QUANTIZERS, PATCHES, JUDGES, SUITES, FORMATS, RUNNERS, ENGINES, TRACKERS):
        for name in registry:
            obj = registry.get(name)
            assert getattr(obj, "name", name) == name
    assert set(RUNNERS) == {suite.kind for suite in map(SUITES.get, SUITES)}  # every kind runs, none is spare


def test_patches_that_differ_only_in_settings_are_one_class_under_several_names(compose_cfg):
    """qresafe, qresafe_qa, dpo and sft: one trainer; what tells them apart is their YAML."""
    from qresafe_exp.patch import PATCHES
    from qresafe_exp.patch.trained import TrainedPatch

    assert {PATCHES.get(n) for n in ("qresafe", "qresafe_qa", "dpo", "sft")} == {TrainedPatch}
    settings = {n: compose_cfg(["quant=rtn", f"patch={n}"]).patch for n in ("qresafe", "qresafe_qa", "dpo", "sft")}
    assert {n: (c.objective, c.tau, c.quant_aware) for n, c in settings.items()} == {
        "qresafe": ("dpo", 0.6, False),
        "qresafe_qa": ("dpo", 0.6, True),
        "dpo": ("dpo", 1.0, False),
        "sft": ("sft", 1.0, False),
    }


def test_engine_and_logger_names_come_from_their_registries(compose_cfg):
    import torch

    from qresafe_exp.engines import EngineFactory
    from qresafe_exp.generate import GenerationSpec
    from qresafe_exp.tracking import NoTracker, WandbTracker, build_tracker

    cfg = compose_cfg(["debug=smoke", "model=tiny-random-llama"])
    factory = EngineFactory(cfg.engine, "unused", torch.device("cpu"), None, lambda *_: None)
    greedy, sampled = GenerationSpec(max_new_tokens=4), GenerationSpec(max_new_tokens=4, do_sample=True)
    assert (factory.cache_tag(greedy), factory.cache_tag(sampled)) == (None, "hf-compact")  # the keys runs wrote
    assert isinstance(build_tracker(cfg.logger), NoTracker)
    wandb = compose_cfg(["debug=smoke", "model=tiny-random-llama", "logger=wandb"]).logger
    assert isinstance(build_tracker(wandb), WandbTracker)
    with pytest.raises(ValueError, match="logger=mlflow is unknown. Allowed: none, wandb"):
        build_tracker(type("Cfg", (), {"name": "mlflow", "mode": "offline"})())
