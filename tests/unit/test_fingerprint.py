"""Checkpoint fingerprints (fingerprint.py), the determinism facts (provenance.py) and seed-sweep cell names."""

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from qresafe_exp import fingerprint as fpmod
from qresafe_exp.cache import ArtifactCache, verify_artifact
from qresafe_exp.fingerprint import cache_file_for, cached_fingerprint, checkpoint_fingerprint


def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "model.embed.weight": torch.randn(16, 8, generator=g),
        "model.layers.0.q.weight": torch.randn(8, 8, generator=g).to(torch.bfloat16),
        "model.layers.0.q.weight_scale": torch.rand(8, 2, generator=g).to(torch.float16),
        "model.layers.0.q.weight_packed": torch.randint(-(2**31), 2**31 - 1, (8, 1), generator=g, dtype=torch.int32),
        "lm_head.weight": torch.randn(16, 8, generator=g),
    }


def save_single(out, state):
    out.mkdir(parents=True)
    save_file(state, str(out / "model.safetensors"))
    return out


def save_sharded(out, state, names_per_shard):
    """Shards with the tensors dealt out as given (and written in reverse name order), plus the index."""
    out.mkdir(parents=True)
    weight_map = {}
    for i, names in enumerate(names_per_shard, 1):
        shard = f"model-{i:05d}-of-{len(names_per_shard):05d}.safetensors"
        save_file({n: state[n] for n in reversed(names)}, str(out / shard))
        weight_map.update({n: shard for n in names})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return out


def test_fingerprint_ignores_shard_layout_file_order_and_json_key_order(tmp_path):
    state = tensors()
    names = sorted(state)
    one = save_single(tmp_path / "one", state)
    two = save_sharded(tmp_path / "two", state, [names[:2], names[2:]])
    three = save_sharded(tmp_path / "three", state, [names[3:], names[1:3], names[:1]])
    for d, order in ((one, ("a", "b")), (two, ("b", "a")), (three, ("a", "b"))):
        (d / "fake_quant.json").write_text(json.dumps({k: {"a": 1, "b": [2]}[k] for k in order}))
        (d / "tokenizer.json").write_text(str(d))  # not part of the weights
    fps = [checkpoint_fingerprint(d) for d in (one, two, three)]
    assert fps[0] == fps[1] == fps[2]
    assert fps[0]["algorithm"] == fpmod.ALGORITHM and len(fps[0]["sha256"]) == 64
    assert fps[0]["tensors"] == len(state)
    assert fps[0]["tensor_bytes"] == sum(t.numel() * t.element_size() for t in state.values())
    assert set(fps[0]["parts"]) == {"model", "fake_quant.json"}


def test_one_bit_dtype_shape_or_sidecar_changes_the_fingerprint(tmp_path):
    state = tensors()
    base = checkpoint_fingerprint(save_single(tmp_path / "base", state))

    flipped = dict(state)
    raw = flipped["model.layers.0.q.weight"].clone().view(torch.int16)
    raw.view(-1)[5] ^= 1  # one bit of one bf16 value
    flipped["model.layers.0.q.weight"] = raw.view(torch.bfloat16)
    assert checkpoint_fingerprint(save_single(tmp_path / "bit", flipped))["sha256"] != base["sha256"]

    reshaped = dict(state, **{"lm_head.weight": state["lm_head.weight"].reshape(8, 16)})  # same bytes
    assert checkpoint_fingerprint(save_single(tmp_path / "shape", reshaped))["sha256"] != base["sha256"]
    retyped = dict(state, **{"model.embed.weight": state["model.embed.weight"].view(torch.int32)})  # same bytes
    assert checkpoint_fingerprint(save_single(tmp_path / "dtype", retyped))["sha256"] != base["sha256"]

    # a tensor moved from the weights into a sidecar is another checkpoint, and a sidecar counts
    moved = {k: v for k, v in state.items() if k != "lm_head.weight"}
    side = save_single(tmp_path / "side", moved)
    save_file({"lm_head.weight": state["lm_head.weight"]}, str(side / "patch_delta.safetensors"))
    with_sidecar = checkpoint_fingerprint(side)
    assert with_sidecar["sha256"] != base["sha256"] and set(with_sidecar["parts"]) == {
        "model",
        "patch_delta.safetensors",
    }
    assert with_sidecar["tensors"] == base["tensors"]


def test_gguf_is_fingerprinted_by_its_bytes(tmp_path):
    header = b"GGUF" + struct.pack("<IQQ", 3, 7, 2)
    (tmp_path / "a.gguf").write_bytes(header + b"\x00" * 64)
    (tmp_path / "b.gguf").write_bytes(header + b"\x00" * 63 + b"\x01")
    a, b = checkpoint_fingerprint(tmp_path / "a.gguf"), checkpoint_fingerprint(tmp_path / "b.gguf")
    assert a["tensors"] == 7 and a["tensor_bytes"] == len(header) + 64
    assert a["sha256"] != b["sha256"]


def test_no_weights_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="holds no weight files"):
        checkpoint_fingerprint(tmp_path)


def test_cached_beside_the_artifact_reused_and_redone_when_files_change(tmp_path, monkeypatch):
    cache = ArtifactCache(tmp_path / "cache")
    art = cache.get_or_build("quantize", {"bits": 4}, lambda out: save_file(tensors(), str(out / "model.safetensors")))
    first = cached_fingerprint(art.path)
    stored = cache_file_for(art.path)
    assert stored == art.path.parent / f".{art.key}.fingerprint.json" and stored.exists()
    assert verify_artifact(art.path, "hash") == []  # the artifact itself is untouched

    calls = []
    real = fpmod.checkpoint_fingerprint
    monkeypatch.setattr(fpmod, "checkpoint_fingerprint", lambda p: calls.append(p) or real(p))
    assert cached_fingerprint(art.path) == first and calls == []  # a warm rerun reads it
    save_file(dict(tensors(), extra=torch.zeros(2)), str(art.path / "model.safetensors"))
    changed = cached_fingerprint(art.path)
    assert len(calls) == 1 and changed["sha256"] != first["sha256"] and changed["tensors"] == first["tensors"] + 1


def test_seed_everything_records_what_was_set():
    from qresafe_exp.provenance import provenance, seed_everything

    before = torch.are_deterministic_algorithms_enabled()
    try:
        facts = seed_everything(3, deterministic=True, device=torch.device("cpu"))
        a = torch.rand(3)
        seed_everything(3, deterministic=None)
        assert torch.equal(a, torch.rand(3))
        det = provenance(".")["determinism"]
        assert det == facts
        assert det["deterministic"] is True and det["deterministic_algorithms"] is True and det["warn_only"] is True
        assert det["device"] == "cpu" and det["torch"] == torch.__version__ and det["threads"] >= 1
        assert det["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    finally:
        torch.use_deterministic_algorithms(before)


def test_seed_sweep_cells_get_their_own_names(compose_cfg):
    smoke = ["debug=smoke", "model=tiny-random-llama", "quant=rtn"]
    assert compose_cfg(smoke).cell == "tiny-random-llama.rtn-w4g64.none"
    assert compose_cfg([*smoke, "seed=2"]).cell == "tiny-random-llama.rtn-w4g64.none.seed2"


def test_rtn_quantized_twice_gives_the_same_fingerprint_and_metrics_carry_it(compose_cfg, tmp_path):
    from qresafe_exp.models import materialize
    from qresafe_exp.pipeline import cell_dir, reference_cell_name, run_cell
    from qresafe_exp.quant import QUANTIZERS

    cfg = compose_cfg(["debug=smoke", "model=tiny-random-llama", "quant=rtn", "bits=4", "eval.limit=1"])
    fp = materialize(cfg.model, ArtifactCache(cfg.paths.cache_dir), cfg.paths)
    out = tmp_path / "q"  # one real build outside the cache, one by the cell in a fresh cache (FP model rebuilt too)
    out.mkdir()
    QUANTIZERS.get("rtn")().quantize(fp.path, out, cfg.quant, None, None, cfg.seed)
    direct = checkpoint_fingerprint(out)
    assert direct["tensors"] > 0

    cfg = compose_cfg(["debug=smoke", "model=tiny-random-llama", "quant=rtn", "bits=4", "eval.limit=1"], cache=False)
    metrics = run_cell(cfg)
    assert not metrics["quantization"]["cached"] and metrics["quantization"]["fingerprint"] == direct
    assert metrics["fp_model"]["fingerprint"] == checkpoint_fingerprint(fp.path) != direct
    reference = json.loads((cell_dir(cfg, reference_cell_name(cfg)) / "metrics.json").read_text())
    assert reference["fp_model"] == metrics["fp_model"]  # the FP reference cell carries the same weights' hash
    det = metrics["provenance"]["determinism"]
    assert det["seed"] == cfg.seed and det["deterministic_algorithms"] is True and det["device"] == "cpu"
