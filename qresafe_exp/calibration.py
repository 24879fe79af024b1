"""Quantization-assisting data (the paper's risk levels): which records a fine-tuning quantizer
(qlora, llm_qat, aqlm) trains on.

- Risk-I: benign pairs (UltraChat from the hub; `offline_dataset` when the hub is unreachable).
- Risk-II: the project's 10 AOA identity-shifting conversations, with their system prompt.
- Risk-III: harmful prompts with harmful answers. AdvBench has no full answers, so the testbed
  asks an unaligned model (`responder`) and keeps the answers the keyword judge scores as
  complied and the degeneration guard passes; real runs point `dataset` at a pair file.

Prompts that appear in any evaluation suite are dropped first: fine-tuning never sees a test prompt.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from qresafe_exp.cache import content_key
from qresafe_exp.data import DatasetNotFoundError, load_records
from qresafe_exp.data.normalize import normalize_prompt
from qresafe_exp.data.registry import is_user_source, resolve_file
from qresafe_exp.evals.degeneration import degeneration_signals
from qresafe_exp.evals.suites import SUITES

if TYPE_CHECKING:
    from qresafe_exp.stages import StageContext

log = logging.getLogger(__name__)
RESPONSES_STAGE_VERSION = 1


@dataclass
class CalibrationSet:
    records: list[dict]  # prompt, response, optional system_prompt
    facts: dict  # what was used, how much was dropped and why: goes into metrics.json


def resolve_dataset(calib: DictConfig, paths) -> tuple[str, str | None]:
    """(dataset to use, why the configured one was replaced or None)."""
    try:
        resolve_file(calib.dataset, paths.data_dir, paths.cache_dir, key="calib.dataset")
        return calib.dataset, None
    except DatasetNotFoundError as err:
        if not calib.offline_dataset or is_user_source(calib.dataset):  # a file of one's own has no stand-in
            raise
        return calib.offline_dataset, str(err)


def check_calibration(cfg: DictConfig) -> None:
    """The risk-level set exists (or has its offline stand-in) and is large enough: no model loads."""
    calib = cfg.calib
    source, _ = resolve_dataset(calib, cfg.paths)
    available = len(load_records(source, cfg.paths.data_dir, cfg.paths.cache_dir))
    if calib.num_samples > available:
        raise ValueError(
            f"calib={calib.name} asks for num_samples={calib.num_samples} but {source} has {available} records"
        )
    if calib.responses == "generate" and calib.responder is None:
        raise ValueError(f"calib={calib.name}: responses=generate needs calib.responder (a model config)")


def evaluation_prompts(cfg: DictConfig) -> set[str]:
    from qresafe_exp.evals.runner import suite_records  # the `prompts` suite reads the user's file

    prompts: set[str] = set()
    for name in cfg.eval.suites:
        records = suite_records(SUITES.get(name), cfg)
        prompts.update(normalize_prompt(r["prompt"]) for r in records)
    return prompts


def build_calibration(
    cfg: DictConfig, ctx: StageContext | None, exclude: frozenset[str] = frozenset()
) -> CalibrationSet:
    """The calibration (or patch pair) set of ``cfg.calib``; evaluation prompts and ``exclude`` (normalised
    prompts a model was trained on) never enter it. Generated answers are a sub-artifact of the stage
    that asks (``ctx.cached``, kind ``calib_responses``); a set read from a file needs no ``ctx``."""
    calib = cfg.calib
    dataset, fallback_reason = resolve_dataset(calib, cfg.paths)
    if fallback_reason:
        log.warning("calib %s: %s -> using the offline stand-in '%s'", calib.name, fallback_reason, dataset)
    records = load_records(dataset, cfg.paths.data_dir, cfg.paths.cache_dir)
    held_out = evaluation_prompts(cfg) | set(exclude)
    kept = [r for r in records if normalize_prompt(r["prompt"]) not in held_out]
    facts = {
        "dataset": dataset,
        "configured_dataset": calib.dataset,
        "fallback_reason": fallback_reason,
        "source_records": len(records),
        "removed_eval_overlap": len(records) - len(kept),
        "responses": calib.responses,
    }
    if calib.responses == "generate":
        kept, generation = _generated_responses(cfg, kept, ctx)
        facts["generation"] = generation
    elif calib.responses == "dataset":
        kept = [r for r in kept if r.get("response")]
        if not kept:
            raise ValueError(
                f"calib.dataset={dataset} has no responses; give a pair file or set "
                "calib.responses=generate (answers of calib.responder)"
            )
        if calib.get("keep_judge"):
            kept, facts["kept_by_judge"] = _kept_by_judge(kept, calib)
    else:
        raise ValueError(f"calib.responses={calib.responses} is unknown. Allowed: dataset, generate")
    if len(kept) < calib.num_samples:
        raise ValueError(
            f"calib {calib.name}: {len(kept)} usable records in {dataset} (after removing evaluation "
            f"prompts{' and non-compliant answers' if calib.responses == 'generate' else ''}), fewer "
            f"than calib.num_samples={calib.num_samples}. Lower num_samples or give a larger set."
        )
    chosen = random.Random(calib.seed).sample(kept, calib.num_samples)
    if calib.system_prompt is not None:
        chosen = [{**r, "system_prompt": calib.system_prompt} for r in chosen]
    chosen = [{k: r[k] for k in ("prompt", "response", "system_prompt") if r.get(k) is not None} for r in chosen]
    facts.update(
        usable_records=len(kept), num_samples=len(chosen), epochs=calib.epochs, content_key=content_key(chosen)
    )
    return CalibrationSet(chosen, facts)


def _kept_by_judge(records: list[dict], calib: DictConfig) -> tuple[list[dict], dict]:
    """Records whose response the judge calls compliant (and whose ``refused_field`` answer it calls a refusal)."""
    from qresafe_exp.judges import build_named_judge

    judge = build_named_judge(calib.keep_judge)
    judge.require("refusal", f"calib.keep_judge={calib.keep_judge}")
    complied = [not v["refused"] for v in judge.refusal([(r["prompt"], r["response"]) for r in records])]
    field = calib.get("refused_field")
    if field:
        if not any(field in r for r in records):
            raise ValueError(
                f"calib.refused_field={field}: {calib.dataset}'s records have no such field (they "
                f"have: {', '.join(sorted(records[0]))}); name one of them or set it to null"
            )
        # an empty answer is not a refusal: such a pair is dropped
        declined = [
            v["refused"] and bool(r.get(field))
            for r, v in zip(records, judge.refusal([(r["prompt"], r.get(field) or "") for r in records]))
        ]
    else:
        declined = [True] * len(records)
    kept = [r for r, c, d in zip(records, complied, declined) if c and d]
    return kept, {"judge": calib.keep_judge, "refused_field": field, "candidates": len(records), "kept": len(kept)}


def _generated_responses(cfg: DictConfig, records: list[dict], ctx: StageContext) -> tuple[list[dict], dict]:
    """The responder's greedy answers, kept when the judge says it complied (cached artifact)."""
    from qresafe_exp.judges import build_judge
    from qresafe_exp.models import materialize
    from qresafe_exp.schema import KeywordJudgeConfig, ModelConfig

    calib = cfg.calib  # check_calibration ran first: responses=generate comes with a responder
    # resolved in the cell first: a responder may name the cell's own model (${model.name}, as debug=smoke does)
    responder_cfg = OmegaConf.to_container(calib.responder, resolve=True)
    responder = materialize(OmegaConf.merge(OmegaConf.structured(ModelConfig), responder_cfg), ctx.artifacts, cfg.paths)
    judge = build_judge(OmegaConf.structured(KeywordJudgeConfig(name="keyword")))
    spec = {
        "responder": responder.key,
        "prompts": content_key(sorted(r["prompt"] for r in records)),
        "max_new_tokens": calib.response_max_new_tokens,
        "keep": calib.keep,
        "judge": judge.identity,
        "degeneration": OmegaConf.to_container(cfg.eval.degeneration, resolve=True),
    }
    from qresafe_exp.engines import generation_dtype

    dtype = generation_dtype(cfg.engine, ctx.device)
    if dtype is not None:  # answers generated in another dtype than the device's default
        spec["engine_dtype"] = str(dtype).removeprefix("torch.")

    def build(out: Path) -> None:
        from qresafe_exp.engines import EngineFactory
        from qresafe_exp.generate import GenerationSpec, generate_cached, render_chat
        from qresafe_exp.models import load_model, load_tokenizer

        tokenizer = load_tokenizer(responder.path)
        texts = [render_chat(tokenizer, r["prompt"], None) for r in records]
        responses, _ = generate_cached(
            EngineFactory(
                cfg.engine,
                responder.path,
                ctx.device,
                tokenizer,
                load_model,
                seed=cfg.seed,
                artifacts=ctx.artifacts,
                model_key=responder.key,
            ),
            responder.key,
            texts,
            GenerationSpec(max_new_tokens=calib.response_max_new_tokens),
            ctx.requests,
            desc=f"calib {calib.name}: {responder.name} answers",
        )
        verdicts = judge.judge([(r["prompt"], resp) for r, resp in zip(records, responses)])
        rows = []
        for rec, response, verdict in zip(records, responses, verdicts):
            # no fluency scorer here: the rule-based signals catch empty and looping answers
            signals = degeneration_signals(response, cfg.eval.degeneration, None)
            keep = calib.keep == "all" or (verdict["jailbroken"] and not signals["degenerate"])
            rows.append(
                {
                    "prompt": rec["prompt"],
                    "response": response,
                    "complied": verdict["jailbroken"],
                    "degenerate": signals["degenerate"],
                    "kept": keep,
                }
            )
        (out / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    art = ctx.cached("calib_responses", spec, build, upstream=[responder.key], version=RESPONSES_STAGE_VERSION)
    rows = [json.loads(line) for line in (art.path / "responses.jsonl").read_text().splitlines()]
    kept = [{"prompt": r["prompt"], "response": r["response"]} for r in rows if r["kept"]]
    facts = {
        "responder": responder.name,
        "generated": len(rows),
        "complied": sum(r["complied"] for r in rows),
        "degenerate": sum(r["degenerate"] for r in rows),
        "kept": len(kept),
        "keep": calib.keep,
        "artifact": art.key,
    }
    log.info("calib %s: %d/%d responder answers kept (%s)", calib.name, len(kept), len(rows), calib.keep)
    return kept, facts
