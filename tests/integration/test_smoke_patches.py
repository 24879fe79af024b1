"""`debug=smoke` runs every patch method end to end from the command line, on tiny-talkative (a tiny
random Llama whose answers differ between FP and 2 bits, so the trained patches have pairs to learn
from). patch=qresafe (the case of issue 18) is in the default run; every other conf/patch/ option runs
with the slow tests (about half a minute each here, the model and FP evaluation shared)."""

import json

import pytest

from tests.conftest import CONF, run_cli

TRAINED = {"qresafe", "qresafe_qa", "qresafe_testbed", "qresafe_random_mask", "qresafe_magnitude_mask", "dpo", "sft"}
PATCHES = sorted(p.stem for p in (CONF / "patch").glob("*.yaml"))


def _quant(patch: str) -> str:
    return "awq" if patch.startswith("qresafe_awq") else "rtn"  # the AWQ variant patches AWQ only


@pytest.mark.parametrize("patch", [p if p == "qresafe" else pytest.param(p, marks=pytest.mark.slow) for p in PATCHES])
def test_debug_smoke_runs_every_patch_method_from_the_command_line(patch, tmp_path, shared_cache):
    out = tmp_path / "outputs"
    proc = run_cli(
        "debug=smoke",
        f"quant={_quant(patch)}",
        "bits=2",
        f"patch={patch}",
        f"paths.output_dir={out}",
        f"paths.cache_dir={shared_cache}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [path] = [p for p in out.glob("studies/smoke/*/metrics.json") if ".fp." not in p.parent.name]
    metrics = json.loads(path.read_text())
    assert metrics["axes"]["model"] == "tiny-talkative" and metrics.get("status", "ok") == "ok"
    assert metrics["scores"]["advbench"]["asr"]["n"] == 4
    if patch in TRAINED:  # FP and 2-bit answers differ: a preference (or SFT target) to learn
        assert metrics["patch"]["trained"] is True and metrics["patch"]["pairs"]["pairs"] > 0
