"""train_patch records one history row per optimizer step (loss, lr, DPO margin / reward accuracy /
chosen NLL, mask re-selections) and hands each to log_step as it happens; a W&B cell run charts them
as step-indexed rows, streamed live or replayed from a cached patch's history."""

import json
import random
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import LlamaConfig, LlamaForCausalLM

from qresafe_exp.finetune import collate, response_loss, train
from qresafe_exp.lm import named_linears
from qresafe_exp.patch.masked_lora import attach_masked_lora
from qresafe_exp.patch.trainer import TRAIN_SERIES, MaskSelector, train_patch
from qresafe_exp.schema import TrainedPatchConfig
from qresafe_exp.tracking import WandbTracker
from tests import wandb_files


def _setup(n_pairs=6, **overrides):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    adapters = attach_masked_lora(model, named_linears(model), r=2, alpha=4)
    rng = random.Random(0)

    def item(length):
        prompt, response = [rng.randrange(1, 64) for _ in range(5)], [rng.randrange(1, 64) for _ in range(length)]
        return {"input_ids": prompt + response, "labels": [-100] * 5 + response}

    # responses of different lengths: the NLL is per token, padding must not count
    items = [{"chosen": item(3 + i % 3), "rejected": item(4)} for i in range(n_pairs)]
    settings = dict(
        name="qresafe",
        tag="t",
        tau=0.3,
        mask_every=2,
        epochs=2,
        batch_size=2,
        lr=1e-2,
        beta=0.5,
        lora_dropout=0.0,
        snip_batch_size=3,
    )
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


def test_wandb_cell_run_gets_the_patch_history_as_step_indexed_rows(tmp_path):
    rows = [
        {"step": 0, "epoch": 0, "loss": 0.69315, "lr": 0.0, "dpo_margin": 0.0},
        {"step": 1, "epoch": 0, "loss": 0.61234, "lr": 0.01, "dpo_margin": 0.25},
        {"step": 2, "epoch": 1, "loss": 0.51234, "lr": 0.005, "dpo_margin": 0.5, "mask_reselected": True},
    ]
    tracker = WandbTracker(OmegaConf.create({"project": "p", "entity": None, "mode": "offline", "tags": []}))
    tracker.start(run_dir=tmp_path, name="cell", group="study", job_type="cell", config={}, tags=[])
    try:  # what pipeline.write_cell logs for a cached patch: its train facts, history included
        tracker.log_metrics({"scores": {"asr": 0.5}, "patch": {"train": {"steps": 3, "history": rows}}})
        run_dir = Path(tracker.run_path)
    finally:
        tracker.finish()
    prefix = "patch/train/history"
    assert wandb_files.step_metrics(run_dir)[f"{prefix}/*"] == f"{prefix}/step"  # charted over the training step
    # an event flag is charted as 0/1 beside its running count
    assert wandb_files.series(run_dir, prefix) == [*rows[:2], {**rows[2], "mask_reselected_count": 1}]
    logged = wandb_files.history(run_dir)
    assert logged[-1]["scores/asr"] == 0.5 and logged[-1]["patch/train/steps"] == 3  # the summary follows


def _offline_tracker(tmp_path) -> WandbTracker:
    tracker = WandbTracker(OmegaConf.create({"project": "p", "entity": None, "mode": "offline", "tags": []}))
    tracker.start(run_dir=tmp_path, name="cell", group="study", job_type="cell", config={}, tags=[])
    return tracker


def test_train_patch_streams_each_step_to_the_run_and_the_summary_does_not_repeat_them(tmp_path):
    model, adapters, items, cfg = _setup()
    tracker = _offline_tracker(tmp_path)
    handed = []

    def log_step(row):  # what trained.py hands down: the cell tracker's log_step under TRAIN_SERIES
        handed.append(dict(row))
        tracker.log_step(TRAIN_SERIES, row)

    try:
        facts = train_patch(model, adapters, items, cfg, pad_id=0, seed=0, log_step=log_step)
        tracker.log_metrics({"patch": {"train": facts}})  # then the cell's results, history included
        run_dir = Path(tracker.run_path)
    finally:
        tracker.finish()
    assert handed == facts["history"]  # one call per optimizer step, the row of that step
    streamed = wandb_files.series(run_dir, TRAIN_SERIES)
    assert [row["step"] for row in streamed] == list(range(6))  # once each: the summary replayed nothing
    assert all({"loss", "lr", "dpo_margin", "reward_accuracy", "chosen_nll"} <= set(row) for row in streamed)
    assert [row.get("mask_reselected_count") for row in streamed] == [None, None, 1, 1, 2, 2]  # the counter
    assert [row["loss"] for row in streamed] == [row["loss"] for row in facts["history"]]


def test_finetune_train_hands_each_step_to_log_step():
    """SafePatching's two trainings (and QLoRA's) go through finetune.train: its steps stream the same way."""
    model, _, items, _ = _setup()
    rows = []
    facts = train(
        model,
        [p for p in model.parameters()],
        [it["chosen"] for it in items],
        epochs=2,
        batch_size=2,
        lr=1e-3,
        pad_id=0,
        seed=0,
        desc="test",
        log_step=rows.append,
    )
    assert [row["step"] for row in rows] == list(range(facts["steps"])) == list(range(6))
    assert [row["epoch"] for row in rows] == [0, 0, 0, 1, 1, 1]
    assert all(set(row) == {"step", "epoch", "loss", "lr"} and row["loss"] > 0 for row in rows)
    assert rows[-1]["loss"] == pytest.approx(facts["loss_last_steps"], abs=1e-4)
