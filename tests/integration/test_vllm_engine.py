"""engine=vllm on a GPU with vLLM installed: the quantizers' checkpoints load through vLLM's offline API
and its greedy outputs are compared with the transformers engine. Skipped (never passed) elsewhere:
this machine has neither, so these tests have not been run here."""

import json

import pytest
import torch

pytest.importorskip(
    "vllm",
    reason="vLLM is not installed (GPU-only, its own environment: `make setup-vllm`); "
    "engine=vllm is not exercised here",
)
if not torch.cuda.is_available():
    pytest.skip("engine=vllm needs a CUDA device", allow_module_level=True)

from tests.conftest import run_cli  # noqa: E402


@pytest.mark.parametrize("quant", ["none", "rtn", "gptq"])
def test_vllm_serves_the_checkpoint_and_agrees_with_transformers(tmp_path, quant):
    out = tmp_path / "outputs"
    common = [
        "debug=smoke",
        "model=tiny-random-llama",
        f"quant={quant}",
        "bits=8",
        "device=cuda",
        "eval.limit=8",
        f"paths.output_dir={out}",
    ]
    runs = {}
    for engine in ("hf", "vllm"):
        proc = run_cli(*common, f"engine={engine}", f"study={engine}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        pattern = "tiny-random-llama.fp.none" if quant == "none" else f"tiny-random-llama.{quant}-*"
        cell = next((out / "studies" / engine).glob(f"{pattern}/metrics.json"))
        samples = cell.parent / "samples.jsonl"
        runs[engine] = {
            (r["suite"], r["id"]): r["response"]
            for r in map(json.loads, samples.read_text().splitlines())
            if "response" in r
        }
        assert json.loads(cell.read_text())["scores"]["advbench"]["asr"]["n"] == 8
    assert runs["hf"].keys() == runs["vllm"].keys()
    agree = sum(runs["hf"][k] == runs["vllm"][k] for k in runs["hf"]) / len(runs["hf"])
    print(f"greedy agreement hf vs vllm ({quant}): {agree:.2f} of {len(runs['hf'])}")
    assert agree >= 0.5  # bf16 kernels differ; a wrong load (e.g. unquantized weights) agrees far less
