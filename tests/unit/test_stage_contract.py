"""The stage contract (qresafe_exp/stages.py): the pipeline alone caches a stage's top-level artifact,
stages cache their shared sub-artifacts through StageContext.cached, and a patch sees only the root
config keys it declares."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from omegaconf.errors import ConfigAttributeError

import qresafe_exp
from qresafe_exp.cache import ArtifactCache, RequestCache
from qresafe_exp.models import ModelRef
from qresafe_exp.patch import PATCHES
from qresafe_exp.stages import Plan, StageContext, config_view

PACKAGE = Path(qresafe_exp.__file__).parent
# the pipeline (top-level artifacts), StageContext.cached (sub-artifacts) and the model layer (models,
# aligned models, GGUF tokenizers and conversions), which caches below the stages
MAY_CALL_GET_OR_BUILD = {"pipeline.py", "stages.py", "cache.py", "models.py", "engines/llamacpp.py"}


def _get_or_build_callers() -> set[str]:
    callers = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.Attribute) and n.attr == "get_or_build" for n in ast.walk(tree)):
            callers.add(path.relative_to(PACKAGE).as_posix())
    return callers


def test_only_the_pipeline_caches_stage_artifacts():
    callers = _get_or_build_callers()
    assert "pipeline.py" in callers and "stages.py" in callers
    assert callers <= MAY_CALL_GET_OR_BUILD, callers - MAY_CALL_GET_OR_BUILD


def test_run_plan_builds_once_then_serves_the_typed_result(tmp_path):
    from qresafe_exp.pipeline import run_plan

    builds = []

    def build(out: Path) -> None:
        builds.append(out)
        (out / "value.txt").write_text("42")

    def plan() -> Plan[int]:
        return Plan("demo", {"x": 1}, build, lambda art: int((art.path / "value.txt").read_text()), ["up"], 3)

    requests = RequestCache(tmp_path / "requests.sqlite")
    ctx = StageContext(ArtifactCache(tmp_path / "cache"), requests, torch.device("cpu"))
    try:
        assert run_plan(plan(), ctx) == 42 and run_plan(plan(), ctx) == 42
        assert len(builds) == 1  # the second call was served
        key = ctx.artifacts.key("demo", {"x": 1}, ["up"], 3)  # the plan's spec, upstream and version
        assert ctx.artifacts.exists("demo", key)
        assert run_plan("nothing to build", ctx) == "nothing to build"
    finally:
        requests.close()


def test_a_patch_sees_only_the_keys_it_declares(compose_cfg):
    cfg = compose_cfg(["debug=smoke", "patch=safepatching"])
    method = PATCHES.get("safepatching")
    view = config_view(cfg, method.reads)
    assert set(view) == set(method.reads)
    with pytest.raises(ConfigAttributeError, match="quant"):
        view.quant  # noqa: B018 - a trained patch depends on the quantized model, not the quant config
    # resolved in the full config: the smoke pair set is answered by the cell's own model
    assert view.patch.data.responder.name == cfg.model.name == "tiny-talkative"
    assert view.patch.data == cfg.patch.data


def test_every_patch_plans_with_its_narrowed_config(compose_cfg, tmp_path):
    """tau=0 and patch=none build nothing: their plan is the result, the quantized model."""
    from qresafe_exp.pipeline import patch

    quantized = ModelRef("q", str(tmp_path), "0123456789abcdef")
    fp = ModelRef("fp", str(tmp_path), "fedcba9876543210")
    requests = RequestCache(tmp_path / "requests.sqlite")
    ctx = StageContext(ArtifactCache(tmp_path / "cache"), requests, torch.device("cpu"))
    try:
        for overrides in (["patch=none"], ["patch=qresafe", "patch.tau=0"]):
            result = patch(fp, quantized, compose_cfg(["debug=smoke", *overrides]), ctx)
            assert result.model == quantized and not result.variants
    finally:
        requests.close()
    assert not (tmp_path / "cache").exists()  # nothing was cached
