"""Q-resafe's AWQ variant (qresafe-spec 4.6, paper Table 4): no fine-tuning. SNIP scores on the FP
model, with harmful prompts and the FP model's own (refusing) answers as targets, pick the
safety-critical weights; AWQ quantizes the model as usual, and those entries are kept in 16 bit.

AWQ folds per-channel smoothing scales into the weights before rounding, so the kept values are read
from the calibrated model just before compression (the smoothed fp weights, which is what the grid
approximates). SNIP |w * dL/dw| is invariant to that per-channel rescaling, so scores from the FP
model rank the smoothed entries the same way. The kept entries ride beside the compressed-tensors
checkpoint as ``kept_weights.safetensors`` (int32 index + fp16 value each), applied at load.

``keep_score`` random / magnitude are controls that keep as many entries chosen otherwise: a seeded
random set, or the largest |w| of the smoothed weights AWQ rounds (magnitude, unlike SNIP, changes
under the smoothing, and the rounded weights are the ones whose outliers matter). Both are picked on
the calibrated model and need no FP responses.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from qresafe_exp.align import training_prompts
from qresafe_exp.cache import content_key, without_later_defaults, write_json_atomic
from qresafe_exp.data import load_records
from qresafe_exp.evals.protocols import system_prompt_for
from qresafe_exp.finetune import collate, tokenize_example
from qresafe_exp.formats.sidecars import save_kept_weights
from qresafe_exp.lm import named_linears
from qresafe_exp.models import ModelRef, load_model, load_tokenizer
from qresafe_exp.patch.base import MASK_SCOPES, PROMPT_KEYS, Patch, PatchContext, PatchResult, check_choice
from qresafe_exp.patch.data import LATER_DATA_SETTINGS, patch_prompts
from qresafe_exp.patch.pairs import drop_unsafe_chosen, model_responses
from qresafe_exp.patch.snip import MASK_SCORES, magnitude_scores, random_scores, snip_scores, top_fraction_masks
from qresafe_exp.quant import QUANTIZERS
from qresafe_exp.quant.base import UnsupportedCombinationError, checkpoint_bytes, quant_seed
from qresafe_exp.resources import measure
from qresafe_exp.stages import Plan

# settings added after patches were cached: left out of the key at their default, so those stay valid
LATER_SETTINGS = {"keep_score": "snip"}


def spec_settings(cfg: DictConfig) -> dict:
    """The patch config as it enters the cache key."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    settings["data"] = without_later_defaults(settings["data"], LATER_DATA_SETTINGS)
    return without_later_defaults({k: v for k, v in settings.items() if k not in ("name", "tag")}, LATER_SETTINGS)


def control_masks(linears: dict, cfg: DictConfig, seed: int) -> dict:
    """{name: bool mask} of the keep_fraction entries a control keeps: random (seeded) or largest |w|."""
    if cfg.keep_score == "random":
        scores = random_scores({name: m.weight.shape for name, m in linears.items()}, seed)
    elif cfg.keep_score == "magnitude":
        scores = magnitude_scores((name, m.weight) for name, m in linears.items())
    else:
        raise ValueError(f"patch.keep_score={cfg.keep_score} is no control. Allowed: random, magnitude")
    return {name: m.cpu() for name, m in top_fraction_masks(scores, cfg.keep_fraction, cfg.mask_scope).items()}


class AwqSafetyPatch(Patch):
    version = 1
    reads = (*PROMPT_KEYS, "quant", "calib")  # it runs the AWQ quantizer itself, on calib.activation

    @classmethod
    def validate(cls, cfg: DictConfig, quant_cfg: DictConfig) -> None:
        if quant_cfg.name != "awq" or quant_cfg.backend != "llmcompressor":
            raise UnsupportedCombinationError(
                f"patch={cfg.name} is the AWQ variant of Q-resafe: it needs quant=awq quant.backend=llmcompressor "
                f"(got quant={quant_cfg.name} backend={quant_cfg.backend}); for other quantizers use patch=qresafe"
            )
        if not 0.0 < cfg.keep_fraction < 1.0:
            raise ValueError(f"patch.keep_fraction={cfg.keep_fraction}: the share of weights kept 16-bit, in (0, 1)")
        check_choice("mask_scope", cfg.mask_scope, MASK_SCOPES)
        check_choice("keep_score", cfg.keep_score, MASK_SCORES)

    @classmethod
    def check_data(cls, cell_cfg: DictConfig) -> None:
        patch_prompts(cell_cfg)

    def plan(self, ctx: PatchContext) -> Plan[PatchResult] | PatchResult:
        cfg, cell = ctx.cfg.patch, ctx.cfg
        quantizer = QUANTIZERS.get(cell.quant.name)
        prompts, prompt_facts = patch_prompts(cell, frozenset(training_prompts(ctx.fp.path)))
        system_prompt = system_prompt_for(cell)
        spec = {
            "patch": spec_settings(cfg),
            "quant": quantizer.spec(cell.quant, cell.calib),
            "system_prompt": system_prompt,
            "prompts": content_key(prompts),
            "seed": cell.seed,
        }
        if quant_seed(cell) != cell.seed:  # keys unchanged where the AWQ run takes the cell's seed
            spec["quant_seed"] = quant_seed(cell)

        def build(out: Path) -> None:
            with measure() as cost:
                if cfg.keep_score == "snip":
                    masks, snip_facts = self._safety_masks(ctx, prompts, system_prompt)
                else:  # a control: picked in keep(), on the weights about to be rounded
                    masks, snip_facts = {}, None
                records = load_records(cell.calib.activation.dataset, cell.paths.data_dir, cell.paths.cache_dir)
                kept: dict = {}

                def keep(model) -> dict:  # runs on the calibrated, not yet compressed model
                    if not masks:
                        masks.update(control_masks(named_linears(model), cfg, cell.seed))
                    modules = dict(model.named_modules())
                    for name, mask in masks.items():
                        index = mask.flatten().nonzero().squeeze(1)
                        kept[name] = (index, modules[name].weight.detach().view(-1)[index].cpu())
                    return {}

                info = quantizer().quantize(
                    ctx.fp.path,
                    out,
                    cell.quant,
                    quantizer.data_config(cell.calib),
                    records,
                    quant_seed(cell),  # as the quantize stage: quant.seed fixes the AWQ run across patch seeds
                    on_calibrated=keep,
                )
                sidecar_bytes = save_kept_weights(kept, out)
            entries = sum(m.numel() for m in masks.values())
            facts = {
                "method": cfg.name,
                "keep_fraction": cfg.keep_fraction,
                "keep_score": cfg.keep_score,
                "prompts": prompt_facts,
                **({"snip": snip_facts} if snip_facts else {}),
                "kept_entries": sum(int(m.sum()) for m in masks.values()),
                "weight_entries": entries,
                "trainable_params": 0,
                "updatable_entries": 0,
                "sizes": {
                    "merged_checkpoint_bytes": checkpoint_bytes(out),
                    "kept_weights_bytes": sidecar_bytes,
                    "awq_checkpoint_bytes": info["checkpoint_bytes"],
                },
                "cost": cost.cost_facts(),
            }
            write_json_atomic(out / "patch_info.json", facts)

        def read(art) -> PatchResult:
            info = json.loads((art.path / "patch_info.json").read_text())
            info.update(artifact=art.key, cached=not art.built)
            return PatchResult(ModelRef(f"{ctx.fp.name}.{cell.quant.tag}.{cfg.tag}", str(art.path), art.key), info)

        return Plan("patch", spec, build, read, [ctx.fp.key], self.version)

    def _safety_masks(self, ctx: PatchContext, prompts: list[str], system_prompt) -> tuple[dict, dict]:
        cfg = ctx.cfg.patch
        responses, generated = model_responses(
            ctx.fp,
            prompts,
            ctx.requests,
            ctx.device,
            max_new_tokens=cfg.data.max_new_tokens,
            system_prompt=system_prompt,
        )
        kept, dropped = [{"prompt": p, "chosen": r} for p, r in zip(prompts, responses)], 0
        if cfg.data.safe_chosen_only:  # the targets are refusals: drop what the FP model answered
            kept, dropped = drop_unsafe_chosen(kept, set(prompts), ctx.cfg.judge)
        if not kept:
            raise ValueError(
                f"patch={cfg.name}: the FP model refused none of the {len(prompts)} patch prompts, so "
                f"there is no safe target to score; use other prompts or data.safe_chosen_only=false"
            )
        tokenizer = load_tokenizer(ctx.fp.path)
        items = [
            tokenize_example(
                tokenizer,
                {"prompt": k["prompt"], "response": k["chosen"]},
                cfg.max_length,
                cfg.max_response_tokens,
                system_prompt,
            )
            for k in kept
        ]
        pad_id = tokenizer.pad_token_id  # load_tokenizer falls back to eos
        batches = [
            collate(items[i : i + cfg.snip_batch_size], pad_id) for i in range(0, len(items), cfg.snip_batch_size)
        ]
        model = load_model(ctx.fp.path, ctx.device)
        scores = snip_scores(model, batches, desc="SNIP on the FP model (safety-critical weights)")
        del model
        masks = top_fraction_masks(scores, cfg.keep_fraction, cfg.mask_scope)
        return {name: m.cpu() for name, m in masks.items()}, {
            "examples": len(items),
            "fp_generated_now": generated,
            "unsafe_fp_dropped": dropped,
        }
