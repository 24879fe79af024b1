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
    from qresafe_exp.evals.suites import SUITES
    from qresafe_exp.formats import FORMATS
    from qresafe_exp.judges import JUDGES
    from qresafe_exp.patch import PATCHES
    from qresafe_exp.quant import QUANTIZERS

    for registry in (QUANTIZERS, PATCHES, JUDGES, SUITES, FORMATS):
        for name in registry:
            obj = registry.get(name)
            assert getattr(obj, "name", name) == name
