"""The real pipeline on tiny-random-llama: quantize (llm-compressor), generate, judge, write,
through Hydra's basic and submitit_local launchers, then warm from the cache."""

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli

SWEEP = ["-m", "debug=smoke", "model=tiny-random-llama", "quant=gptq,awq", "bits=4,8"]
CELLS = [
    "tiny-random-llama.fp.none",
    "tiny-random-llama.gptq-w4g64-alpaca.none",
    "tiny-random-llama.gptq-w8g64-alpaca.none",
    "tiny-random-llama.awq-w4g64-alpaca.none",
    "tiny-random-llama.awq-w8g64-alpaca.none",
]


def load_metrics(out: Path, cell: str) -> dict:
    return json.loads((out / "studies" / "smoke" / cell / "metrics.json").read_text())


@pytest.fixture(scope="module")
def cold_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "outputs"
    proc = run_cli(*SWEEP, f"paths.output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_sweep_writes_every_cell_and_the_fp_reference(cold_sweep):
    out, proc = cold_sweep
    for cell in CELLS:
        metrics = load_metrics(out, cell)
        assert metrics["cell"] == cell
        asr = metrics["scores"]["advbench"]["asr"]
        assert asr["n"] == 4 and 0.0 <= asr["rate"] <= 1.0 and asr["ci95"][0] <= asr["rate"] <= asr["ci95"][1]
        assert metrics["scores"]["xstest_safe"]["refusal_rate"]["n"] == 4
        assert "degenerate" in metrics["summary"] and metrics["provenance"]["versions"]["transformers"]
        lines = (out / "studies" / "smoke" / cell / "samples.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        assert len(rows) == 12  # 4 AdvBench + 4 XSTest responses, 4 scored AlpacaEval references
        assert sum("response" in r for r in rows) == 8 and sum("perplexity" in r for r in rows) == 4
    quantized = load_metrics(out, CELLS[1])
    axes = dict(quantized["axes"])
    # the quantizer's numeric settings, so that a rerun with other ones cannot overwrite the cell (cell_identity)
    assert axes.pop("quant_knobs")["quant.group_size"] == 64
    assert "quant_knobs" not in load_metrics(out, CELLS[0])["axes"]  # the FP cell quantizes nothing
    assert axes == {
        "model": "tiny-random-llama",
        "quant": "gptq",
        "bits": 4,
        "group_size": 64,
        "calib": "act:alpaca",
        "patch": "none",
        "patch_tag": "none",
    }
    assert quantized["reference_cell"] == CELLS[0] and "advbench.asr" in quantized["vs_reference"]
    # the end-of-sweep table lists every cell
    for cell in CELLS:
        assert cell in proc.stdout
    assert (out / "studies" / "smoke" / "summary.md").exists()


def test_fp_responses_are_generated_once_per_sweep(cold_sweep):
    out, _ = cold_sweep
    reference_eval = load_metrics(out, CELLS[0])["artifacts"]["eval"]
    for cell in CELLS[1:]:
        assert load_metrics(out, cell)["artifacts"]["reference_eval"] == reference_eval
    evals = [p for p in (out / "cache" / "eval").iterdir() if not p.name.startswith(".")]
    assert len(evals) == 5  # 4 quantized cells + one shared FP evaluation
    quantized = [p for p in (out / "cache" / "quantize").iterdir() if not p.name.startswith(".")]
    assert len(quantized) == 4


def test_warm_rerun_is_served_from_the_cache(cold_sweep):
    out, _ = cold_sweep
    before = {p: p.stat().st_mtime for p in (out / "cache" / "quantize").glob("*/_SUCCESS")}
    reference = out / "studies" / "smoke" / CELLS[0] / "metrics.json"
    reference_mtime = reference.stat().st_mtime
    proc = run_cli(*SWEEP, f"paths.output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[cache miss]" not in proc.stderr
    assert reference.stat().st_mtime == reference_mtime  # FP reference cell left as it was
    for cell in CELLS[1:]:
        metrics = load_metrics(out, cell)
        assert metrics["cost"]["generated_now"] == 0 and metrics["cost"]["eval_cached"]
    assert {p: p.stat().st_mtime for p in (out / "cache" / "quantize").glob("*/_SUCCESS")} == before


def test_quantized_checkpoint_reloads_packed_in_transformers_and_generates(cold_sweep):
    import torch

    from qresafe_exp.formats import format_of
    from qresafe_exp.models import load_model, load_tokenizer

    out, _ = cold_sweep
    art = out / "cache" / "quantize" / load_metrics(out, CELLS[1])["artifacts"]["quantize"]
    assert format_of(str(art)).name == "compressed-tensors"
    config = json.loads((art / "config.json").read_text())["quantization_config"]
    assert config["config_groups"]["group_0"]["weights"]["num_bits"] == 4
    model = load_model(str(art), torch.device("cpu"), dequantize=False)
    assert any(name.endswith("weight_packed") for name, _ in model.named_parameters())
    tok = load_tokenizer(str(art))
    enc = tok(["Hello"], return_tensors="pt")
    generated = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert generated.shape[1] > enc["input_ids"].shape[1]
