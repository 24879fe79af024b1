"""train_patch records one history row per optimizer step (loss, lr, DPO margin / reward accuracy /
chosen NLL, mask re-selections), and a W&B cell run receives it as step-indexed rows."""

import json
import random
import struct
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import LlamaConfig, LlamaForCausalLM

from qresafe_exp.finetune import collate, response_loss
from qresafe_exp.lm import named_linears
from qresafe_exp.patch.masked_lora import attach_masked_lora
from qresafe_exp.patch.trainer import MaskSelector, train_patch
from qresafe_exp.schema import TrainedPatchConfig
from qresafe_exp.tracking import WandbTracker


def _setup(n_pairs=6, **overrides):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    adapters = attach_masked_lora(model, named_linears(model), r=2, alpha=4)
    rng = random.Random(0)

    def item(length):
        prompt, response = [rng.randrange(1, 64) for _ in range(5)], [rng.randrange(1, 64) for _ in range(length)]
        return {"input_ids": prompt + response, "labels": [-100] * 5 + response}

    # responses of different lengths: the NLL is per token, padding must not count
    items = [{"chosen": item(3 + i % 3), "rejected": item(4)} for i in range(n_pairs)]
    settings = dict(name="qresafe", tag="t", tau=0.3, mask_every=2, epochs=2, batch_size=2, lr=1e-2, beta=0.5,
                    lora_dropout=0.0, snip_batch_size=3)
    cfg = OmegaConf.structured(TrainedPatchConfig(**{**settings, **overrides}))
    return model, adapters, items, cfg


def test_dpo_history_has_one_row_per_step_with_margins_accuracies_and_reselections():
    model, adapters, items, cfg = _setup()
    first = list(range(len(items)))
    random.Random(0).shuffle(first)  # the trainer's first batch (seed 0)
    expected_nll = response_loss(model, collate([items[i]["chosen"] for i in first[: cfg.batch_size]], 0)).item()
    facts = train_patch(model, adapters, items, cfg, pad_id=0, seed=0)
    history = facts["history"]
    assert facts["steps"] == 6 and [row["step"] for row in history] == list(range(6))
    assert [row["epoch"] for row in history] == [0, 0, 0, 1, 1, 1]
    for row in history:
        assert {"loss", "lr", "dpo_margin", "reward_accuracy", "chosen_nll"} <= set(row)
        assert 0.0 <= row["reward_accuracy"] <= 1.0 and row["chosen_nll"] > 0
    # masks at step 0 (not a re-selection), then every mask_every = 2 steps
    assert [row["step"] for row in history if row.get("mask_reselected")] == [2, 4]
    assert facts["mask_reselections"] == 2 and facts["mask_selections"] == 3
    # step 0: the patch is still zero, so the policy is the reference (margin 0) and its NLL the base model's
    assert abs(history[0]["dpo_margin"]) < 1e-4
    assert history[0]["chosen_nll"] == pytest.approx(expected_nll, rel=1e-4)
    assert history[0]["lr"] == 0.0 and history[1]["lr"] == pytest.approx(cfg.lr)  # one warmup step, then cosine
    assert facts["dpo_margin_last_steps"] > 0 and history[-1]["dpo_margin"] > 0  # DPO separated the pairs
    assert json.loads(json.dumps(facts)) == facts  # plain JSON, as train_info.json / metrics.json store it


def test_sft_history_has_loss_and_lr_only_and_no_reselection_when_k_exceeds_the_steps():
    model, adapters, items, cfg = _setup(objective="sft", mask_every=1000, epochs=1)
    facts = train_patch(model, adapters, items, cfg, pad_id=0, seed=0)
    assert [set(row) for row in facts["history"]] == [{"step", "epoch", "loss", "lr"}] * 3
    assert facts["mask_reselections"] == 0 and "dpo_margin_last_steps" not in facts


def test_random_mask_is_the_same_set_at_every_reselection_and_bounds_the_update():
    model, adapters, items, cfg = _setup(mask_score="random", mask_every=1)
    base = {name: a.base.weight.detach().clone() for name, a in adapters.items()}
    facts = train_patch(model, adapters, items, cfg, pad_id=0, seed=0)
    _, fresh, _, _ = _setup(mask_score="random")
    MaskSelector(model, fresh, items, cfg, 0, seed=0).select(step=0)
    assert facts["mask_reselections"] == 5
    for name, adapter in adapters.items():
        assert torch.equal(adapter.mask, fresh[name].mask)
        after = adapter.effective_weight().detach()
        assert torch.equal(after[~adapter.mask], base[name][~adapter.mask])


def _wandb_records(run_dir: Path):
    """The protobuf records of an offline W&B run file (a LevelDB-style log of 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2

    data = next(run_dir.glob("*.wandb")).read_bytes()
    pos, pending = 7, b""  # a 7-byte file header, then chunks: crc (4), length (2), type (1: full, 4: last)
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_cell_run_gets_the_patch_history_as_step_indexed_rows(tmp_path):
    rows = [{"step": 0, "epoch": 0, "loss": 0.69315, "lr": 0.0, "dpo_margin": 0.0},
            {"step": 1, "epoch": 0, "loss": 0.61234, "lr": 0.01, "dpo_margin": 0.25},
            {"step": 2, "epoch": 1, "loss": 0.51234, "lr": 0.005, "dpo_margin": 0.5, "mask_reselected": True}]
    tracker = WandbTracker(OmegaConf.create({"project": "p", "entity": None, "mode": "offline", "tags": []}))
    tracker.start(run_dir=tmp_path, name="cell", group="study", job_type="cell", config={}, tags=[])
    try:  # what pipeline.write_cell logs: the patch's train facts, history included
        tracker.log_metrics({"scores": {"asr": 0.5}, "patch": {"train": {"steps": 3, "history": rows}}})
        run_dir = Path(tracker.run_path)
    finally:
        tracker.finish()
    logged, metrics = [], {}
    for record in _wandb_records(run_dir):
        if record.WhichOneof("record_type") == "history":
            logged.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                           for item in record.history.item})
        elif record.WhichOneof("record_type") == "metric":
            metrics[record.metric.name or record.metric.glob_name] = record.metric.step_metric
    prefix = "patch/train/history"
    assert metrics[f"{prefix}/*"] == f"{prefix}/step"  # charted over the training step
    series = [{k.removeprefix(prefix + "/"): v for k, v in row.items() if k.startswith(prefix)}
              for row in logged if f"{prefix}/step" in row]
    assert series == rows
    assert logged[-1]["scores/asr"] == 0.5 and logged[-1]["patch/train/steps"] == 3  # the summary follows
