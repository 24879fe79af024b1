"""``patch=safepatching`` (Zhao et al., SafePatching; safepatching-spec): two patches from the same
harmful pairs D_h, merged under control.

1. Patch derivation: a copy of the backbone trained by gradient ascent on D_h's responses (unlearning:
   the safety-enhancement patch P_SE = theta_GA - theta) and one by ordinary fine-tuning on them (the
   over-safety-mitigation patch P_OSM = theta_GD - theta); full fine-tuning of the target linear
   layers, token-mean response NLL.
2. SNIP importance |W * dL/dW| of each patched model on D_h (question + response NLL; the spec's [X]
   reading), then controllable patching (patch/controllable.py): top-a / top-b sets, difference sets,
   random retention p, scales alpha / beta.
3. The merged delta goes into the backbone: an FP cell gets W + delta (the paper's setting); a
   quantized cell gets it re-quantized into its own format (patch/requantize.py, as Q-resafe's merge).

D_h comes from a calibration-style config (`patch.data`, default: Risk-III's pairs, i.e. harmful
prompts answered by the unaligned responder and kept where the judge says it complied). Cache stages:
``safepatch_train`` (both deltas + both SNIP score maps, so a, b, p, alpha, beta and cp_mode sweep
without retraining) and ``patch`` (the merged checkpoint).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from safetensors.torch import load_file, save_file

from qresafe_exp.align import training_prompts
from qresafe_exp.cache import without_later_defaults, write_json_atomic
from qresafe_exp.calibration import build_calibration, check_calibration
from qresafe_exp.evals.protocols import system_prompt_for
from qresafe_exp.finetune import collate, response_loss, tokenize_example, train
from qresafe_exp.models import ModelRef, load_tokenizer
from qresafe_exp.patch.base import MASK_SCOPES, PROMPT_KEYS, Patch, PatchContext, PatchResult, check_choice
from qresafe_exp.patch.controllable import CP_MODES, combine
from qresafe_exp.patch.quantized_view import load_trainable
from qresafe_exp.patch.requantize import REQUANTIZE_VERSION, check_mergeable, write_merged
from qresafe_exp.patch.snip import snip_scores
from qresafe_exp.preflight import check_count, check_positive
from qresafe_exp.quant.base import checkpoint_bytes
from qresafe_exp.resources import measure
from qresafe_exp.stages import Plan

log = logging.getLogger(__name__)
TRAIN_KEYS = (
    "data",
    "se",
    "osm",
    "target_modules",
    "batch_size",
    "max_length",
    "max_response_tokens",
    "snip_batch_size",
)  # what the trained patches depend on; the rest only changes the merge
CP_KEYS = ("a", "b", "keep_p", "alpha", "beta", "cp_mode", "rescale", "mask_scope", "mask_seed")


# bounds added after the first patches were built: out of the key while unset, so those keep their keys
_LATER_STEP_FIELDS = {"max_steps": None, "max_nll_rise": None, "stop_on": "batch"}
STOP_ON = ("batch", "set")


def train_spec(settings: dict) -> dict:
    spec = {k: settings[k] for k in TRAIN_KEYS}
    for role in ("se", "osm"):
        spec[role] = without_later_defaults(spec[role], _LATER_STEP_FIELDS)
    return spec


def pairs_cfg(cell: DictConfig) -> DictConfig:
    """The cell config with ``calib`` replaced by the patch's pair set (so the calibration code builds D_h)."""
    cfg = cell.copy()
    with open_dict(cfg):
        cfg.calib = cell.patch.data
    return cfg


class SafePatching(Patch):
    version = 1
    reads = (*PROMPT_KEYS, "engine")  # engine: D_h's answers are generated (calibration.build_calibration)

    @classmethod
    def validate(cls, cfg: DictConfig, quant_cfg: DictConfig) -> None:
        check_choice("cp_mode", cfg.cp_mode, CP_MODES)
        for key in ("a", "b", "keep_p"):
            if not 0.0 < cfg[key] <= 1.0:
                raise ValueError(f"patch.{key}={cfg[key]}: a fraction in (0, 1]")
        check_choice("mask_scope", cfg.mask_scope, MASK_SCOPES)
        for step in ("se", "osm"):
            check_positive(f"patch.{step}.lr", cfg[step].lr)
            check_count(f"patch.{step}.epochs", cfg[step].epochs, 1, "passes over the pairs")
            check_choice(f"{step}.stop_on", cfg[step].stop_on, STOP_ON)
            if cfg[step].stop_on == "set" and cfg[step].max_nll_rise is None:
                raise ValueError(
                    f"patch.{step}.stop_on=set holds the NLL bound on D_h, and patch.{step}.max_nll_rise (the "
                    f"bound, nats/token above the backbone's NLL) is unset: set it, e.g. patch.{step}.max_nll_rise=1.5"
                )
        check_count("patch.batch_size", cfg.batch_size, 1, "pairs per step")
        check_mergeable(cfg.name, quant_cfg)

    @classmethod
    def check_data(cls, cell_cfg: DictConfig) -> None:
        check_calibration(pairs_cfg(cell_cfg))

    def plan(self, ctx: PatchContext) -> Plan[PatchResult] | PatchResult:
        cfg = ctx.cfg.patch
        system_prompt = system_prompt_for(ctx.cfg)
        # D_h never holds a prompt the backbone was safety-tuned on (it refuses those from memory)
        aligned_on = frozenset(training_prompts(ctx.fp.path))
        pairs = build_calibration(pairs_cfg(ctx.cfg), ctx, exclude=aligned_on)  # a sub-artifact when generated
        settings = OmegaConf.to_container(cfg, resolve=True)
        spec = {
            "train": train_spec(settings),
            "pairs": pairs.facts["content_key"],
            "system_prompt": system_prompt,
            "seed": ctx.cfg.seed,
        }

        def build_patches(out: Path) -> None:
            with measure() as cost:
                facts = derive_patches(
                    ctx.quantized.path,
                    pairs.records,
                    cfg,
                    system_prompt,
                    ctx.device,
                    ctx.cfg.seed,
                    out,
                    log_step=ctx.log_step,
                )
            facts.update(pair_set=pairs.facts, cost=cost.cost_facts())
            write_json_atomic(out / "train_info.json", facts)

        # a sub-artifact: cells that differ only in the merge (a, b, p, alpha, beta, cp_mode) share it
        trained = ctx.cached("safepatch_train", spec, build_patches, upstream=[ctx.quantized.key], version=self.version)

        def build_merged(out: Path) -> None:
            with measure() as cost:
                p_se, p_osm = (
                    load_file(str(trained.path / "p_se.safetensors")),
                    load_file(str(trained.path / "p_osm.safetensors")),
                )
                s_se, s_osm = (
                    load_file(str(trained.path / "s_se.safetensors")),
                    load_file(str(trained.path / "s_osm.safetensors")),
                )
                delta, counts = combine(
                    p_se,
                    p_osm,
                    {k: v.float() for k, v in s_se.items()},
                    {k: v.float() for k, v in s_osm.items()},
                    a=cfg.a,
                    b=cfg.b,
                    keep_p=cfg.keep_p,
                    alpha=cfg.alpha,
                    beta=cfg.beta,
                    mode=cfg.cp_mode,
                    rescale=cfg.rescale,
                    scope=cfg.mask_scope,
                    seed=cfg.mask_seed,
                )
                merge = write_merged(ctx.quantized.path, delta, out / "merged", ctx.device)
            write_json_atomic(out / "merge_info.json", {"merge": merge, "selection": counts, "cost": cost.cost_facts()})

        def read(merged_art) -> PatchResult:
            info = json.loads((trained.path / "train_info.json").read_text())
            merge_info = json.loads((merged_art.path / "merge_info.json").read_text())
            train_cost, merge_cost = info["cost"], merge_info["cost"]
            info.update(
                method=cfg.name,
                artifact=merged_art.key,
                train_artifact=trained.key,
                cached=not (trained.built or merged_art.built),
                merge=merge_info["merge"],
                selection=merge_info["selection"],
                controllable={k: settings[k] for k in CP_KEYS},
                cost={
                    "wall_seconds": round(train_cost["wall_seconds"] + merge_cost["wall_seconds"], 1),
                    "train_stage_seconds": train_cost["wall_seconds"],
                    "merge_stage_seconds": merge_cost["wall_seconds"],
                    "rss_peak_mb": max(train_cost["rss_peak_mb"], merge_cost["rss_peak_mb"]),
                },
                sizes={"merged_checkpoint_bytes": checkpoint_bytes(merged_art.path / "merged")},
            )
            return PatchResult(
                ModelRef(f"{ctx.quantized.name}.{cfg.tag}", str(merged_art.path / "merged"), merged_art.key), info
            )

        return Plan(
            "patch",
            {"controllable": {k: settings[k] for k in CP_KEYS}, "requantize_version": REQUANTIZE_VERSION},
            build_merged,
            read,
            [trained.key, ctx.quantized.key],
        )


@torch.no_grad()
def mean_response_nll(model, items: list[dict], pad_id: int, batch_size: int = 8) -> float:
    total, count = 0.0, 0
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        total += response_loss(model, collate(chunk, pad_id)).item() * len(chunk)
        count += len(chunk)
    return round(total / count, 4)


def _nll_bound(nll_backbone: float, settings) -> float | None:
    rise = settings.get("max_nll_rise")
    return None if rise is None else round(nll_backbone + rise, 4)


def derive_patches(
    path: str,
    records: list[dict],
    cfg: DictConfig,
    system_prompt,
    device,
    seed: int,
    out: Path,
    log_step: Callable[[str, dict], None] = lambda series, row: None,
) -> dict:
    """Train theta_GA and theta_GD from the backbone at ``path``; save P_SE, P_OSM and both SNIP maps.
    Each training step goes to ``log_step`` as it happens (series patch/se/history, patch/osm/history)."""
    tokenizer = load_tokenizer(path)
    items = [tokenize_example(tokenizer, r, cfg.max_length, cfg.max_response_tokens, system_prompt) for r in records]
    model, linears, _ = load_trainable(path, device, list(cfg.target_modules))
    for p in model.parameters():
        p.requires_grad_(False)
    original = {name: m.weight.detach().clone() for name, m in linears.items()}
    snip_batches = [
        collate(items[i : i + cfg.snip_batch_size], tokenizer.pad_token_id)
        for i in range(0, len(items), cfg.snip_batch_size)
    ]
    facts = {"pairs": len(items), "nll_backbone": mean_response_nll(model, items, tokenizer.pad_token_id)}
    for role, ascent, settings in (("se", True, cfg.se), ("osm", False, cfg.osm)):
        for name, m in linears.items():
            m.weight.data.copy_(original[name])
            m.weight.requires_grad_(True)
        history: list[dict] = []  # kept in train_info.json too: a cached patch replays it to the tracker

        def step_done(row: dict, series: str = f"patch/{role}/history", rows: list = history) -> None:
            rows.append(row)
            log_step(series, row)

        run = train(
            model,
            [m.weight for m in linears.values()],
            items,
            epochs=settings.epochs,
            batch_size=cfg.batch_size,
            lr=settings.lr,
            pad_id=tokenizer.pad_token_id,
            seed=seed,
            desc=f"safepatching {role} ({'gradient ascent' if ascent else 'fine-tuning'})",
            ascent=ascent,
            max_steps=settings.get("max_steps"),
            stop_above_nll=_nll_bound(facts["nll_backbone"], settings),
            set_nll=(
                (lambda: mean_response_nll(model, items, tokenizer.pad_token_id))
                if settings.get("stop_on", "batch") == "set"
                else None
            ),
            log_step=step_done,
        )
        for m in linears.values():
            m.weight.requires_grad_(False)
        run["nll_after"] = mean_response_nll(model, items, tokenizer.pad_token_id)
        run["history"] = history
        delta = {name: (m.weight.detach() - original[name]).float().cpu().contiguous() for name, m in linears.items()}
        scores = snip_scores(model, snip_batches, linears=linears, desc=f"SNIP of theta_{role}")
        save_file({k: v.to(torch.bfloat16) for k, v in delta.items()}, str(out / f"p_{role}.safetensors"))
        save_file({k: v.to(torch.bfloat16) for k, v in scores.items()}, str(out / f"s_{role}.safetensors"))
        facts[role] = run
        log.info("safepatching %s: response NLL on D_h %.3f -> %.3f", role, facts["nll_backbone"], run["nll_after"])
    for name, m in linears.items():
        m.weight.data.copy_(original[name])
    return facts
