"""The checkpoint-format layer: one format per directory, the layering it stands for, and the fp /
fake-quant merge on real files."""

import ast
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import qresafe_exp
from qresafe_exp.formats import FORMATS, format_of, sidecars_in
from qresafe_exp.formats.fake_quant import SIDECAR, FakeQuant, fake_quantize
from qresafe_exp.formats.sidecars import ADAPTER_DIR, PATCH_DELTA

PACKAGE = Path(qresafe_exp.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included), as absolute names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; the project imports absolutely"
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # from qresafe_exp import patch
    return found


def _upward(path: Path, layers: tuple[str, ...]) -> list[str]:
    return sorted(
        m for m in _imported_modules(path) if any(m == layer or m.startswith(layer + ".") for layer in layers)
    )


def test_models_imports_nothing_from_patch_or_quant():
    assert _upward(PACKAGE / "models.py", ("qresafe_exp.patch", "qresafe_exp.quant")) == []


def test_the_format_layer_sits_below_models_quantizers_patches_and_engines():
    above = (
        "qresafe_exp.models",
        "qresafe_exp.patch",
        "qresafe_exp.quant",
        "qresafe_exp.engines",
        "qresafe_exp.pipeline",
    )
    for module in sorted((PACKAGE / "formats").glob("*.py")):
        assert _upward(module, above) == [], module.name


def _checkpoint(root: Path, quantization_config=None, files=()) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "llama"}
    if quantization_config is not None:
        config["quantization_config"] = quantization_config
    (root / "config.json").write_text(json.dumps(config))
    for name in files:
        (root / name).write_text("{}")
    return root


@pytest.mark.parametrize(
    "quantization_config, files, expected",
    [
        ({"quant_method": "compressed-tensors", "format": "pack-quantized"}, (), "compressed-tensors"),
        ({"quant_method": "bitsandbytes", "load_in_4bit": True}, (), "bitsandbytes"),
        ({"quant_method": "gptq", "bits": 4}, (), "transformers-native"),
        ({"quant_method": "aqlm"}, (), "transformers-native"),
        (None, (SIDECAR,), "fake-quant"),
        (None, (), "plain"),
    ],
)
def test_each_checkpoint_directory_has_exactly_one_format(tmp_path, quantization_config, files, expected):
    fmt = format_of(str(_checkpoint(tmp_path / "ckpt", quantization_config, files)))
    assert fmt.name == expected and type(fmt) is FORMATS.get(expected)
    assert fmt.quant_method == (quantization_config or {}).get("quant_method")


def test_a_directory_without_config_json_or_a_hub_id_is_plain(tmp_path):
    assert format_of(str(tmp_path)).name == "plain"
    assert format_of("HuggingFaceTB/SmolLM2-135M-Instruct").name == "plain"  # transformers resolves it


def test_two_formats_claiming_one_directory_is_an_error(tmp_path, monkeypatch):
    path = _checkpoint(tmp_path / "ckpt", {"quant_method": "compressed-tensors"})
    monkeypatch.setattr(FakeQuant, "detect", classmethod(lambda cls, path, method: True))
    with pytest.raises(ValueError, match=r"claimed by formats .*compressed-tensors.*fake-quant"):
        format_of(str(path))


def test_a_format_transformers_loads_itself_refuses_patching_by_name(tmp_path):
    fmt = format_of(str(_checkpoint(tmp_path / "ckpt", {"quant_method": "gptq"})))
    with pytest.raises(ValueError, match="no re-quantizer for a 'gptq' checkpoint"):
        fmt.requantizers(["q_proj"])
    with pytest.raises(ValueError, match="cannot re-quantize a 'gptq' checkpoint"):
        fmt.write_merged({}, tmp_path / "out", torch.device("cpu"))


def test_sidecars_generic_and_the_formats_own_are_listed(tmp_path):
    assert sidecars_in(str(tmp_path)) == {}
    (tmp_path / PATCH_DELTA).write_bytes(b"")
    (tmp_path / ADAPTER_DIR).mkdir()
    (tmp_path / SIDECAR).write_text("{}")
    assert set(sidecars_in(str(tmp_path))) == {PATCH_DELTA, ADAPTER_DIR, SIDECAR}


def _fp_checkpoint(root: Path, weights: dict, sidecar: dict | None = None) -> Path:
    _checkpoint(root)
    save_file(weights, str(root / "model.safetensors"))
    if sidecar is not None:
        (root / SIDECAR).write_text(json.dumps(sidecar))
    return root


def test_plain_merge_writes_w_plus_delta_and_links_the_rest(tmp_path):
    torch.manual_seed(0)
    weights = {"a.weight": torch.randn(4, 8), "b.weight": torch.randn(4, 8)}
    src = _fp_checkpoint(tmp_path / "src", weights)
    delta = {"a": torch.randn(4, 8) * 0.1}
    facts = format_of(str(src)).write_merged(delta, tmp_path / "out", torch.device("cpu"))
    merged = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert torch.allclose(merged["a.weight"], weights["a.weight"] + delta["a"])
    assert torch.equal(merged["b.weight"], weights["b.weight"])
    assert facts["format"] == "fp (no quantization)" and facts["realized_fraction"] == pytest.approx(1.0, abs=1e-4)
    assert (tmp_path / "out" / "config.json").samefile(src / "config.json")  # linked, not copied


def test_fake_quant_merge_puts_patched_weights_back_on_the_grid_its_requantizer_trains_through(tmp_path):
    torch.manual_seed(0)
    grid = {"q.weight": fake_quantize(torch.randn(4, 16), 4, 8), "lm_head.weight": torch.randn(4, 16)}
    spec = {"weight_bits": 4, "group_size": 8, "act_bits": 8, "kv_bits": 4, "modules": ["q"]}
    src = _fp_checkpoint(tmp_path / "src", grid, spec)
    fmt = format_of(str(src))
    delta = {"q": torch.randn(4, 16) * 0.3, "lm_head": torch.randn(4, 16) * 0.3}
    facts = fmt.write_merged(delta, tmp_path / "out", torch.device("cpu"))
    merged = load_file(str(tmp_path / "out" / "model.safetensors"))
    requantize = fmt.requantizers(["q", "lm_head"])
    assert requantize["lm_head"] is None  # not a quantized module: W + delta as it is
    assert torch.equal(merged["q.weight"], requantize["q"](grid["q.weight"] + delta["q"]))
    assert torch.allclose(merged["lm_head.weight"], grid["lm_head.weight"] + delta["lm_head"])
    assert all(row.unique().numel() <= 16 for row in merged["q.weight"].reshape(-1, 8))  # 4-bit per group
    assert facts["format"] == "fake-quant grid W4 (LLM-QAT MinMax rule)"
    assert format_of(str(tmp_path / "out")).name == "fake-quant"  # the sidecar travels with the merge
