"""Combinations a quantizer cannot run fail before any model loads, naming the combination and the fix."""

import pytest
import torch

from qresafe_exp.pipeline import ConfigError, validate
from tests.conftest import run_cli


def _error(compose_cfg, overrides) -> str:
    cfg = compose_cfg(overrides)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    return str(err.value)


@pytest.mark.parametrize(
    "quant,backend,successor", [("gptq", "auto_gptq", "gptqmodel"), ("awq", "autoawq", "gptqmodel")]
)
def test_retired_backends_explain_why_and_name_the_maintained_ones(compose_cfg, quant, backend, successor):
    message = _error(compose_cfg, [f"quant={quant}", f"quant.backend={backend}"])
    assert f"quant.backend={backend}" in message and "archived" in message
    assert "quant.backend=llmcompressor" in message and f"quant.backend={successor}" in message


def test_gptqmodel_backend_without_the_extra_names_the_install_command(compose_cfg):
    pytest.importorskip("torch")
    try:
        import gptqmodel  # noqa: F401

        pytest.skip("gptqmodel is installed here")
    except ImportError:
        pass
    message = _error(compose_cfg, ["quant=gptq", "quant.backend=gptqmodel"])
    assert "gptqmodel" in message and "pip install" in message


def test_unknown_backend_lists_the_allowed_ones(compose_cfg):
    message = _error(compose_cfg, ["quant=rtn", "quant.backend=exllama"])
    assert "no backend 'exllama'" in message and "llmcompressor" in message


@pytest.mark.parametrize("quant", ["bnb", "qlora"])
def test_bnb_format_must_match_bits(compose_cfg, quant):
    message = _error(compose_cfg, [f"quant={quant}", "bits=8", "quant.format=nf4"])
    assert f"quant={quant} quant.format=nf4 is a 4-bit format, not bits=8" in message
    message = _error(compose_cfg, [f"quant={quant}", "bits=4", "quant.format=int8"])
    assert "int8 is a 8-bit format, not bits=4" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
def test_aqlm_without_a_gpu_is_refused_before_any_work(compose_cfg):
    message = _error(compose_cfg, ["quant=aqlm", "bits=2"])
    assert "quant=aqlm bits=2 needs a CUDA GPU" in message


def test_llm_qat_activation_bits_out_of_range(compose_cfg):
    message = _error(compose_cfg, ["quant=llm_qat", "quant.act_bits=1"])
    assert "quant.act_bits=1" in message and "null" in message


def test_calibration_set_smaller_than_asked(compose_cfg):
    message = _error(compose_cfg, ["quant=qlora", "calib=risk2_aoa", "calib.num_samples=11"])
    assert "num_samples=11" in message and "10 records" in message


def test_calibration_file_that_does_not_exist(compose_cfg, tmp_path):
    missing = tmp_path / "pairs.jsonl"
    message = _error(
        compose_cfg, ["quant=llm_qat", "calib=risk3_harmful", f"calib.dataset={missing}", "calib.responses=dataset"]
    )
    assert f"dataset file '{missing}' does not exist" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
def test_cli_aqlm_sweep_cell_fails_before_any_model_loads(tmp_path):
    out = tmp_path / "outputs"
    proc = run_cli(
        "-m", "debug=smoke", "model=tiny-random-llama", "quant=rtn,aqlm", "bits=2", f"paths.output_dir={out}"
    )
    assert proc.returncode != 0 and "needs a CUDA GPU" in proc.stderr
    assert not list(out.glob("studies/*/*/metrics.json")) and not (out / "cache" / "model").exists()


def test_gguf_bits_without_a_type_name_the_choices(compose_cfg):
    pytest.importorskip("llama_cpp")
    message = _error(compose_cfg, ["quant=gguf", "bits=7"])
    assert "quant=gguf cannot do bits=7" in message and "Allowed bits for gguf: 8, 6, 5, 4, 3, 2" in message
    assert "4=Q4_K_M" in message and "quant.type=<Q8_0|Q6_K|Q5_K_M|Q4_K_M|IQ4_XS|Q3_K_M|Q2_K>" in message


def test_gguf_type_outside_the_offered_ones(compose_cfg):
    pytest.importorskip("llama_cpp")
    message = _error(compose_cfg, ["quant=gguf", "quant.type=Q4_0"])
    assert "quant.type=Q4_0 is not a GGUF type offered here. Allowed: Q8_0, Q6_K, Q5_K_M, Q4_K_M, IQ4_XS" in message


def test_gguf_type_names_the_cell_and_its_bits(compose_cfg):
    cfg = compose_cfg(["quant=gguf", "quant.type=IQ4_XS", "quant.imatrix=true"])
    assert cfg.quant.bits == 4 and cfg.cell == "smollm2-135m.gguf-IQ4_XS-imat-alpaca.none"
    assert compose_cfg(["quant=gguf", "bits=3"]).quant.tag == "gguf-Q3_K_M"
    from qresafe_exp.quant.gguf import GgufQuantizer

    # the same file, however it is asked for and with however many threads: one cache key
    by_bits = compose_cfg(["quant=gguf", "bits=4", "quant.threads=1"])
    by_name = compose_cfg(["quant=gguf", "quant.type=Q4_K_M"])
    assert GgufQuantizer.spec(by_bits.quant, by_bits.calib) == GgufQuantizer.spec(by_name.quant, by_name.calib)
    assert "calib" not in GgufQuantizer.spec(by_name.quant, by_name.calib)  # data-free without the imatrix
    assert GgufQuantizer.spec(cfg.quant, cfg.calib)["calib"]["name"] == "alpaca"


@pytest.mark.parametrize("patch", ["qresafe", "safepatching"])
def test_a_patch_on_a_gguf_cell_is_refused(compose_cfg, patch):
    pytest.importorskip("llama_cpp")
    message = _error(compose_cfg, ["quant=gguf", "bits=4", f"patch={patch}"])
    assert f"patch={patch} on quant=gguf" in message and "patch=none" in message


def test_llamacpp_engine_settings_fail_before_any_model_loads(compose_cfg):
    pytest.importorskip("llama_cpp")
    assert "engine.gguf_dtype=bf16" in _error(compose_cfg, ["engine=llamacpp", "engine.gguf_dtype=bf16"])
    assert "engine.parallel=0" in _error(compose_cfg, ["engine=llamacpp", "engine.parallel=0"])


def test_testbed_gguf_study_composes_and_validates(compose_cfg):
    pytest.importorskip("llama_cpp")
    for type_name in ("Q8_0", "IQ4_XS", "Q2_K"):
        cfg = compose_cfg(["experiment=testbed_gguf", f"quant.type={type_name}"])
        validate(cfg)
        assert cfg.engine.name == "llamacpp" and cfg.cell == f"smollm2-135m-safe.gguf-{type_name}.none"
