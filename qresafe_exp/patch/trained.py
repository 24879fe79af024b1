"""qresafe / dpo / sft: a masked-LoRA patch trained on the quantized model, then merged into it and
re-quantized into its original format (qresafe-spec 4 and 5).

The three differ only in config: qresafe = DPO under a SNIP top-tau mask (tau 0.6), dpo = the same
without a mask (tau 1), sft = NLL of the FP responses without a mask, dpo_full = DPO with a dense delta
over every entry (full-parameter, patch.adapter=full); patch.mask_score=random|magnitude
are controls of the mask's choice (qresafe_random_mask, qresafe_magnitude_mask). Cache stage ``patch_train``
holds the pairs, the 16-bit delta and the training facts (its key leaves out the patch's name, so
`patch=dpo` and `patch=qresafe patch.tau=1.0` share one); stage ``patch`` holds the merged,
re-quantized checkpoint and the unmerged form (the quantized checkpoint + the delta).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

from qresafe_exp.align import training_prompts
from qresafe_exp.cache import content_key, without_later_defaults, write_json_atomic
from qresafe_exp.devices import AUTOCAST_CHOICES
from qresafe_exp.evals.protocols import system_prompt_for
from qresafe_exp.formats.fake_quant import attach_activation_quant
from qresafe_exp.formats.rewrite import link_checkpoint
from qresafe_exp.formats.sidecars import ADAPTER_DIR, PATCH_DELTA, save_patch_delta
from qresafe_exp.models import ModelRef, load_tokenizer
from qresafe_exp.patch.base import MASK_SCOPES, PROMPT_KEYS, Patch, PatchContext, PatchResult, check_choice
from qresafe_exp.patch.data import LATER_DATA_SETTINGS as SHARED_LATER_DATA_SETTINGS
from qresafe_exp.patch.data import patch_prompts, written_answers
from qresafe_exp.patch.masked_lora import attach_masked_lora
from qresafe_exp.patch.pairs import BENIGN_REFUSED, BENIGN_REJECTED, drop_unsafe_chosen, preference_pairs
from qresafe_exp.patch.quantized_view import load_trainable
from qresafe_exp.patch.requantize import REQUANTIZE_VERSION, check_mergeable, requantizers, write_merged
from qresafe_exp.patch.snip import MASK_SCORES
from qresafe_exp.patch.trainer import OBJECTIVES, TRAIN_SERIES, tokenize_pairs, train_patch
from qresafe_exp.preflight import check_count, check_positive
from qresafe_exp.quant.base import checkpoint_bytes
from qresafe_exp.resources import measure
from qresafe_exp.stages import Plan

log = logging.getLogger(__name__)
NOT_IN_KEY = ("name", "tag", "eval_adapter")  # do not change the trained patch
# settings added after patches were cached: left out of the key at their default, so those stay valid
LATER_SETTINGS = {
    "mask_score": "snip",
    "autocast": None,
    "gradient_checkpointing": False,
    "snip_samples": None,
    "adapter": "lora",
}


LATER_DATA_SETTINGS = {"benign_rejected": "quantized", "benign_refused": "keep", **SHARED_LATER_DATA_SETTINGS}


def spec_settings(cfg: DictConfig) -> dict:
    """The patch config as it enters the ``patch_train`` cache key."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    settings["data"] = without_later_defaults(settings["data"], LATER_DATA_SETTINGS)
    return without_later_defaults({k: v for k, v in settings.items() if k not in NOT_IN_KEY}, LATER_SETTINGS)


class NothingToLearn(ValueError):
    """Every patch prompt got the same answer from the quantized and the FP model: no pair to train on."""

    def __init__(self, message: str, facts: dict):
        super().__init__(message)
        self.facts = facts


class TrainedPatch(Patch):
    version = 1
    reads = PROMPT_KEYS

    @classmethod
    def validate(cls, cfg: DictConfig, quant_cfg: DictConfig) -> None:
        check_choice("objective", cfg.objective, OBJECTIVES)
        if not 0.0 <= cfg.tau <= 1.0:
            raise ValueError(f"patch.tau={cfg.tau}: the fraction of weights the patch may change, in [0, 1]")
        check_choice("mask_scope", cfg.mask_scope, MASK_SCOPES)
        check_choice("mask_score", cfg.mask_score, MASK_SCORES)
        check_choice("mask_map", cfg.mask_map, ("delta", "rowcol"))
        check_choice("adapter", cfg.adapter, ("lora", "full"))
        if cfg.adapter == "full" and cfg.tau < 1.0:
            raise ValueError(
                f"patch.adapter=full trains every entry, so it takes no mask: patch.tau={cfg.tau} needs "
                "patch.adapter=lora (or set patch.tau=1.0 for full-parameter fine-tuning)"
            )
        check_choice("autocast", cfg.autocast, AUTOCAST_CHOICES)
        if cfg.get("snip_samples") is not None and cfg.snip_samples < 1:
            raise ValueError(f"patch.snip_samples={cfg.snip_samples}: at least 1 response (null = all pairs)")
        if cfg.mask_every < 1 or cfg.epochs < 1 or cfg.batch_size < 1:
            raise ValueError("patch.mask_every, patch.epochs and patch.batch_size must be >= 1")
        for key in ("lr", "beta", "lora_alpha"):
            check_positive(f"patch.{key}", cfg[key])
        for key, what in (
            ("lora_r", "LoRA rank"),
            ("max_length", "tokens per pair"),
            ("max_response_tokens", "response tokens per pair"),
            ("data.num_harmful", "harmful patch prompts"),
            ("data.max_new_tokens", "tokens per answer"),
        ):
            check_count(f"patch.{key}", OmegaConf.select(cfg, key), 1, what)
        check_count("patch.data.num_benign", cfg.data.num_benign, 0, "benign patch prompts")
        if not 0.0 <= cfg.warmup_fraction < 1.0:
            raise ValueError(f"patch.warmup_fraction={cfg.warmup_fraction}: the share of steps warming up, in [0, 1)")
        check_choice("data.benign_rejected", cfg.data.benign_rejected, BENIGN_REJECTED)
        check_choice("data.benign_refused", cfg.data.benign_refused, BENIGN_REFUSED)
        for key, default, does in (
            ("benign_rejected", "quantized", "replaces the benign pairs' rejected answers"),
            ("benign_refused", "keep", "acts on the benign pairs"),
        ):
            value = cfg.data[key]
            if value != default and not (cfg.data.benign and cfg.data.num_benign):
                raise ValueError(
                    f"patch.data.{key}={value} {does}, but the patch has no benign prompts: "
                    "set patch.data.num_benign above 0"
                )
        check_mergeable(cfg.name, quant_cfg)

    @classmethod
    def check_data(cls, cell_cfg: DictConfig) -> None:
        patch_prompts(cell_cfg)
        if cell_cfg.patch.data.benign_refused == "reference":
            written_answers(cell_cfg)

    def plan(self, ctx: PatchContext) -> Plan[PatchResult] | PatchResult:
        cfg = ctx.cfg.patch
        if cfg.tau <= 0.0:  # nothing may change: the patched model is the quantized one
            return PatchResult(
                ctx.quantized,
                {
                    "method": cfg.name,
                    "tau": 0.0,
                    "updatable_entries": 0,
                    "trained": False,
                    "note": "tau=0 lets no weight change; nothing was trained",
                },
            )
        system_prompt = system_prompt_for(ctx.cfg)
        prompts, prompt_facts = patch_prompts(ctx.cfg, frozenset(training_prompts(ctx.fp.path)))
        spec = {
            "patch": spec_settings(cfg),
            "system_prompt": system_prompt,
            "prompts": content_key(prompts),
            "seed": ctx.cfg.seed,
        }

        # Two artifacts, so that a failure while merging never costs the training again: the trained
        # delta (a sub-artifact, shared by cells that differ only in the patch's name or tag) and the
        # merged checkpoint (the stage's own, built by the pipeline from the plan below).
        def build_delta(out: Path) -> None:
            with measure() as cost:
                facts = self._train(
                    ctx, prompts, prompts[: prompt_facts.get("harmful", {}).get("sampled", 0)], system_prompt, out
                )
            facts.update(prompts=prompt_facts, cost=cost.cost_facts())
            write_json_atomic(out / "train_info.json", facts)

        try:
            trained = ctx.cached(
                "patch_train", spec, build_delta, upstream=[ctx.fp.key, ctx.quantized.key], version=self.version
            )
        except NothingToLearn as err:
            # a result, not a failure: the cell is the unpatched quantized model, and a sweep goes on
            log.warning("cell %s: %s; recorded with the unpatched model's scores", ctx.cell, err)
            return PatchResult(
                ctx.quantized,
                {
                    "method": cfg.name,
                    "tau": cfg.tau,
                    "trained": False,
                    "not_trained_reason": str(err),
                    "pairs": err.facts,
                    "prompts": prompt_facts,
                },
            )

        def build_merged(out: Path) -> None:
            with measure() as cost:
                deltas = load_file(str(trained.path / PATCH_DELTA))
                merge = write_merged(ctx.quantized.path, deltas, out / "merged", ctx.device)
                link_checkpoint(Path(ctx.quantized.path), out / "adapter")
                adapter = Path(ctx.quantized.path) / ADAPTER_DIR
                if adapter.is_dir():  # a merge=adapter cell: the unmerged form keeps its adapter beside the delta
                    link_checkpoint(adapter, out / "adapter" / ADAPTER_DIR)
                link_checkpoint(trained.path, out / "adapter", skip=lambda name: name != PATCH_DELTA)
            write_json_atomic(out / "merge_info.json", {"merge": merge, "cost": cost.cost_facts()})

        def read(merged_art) -> PatchResult:
            info = json.loads((trained.path / "train_info.json").read_text())
            merge_info = json.loads((merged_art.path / "merge_info.json").read_text())
            info.update(
                method=cfg.name,
                tau=cfg.tau,
                trained=True,
                artifact=merged_art.key,
                train_artifact=trained.key,
                cached=not (trained.built or merged_art.built),
                merge=merge_info["merge"],
                cost=_total_cost(info["cost"], merge_info["cost"]),
                sizes={
                    "merged_checkpoint_bytes": checkpoint_bytes(merged_art.path / "merged"),
                    "quantized_checkpoint_bytes": checkpoint_bytes(Path(ctx.quantized.path)),
                    "adapter_delta_bytes": (trained.path / PATCH_DELTA).stat().st_size,
                },
            )
            merged = ModelRef(f"{ctx.quantized.name}.{cfg.tag}", str(merged_art.path / "merged"), merged_art.key)
            variants = {}
            if cfg.eval_adapter:
                variants["adapter"] = ModelRef(
                    f"{merged.name}.adapter", str(merged_art.path / "adapter"), f"{merged_art.key}-adapter"
                )
            return PatchResult(merged, info, variants)

        return Plan(
            "patch", {"requantize_version": REQUANTIZE_VERSION}, build_merged, read, [trained.key, ctx.quantized.key]
        )

    def _train(self, ctx: PatchContext, prompts: list[str], harmful: list[str], system_prompt, out: Path) -> dict:
        cfg = ctx.cfg.patch
        pairs, pair_facts = preference_pairs(
            ctx.fp,
            ctx.quantized,
            prompts,
            ctx.requests,
            ctx.device,
            max_new_tokens=cfg.data.max_new_tokens,
            system_prompt=system_prompt,
            benign=set(prompts[len(harmful) :]),
            benign_rejected=cfg.data.benign_rejected,
            benign_refused=cfg.data.benign_refused,
            answers=written_answers(ctx.cfg) if cfg.data.benign_refused == "reference" else None,
            seed=ctx.cfg.seed,
        )
        if cfg.data.safe_chosen_only:
            pairs, pair_facts["unsafe_chosen_dropped"] = drop_unsafe_chosen(pairs, set(harmful), ctx.cfg.judge)
            pair_facts["pairs"] = len(pairs)
        if not pairs:
            raise NothingToLearn(
                f"patch={cfg.name}: the quantized model answers every patch prompt exactly as the "
                f"FP model does (or only unsafe FP answers differ), so there is no preference to "
                f"learn; more or other prompts (patch.data.*) may give some",
                pair_facts,
            )
        (out / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
        model, linears, fake_quant = load_trainable(ctx.quantized.path, ctx.device, list(cfg.target_modules))
        adapters = attach_masked_lora(
            model,
            linears,
            cfg.lora_r,
            cfg.lora_alpha,
            dropout=cfg.lora_dropout,
            mask_map=cfg.mask_map,
            full=cfg.adapter == "full",
        )
        if cfg.quant_aware:
            for name, fn in requantizers(ctx.quantized.path, list(adapters)).items():
                adapters[name].requantizer = fn
        if fake_quant:  # llm_qat: the patched layers see the same activation / KV quantization as inference
            attach_activation_quant(model, fake_quant["modules"], fake_quant["act_bits"], fake_quant["kv_bits"])
        tokenizer = load_tokenizer(ctx.quantized.path)
        items = tokenize_pairs(tokenizer, pairs, cfg, system_prompt)
        train_facts = train_patch(
            model,
            adapters,
            items,
            cfg,
            tokenizer.pad_token_id,
            ctx.cfg.seed,
            log_step=lambda row: ctx.log_step(TRAIN_SERIES, row),
        )
        save_patch_delta({name: adapter.delta().detach() for name, adapter in adapters.items()}, out)
        return {"pairs": pair_facts, "train": train_facts}


def _total_cost(train: dict, merge: dict) -> dict:
    total = {
        "wall_seconds": round(train["wall_seconds"] + merge["wall_seconds"], 1),
        "train_stage_seconds": train["wall_seconds"],
        "merge_stage_seconds": merge["wall_seconds"],
        "rss_before_mb": train["rss_before_mb"],
        "rss_peak_mb": max(train["rss_peak_mb"], merge["rss_peak_mb"]),
    }
    if "cuda_peak_mb" in train:
        total["cuda_peak_mb"] = max(train["cuda_peak_mb"], merge.get("cuda_peak_mb", 0))
    return total
