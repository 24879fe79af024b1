"""The cache keys each stage asks for, pinned: a refactor of the stages must keep finding the artifacts
already built (the SmolLM2 rtn 4-bit key below is the one in the testbed's outputs/cache).

A real ArtifactCache that builds nothing: it serves what it holds and stops a stage at its first miss,
recording the key asked for (the stage's spec, upstream keys and version, hashed as ever). The models
are built for real (tiny) where a stage reads them; a SafePatching pair set and a trained patch are
published as empty stand-ins, so the stage goes on to ask for its next artifact."""

from __future__ import annotations

import json

import pytest
import torch

from qresafe_exp.cache import ArtifactCache, RequestCache
from qresafe_exp.models import ModelRef, materialize


class Miss(Exception):
    def __init__(self, stage: str, key: str):
        super().__init__(f"{stage}/{key}")
        self.stage, self.key = stage, key


class PlanOnly(ArtifactCache):
    """Builds only ``build`` stages; publishes ``stubs`` stages with stand-in files; stops at any other miss."""

    def __init__(self, root, build=("model", "tokenizer"), stubs=None):
        super().__init__(root)
        self.build, self.stubs, self.asked = set(build), dict(stubs or {}), []

    def get_or_build(self, stage, spec, build, *, upstream=(), version=1):
        key = self.key(stage, spec, upstream, version)
        self.asked.append(f"{stage}/{key}")
        if stage in self.stubs:
            build = self.stubs[stage]
        elif stage not in self.build and not self.exists(stage, key):
            raise Miss(stage, key)
        return super().get_or_build(stage, spec, build, upstream=upstream, version=version)


def _stub_pairs(out):
    rows = [
        {"prompt": f"stand-in harmful prompt {i}", "response": f"answer {i}", "complied": True, "degenerate": False}
        for i in range(8)
    ]
    (out / "responses.jsonl").write_text("".join(json.dumps({**r, "kept": True}) + "\n" for r in rows))


def _asked(cache: PlanOnly, call) -> list[str]:
    """The artifacts ``call(cache, requests)`` asks for, up to and including its first miss."""
    requests = RequestCache(cache.root / "requests.sqlite")
    try:
        call(cache, requests)
    except Miss:
        pass
    finally:
        requests.close()
    return [a for a in cache.asked if not a.startswith(("model/", "tokenizer/"))]


# ------------------------------------------------------------ the stage calls (the API may change, keys may not)
def _ctx(cache, requests):
    from qresafe_exp.stages import StageContext

    return StageContext(cache, requests, torch.device("cpu"))


def _quantize(cfg, fp):
    from qresafe_exp.pipeline import quantize

    return lambda cache, requests: quantize(fp, cfg, _ctx(cache, requests))


def _patch(cfg, fp, quantized):
    from qresafe_exp.pipeline import patch

    return lambda cache, requests: patch(fp, quantized, cfg, _ctx(cache, requests))


def _evaluate(cfg, model):
    from qresafe_exp.pipeline import evaluate

    return lambda cache, requests: evaluate(model, cfg, _ctx(cache, requests), label="t", scorer=model)


# ------------------------------------------------------------ pinned keys
@pytest.fixture
def smoke(compose_cfg, tmp_path):
    """(compose(overrides) with debug=smoke, the tiny FP model built in this test's own cache)"""
    cache = PlanOnly(tmp_path / "cache")

    def cfg(*overrides):
        return compose_cfg(["debug=smoke", *overrides, f"paths.cache_dir={tmp_path / 'cache'}"], cache=False)

    fp = materialize(cfg().model, cache, cfg().paths)
    assert fp.key == "b87b679687b2e590"
    return cfg, fp, tmp_path / "cache"


def test_quantize_keys(smoke):
    cfg, fp, root = smoke
    assert _asked(PlanOnly(root), _quantize(cfg("quant=rtn", "bits=4"), fp)) == ["quantize/f690924fbe421016"]
    assert _asked(PlanOnly(root), _quantize(cfg("quant=gptq", "bits=4"), fp)) == ["quantize/f54c38617c60980f"]
    assert _asked(PlanOnly(root), _quantize(cfg("quant=gptq", "bits=4", "seed=1"), fp)) == ["quantize/c1f6e7b7ca1fa22c"]
    # quant.seed pins the quantize stage's seed under a sweep of the cell's seed (one damaged checkpoint
    # patched under several patch seeds); unset, it is the cell's seed, with the keys above
    assert _asked(PlanOnly(root), _quantize(cfg("quant=gptq", "bits=4", "seed=1", "quant.seed=0"), fp)) == [
        "quantize/f54c38617c60980f"
    ]
    assert _asked(PlanOnly(root), _quantize(cfg("quant=gptq", "bits=4", "quant.seed=1"), fp)) == [
        "quantize/c1f6e7b7ca1fa22c"
    ]


def test_smollm2_quantize_key_is_the_testbeds(compose_cfg, tmp_path):
    """The testbed's SmolLM2-safe rtn 4-bit checkpoint (outputs/cache/quantize/e2a59e548e132c68 on the
    lead's machine): the FP model's key (the aligned SmolLM2, its base stood in), the quantize key from it."""
    root = tmp_path / "cache"
    cfg = compose_cfg(["model=smollm2-135m-safe", "quant=rtn", "bits=4", f"paths.cache_dir={root}"], cache=False)
    base_only = PlanOnly(root, build=(), stubs={"model": lambda out: None})
    with pytest.raises(Miss) as miss:
        materialize(cfg.model, base_only, cfg.paths)
    assert base_only.asked == ["model/fbbd30b51785f93a", "align/b7f04e1433c7db9a"]
    fp = ModelRef(cfg.model.name, str(root / "not-built"), miss.value.key)
    assert _asked(PlanOnly(root), _quantize(cfg, fp)) == ["quantize/e2a59e548e132c68"]


def test_patch_keys(smoke):
    cfg, fp, root = smoke
    quantized = ModelRef(f"{fp.name}.rtn-w4g64", str(root / "not-built"), "0123456789abcdef")
    # qresafe: the trained delta, then (the delta stood in) the merged checkpoint
    qresafe = cfg("quant=rtn", "bits=4", "patch=qresafe")
    assert _asked(PlanOnly(root), _patch(qresafe, fp, quantized)) == ["patch_train/daace0cb285ddf13"]
    stubbed = PlanOnly(root, stubs={"patch_train": lambda out: None})
    assert _asked(stubbed, _patch(qresafe, fp, quantized)) == ["patch_train/daace0cb285ddf13", "patch/7fba0d16fefda194"]
    # safepatching: the pair set D_h (generated by the cell's model), both trained patches, the merge
    safe = cfg("quant=rtn", "bits=4", "patch=safepatching")
    assert _asked(PlanOnly(root), _patch(safe, fp, quantized)) == ["calib_responses/2dda037448d5554d"]
    stubbed = PlanOnly(root, stubs={"calib_responses": _stub_pairs, "safepatch_train": lambda out: None})
    assert _asked(stubbed, _patch(safe, fp, quantized)) == [
        "calib_responses/2dda037448d5554d",
        "safepatch_train/5b53dfbea8528826",
        "patch/62b1d32ccd3327a3",
    ]


def test_eval_keys(smoke):
    cfg, fp, root = smoke
    # the judges' identity is in the key (refusal rules v3; v1 gave 20175cd7173d4dd2 / bcd8430ad8083922)
    assert _asked(PlanOnly(root), _evaluate(cfg("eval=reduced"), fp)) == ["eval/6bfb1d5bf9244167"]
    assert _asked(PlanOnly(root), _evaluate(cfg("eval=reduced", "eval.degeneration.max_fp_perplexity=null"), fp)) == [
        "eval/670b4b1b763c0798"
    ]


def test_more_keys(smoke):
    """A quantizer that trains on the risk set (its records' content key joins the spec), the AWQ
    variant of Q-resafe (one artifact, keyed on the FP model), and tau=0 (no artifact at all)."""
    cfg, fp, root = smoke
    assert _asked(PlanOnly(root), _quantize(cfg("quant=qlora", "bits=4"), fp)) == ["quantize/16107ac801db681f"]
    quantized = ModelRef(f"{fp.name}.awq-w4g64", str(root / "not-built"), "0123456789abcdef")
    awq_safety = cfg("quant=awq", "bits=4", "patch=qresafe_awq")
    assert _asked(PlanOnly(root), _patch(awq_safety, fp, quantized)) == ["patch/374a2ab099346f34"]
    # its AWQ run follows quant.seed as the quantize stage does: a quant.seed equal to the cell's seed is
    # the key above; a patch seed over a pinned AWQ run is a key of its own, apart from the unpinned one
    assert _asked(
        PlanOnly(root), _patch(cfg("quant=awq", "bits=4", "patch=qresafe_awq", "quant.seed=0"), fp, quantized)
    ) == ["patch/374a2ab099346f34"]
    seed1 = _asked(PlanOnly(root), _patch(cfg("quant=awq", "bits=4", "patch=qresafe_awq", "seed=1"), fp, quantized))
    pinned = _asked(
        PlanOnly(root), _patch(cfg("quant=awq", "bits=4", "patch=qresafe_awq", "seed=1", "quant.seed=0"), fp, quantized)
    )
    assert len({*seed1, *pinned, "patch/374a2ab099346f34"}) == 3
    assert _asked(PlanOnly(root), _patch(cfg("patch=qresafe", "patch.tau=0"), fp, quantized)) == []
