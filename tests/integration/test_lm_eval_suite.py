"""Suite lm_eval: a real lm-evaluation-harness run on tiny-random-llama with the local tasks (their data
files written from the offline dataset copies), through the pipeline; unknown task names stop at preflight."""

import json
from pathlib import Path

import pytest
import torch

from qresafe_exp.cache import ArtifactCache, RequestCache
from qresafe_exp.formats.rewrite import link_checkpoint
from qresafe_exp.formats.sidecars import ADAPTER_DIR, save_patch_delta
from qresafe_exp.models import ModelRef, load_model, materialize
from qresafe_exp.pipeline import evaluate, run_cell
from qresafe_exp.preflight import ConfigError, preflight
from qresafe_exp.stages import StageContext
from tests.wandb_files import records as wait_for_exit_record

LM_EVAL = ["debug=smoke", "model=tiny-random-llama", "eval=lm_eval", "eval.lm_eval.limit=6"]
SB, PPL = "qresafe_safetybench_zh", "qresafe_alpaca_eval_ppl"


def test_harness_metrics_and_stderr_reach_metrics_json_the_table_and_wandb(compose_cfg, capsys):
    cfg = compose_cfg([*LM_EVAL, "logger=wandb"])  # the FP cell: one harness run (deltas: tests/unit)
    metrics = run_cell(cfg)
    block = metrics["scores"]["lm_eval"]
    acc = block["tasks"][SB]["acc"]
    assert acc["n"] == 6 and 0.0 <= acc["value"] <= 1.0 and acc["stderr"] > 0  # the harness's mean stderr
    assert acc["ci95"] == [
        pytest.approx(acc["value"] - 1.96 * acc["stderr"], abs=1e-5),
        pytest.approx(acc["value"] + 1.96 * acc["stderr"], abs=1e-5),
    ]
    # corpus-weighted perplexities: the harness gives no stderr, recorded as null (never a made-up number)
    assert block["order"] == [SB, PPL]  # as configured; the headline is each task's first metric
    assert block["metric_order"][PPL] == ["word_perplexity", "byte_perplexity", "bits_per_byte"]
    assert (
        block["tasks"][PPL]["byte_perplexity"]["value"] > 1 and block["tasks"][PPL]["byte_perplexity"]["stderr"] is None
    )
    assert block["harness"]["lm_eval"] == "0.4.13" and block["harness"]["n_samples"][SB]["original"] == 2095
    samples = Path(cfg.paths.output_dir) / "studies" / cfg.study / cfg.cell / "samples.jsonl"
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert (
        len(rows) == 12 and {r["task"] for r in rows} == {SB, PPL} and all("acc" in r for r in rows if r["task"] == SB)
    )
    printed = capsys.readouterr().out
    assert f"| {SB} acc " in printed and f"{PPL} word_perplexity" in printed and f"±{acc['stderr']:.2f} n=6" in printed
    run_dir = Path(metrics["tracking"]["wandb_run_dir"])
    wait_for_exit_record(run_dir)  # wandb's service may still be writing after finish() (seen under load)
    records = b"".join(p.read_bytes() for p in run_dir.glob("*.wandb"))
    assert f"scores/lm_eval/tasks/{SB}/acc/stderr".encode() in records


def test_the_harness_scores_the_model_as_the_project_loads_it(compose_cfg, tmp_path):
    """An unmerged patch (patch_delta.safetensors beside the base weights: a forward hook) and a LoRA
    adapter (qlora_adapter/: a PeftModel around the base) exist only in the model models.load_model
    builds; the harness must score that model, so its numbers move with each."""
    from peft import LoraConfig, get_peft_model

    cfg = compose_cfg([*LM_EVAL, "eval.lm_eval.limit=3", f"eval.lm_eval.tasks=[{PPL}]"])
    artifacts = ArtifactCache(cfg.paths.cache_dir)
    base = materialize(cfg.model, artifacts, cfg.paths)
    patched, adapted = tmp_path / "patched", tmp_path / "adapted"
    link_checkpoint(Path(base.path), patched)
    # on the output head: a random-weight model's next-token distribution is near uniform, the delta skews it
    delta = torch.randn((cfg_vocab(base.path), 64), generator=torch.Generator().manual_seed(0))
    save_patch_delta({"lm_head": delta}, patched)
    link_checkpoint(Path(base.path), adapted)
    torch.manual_seed(0)
    lora = get_peft_model(
        load_model(base.path, torch.device("cpu")),
        LoraConfig(r=8, lora_alpha=512, target_modules=["down_proj"], init_lora_weights=False),
    )
    lora.save_pretrained(adapted / ADAPTER_DIR)
    requests = RequestCache(tmp_path / "requests.sqlite")
    try:
        scores = {
            ref.name: evaluate(ref, cfg, StageContext(artifacts, requests, torch.device("cpu")), label=ref.name).scores
            for ref in (
                base,
                ModelRef("patched", str(patched), f"{base.key}-patched"),
                ModelRef("adapted", str(adapted), f"{base.key}-adapted"),
            )
        }
    finally:
        requests.close()
    bpb = {name: s["lm_eval"]["tasks"][PPL]["bits_per_byte"]["value"] for name, s in scores.items()}
    assert bpb["patched"] > bpb[base.name] + 1.0, bpb
    # the adapter acts inside the layers, whose changes the random model's final norm and tiny embeddings
    # flatten: a small move (4e-3 measured), but CPU scoring is deterministic, so no move means no adapter
    assert abs(bpb["adapted"] - bpb[base.name]) > 1e-3, bpb


def cfg_vocab(path: str) -> int:
    return json.loads((Path(path) / "config.json").read_text())["vocab_size"]


@pytest.mark.parametrize(
    "task, says",
    [
        ("arc_easyy", "'arc_easyy' is not an lm-evaluation-harness task, group or tag (did you mean arc_easy"),
        ("arc_easy", "'arc_easy' needs its data from the Hugging Face Hub, which HF_HUB_OFFLINE=1 forbids"),
    ],
)
def test_a_task_that_cannot_run_stops_at_preflight_in_one_line(tmp_path, task, says):
    with pytest.raises(ConfigError) as err:
        preflight(
            [
                *LM_EVAL,
                f"eval.lm_eval.tasks=[{task}]",
                f"paths.output_dir={tmp_path}",
                f"paths.cache_dir={tmp_path / 'cache'}",
            ]
        )
    line = str(err.value)
    assert "\n" not in line and line.count("eval.lm_eval.tasks") == 1 and says in line
    assert not (tmp_path / "cache" / "model").exists()  # no model was built or loaded
