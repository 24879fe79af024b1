"""patch=safepatching through the pipeline on the tiny model: the safety patch raises the harmful
responses' NLL (unlearning), the over-safety patch lowers it, and the merge changes only the
selected entries; on an FP cell and on a quantized one."""

import json
from pathlib import Path

from safetensors.torch import load_file

from qresafe_exp.patch.controllable import combine
from tests import wandb_files
from tests.conftest import run_cli

PAIRS = (
    "model@patch.data.responder=tiny-random-llama",
    "patch.data.keep=all",
    "patch.data.num_samples=8",
    "patch.data.response_max_new_tokens=16",
    "patch.se.lr=1e-3",
    "patch.osm.lr=1e-3",
    "patch.se.epochs=2",
    "patch.osm.epochs=2",
    "patch.batch_size=4",
)


def _run(tmp_path, *extra):
    out = tmp_path / "out"
    result = run_cli(
        "debug=smoke",
        "model=tiny-random-llama",
        "patch=safepatching",
        *PAIRS,
        "study=sp",
        f"paths.output_dir={out}",
        *extra,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [
        json.loads(p.read_text()) for p in out.glob("studies/sp/*/metrics.json") if ".safepatching" in p.parent.name
    ][0], out


def _safetensors(directory: Path) -> dict:
    tensors = {}
    for f in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    return tensors


def test_fp_backbone_patches_move_the_loss_and_the_merge_stays_in_the_selected_set(tmp_path):
    metrics, out = _run(
        tmp_path, "patch.keep_p=1.0", "patch.cp_mode=diffset_only", "patch.a=0.2", "patch.b=0.2", "logger=wandb"
    )
    info = metrics["patch"]
    assert info["pairs"] == 8
    nll0 = info["nll_backbone"]
    assert info["se"]["nll_after"] > nll0 > info["osm"]["nll_after"]  # ascent unlearns, descent learns
    # both trainings' steps: in train_info.json (replayed when cached) and streamed to the cell's W&B run
    run_dir = Path(metrics["tracking"]["wandb_run_dir"])
    for role in ("se", "osm"):
        history = info[role]["history"]
        assert [row["step"] for row in history] == list(range(info[role]["steps"]))
        assert wandb_files.series(run_dir, f"patch/{role}/history") == history
    train_dir = next((out / "cache" / "safepatch_train").glob("*/p_se.safetensors")).parent
    deltas = [load_file(str(train_dir / f"{n}.safetensors")) for n in ("p_se", "p_osm", "s_se", "s_osm")]
    expected, counts = combine(
        *[{k: v.float() for k, v in d.items()} for d in deltas],
        a=0.2,
        b=0.2,
        keep_p=1.0,
        alpha=1.0,
        beta=0.5,
        mode="diffset_only",
    )
    assert counts["kept_se"] == info["selection"]["kept_se"] > 0
    merged_dir = next((out / "cache" / "patch").glob("*/merged"))
    base_dir = next(p for p in (out / "cache" / "model").glob("*") if (p / "config.json").exists())
    merged, base = _safetensors(merged_dir), _safetensors(base_dir)
    changed_total = 0
    for name, delta in expected.items():
        key = f"{name}.weight"
        changed = merged[key] != base[key]
        assert not (changed & (delta == 0)).any(), name  # nothing outside the selected set moved
        changed_total += int(changed.sum())
    assert changed_total > 0


def test_quantized_backbone_is_patched_and_requantized(tmp_path):
    metrics, _ = _run(tmp_path, "quant=rtn", "bits=4")
    info = metrics["patch"]
    assert info["merge"] and info["selection"]["kept_se"] > 0 and info["cost"]["wall_seconds"] > 0
    assert metrics["axes"]["quant"] == "rtn" and metrics["scores"]["advbench"]["asr"]["n"] == 4
