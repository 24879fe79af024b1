"""The evaluate stage: generate on every suite's prompts, judge, score; cached as one artifact.

The artifact key covers the model checkpoint key, the frozen protocol (eval config, suite
versions, judge identity), the FP model that scores fluency and the training prompts removed from
the evaluation sets, so the FP model's evaluation is shared by every cell of a sweep.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from functools import lru_cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from qresafe_exp.cache import ArtifactCache, RequestCache, content_key, write_json_atomic
from qresafe_exp.data import load_records
from qresafe_exp.evals.degeneration import degeneration_signals
from qresafe_exp.evals.perplexity import cached_perplexities
from qresafe_exp.evals.protocols import system_prompt_for
from qresafe_exp.evals.suites import SUITES
from qresafe_exp.generate import GenerationSpec, HFEngine, generate_cached, render_chat
from qresafe_exp.judges import build_judge
from qresafe_exp.models import ModelRef, load_model, load_tokenizer
from qresafe_exp.stats import geometric_mean_ci, rate

log = logging.getLogger(__name__)
EVAL_STAGE_VERSION = 2


def eval_spec(cfg: DictConfig, scorer: ModelRef | None, exclude: frozenset[str]) -> dict:
    judge = build_judge(cfg.judge)
    return {
        "eval": OmegaConf.to_container(cfg.eval, resolve=True),
        "suites": {name: SUITES.get(name).version for name in cfg.eval.suites},
        "judge": judge.identity,
        "system_prompt": system_prompt_for(cfg),
        "fluency_scorer": scorer.key if scorer is not None else None,
        "excluded_training_prompts": content_key(sorted(exclude)) if exclude else None,
    }


def score_suite(suite, rows: list[dict], removed: int) -> dict:
    flag = "jailbroken" if suite.kind == "harmful" else "refused"
    clean = [r for r in rows if not r["degenerate"]]
    perplexities = [r["fp_perplexity"] for r in rows if r.get("fp_perplexity") is not None]
    return {
        "suite": suite.name, "metric": suite.metric, "version": suite.version,
        suite.metric: rate([r[flag] for r in rows]),
        f"{suite.metric}_non_degenerate": rate([r[flag] for r in clean]),
        "degenerate": rate([r["degenerate"] for r in rows]),
        "fp_perplexity_median": round(statistics.median(perplexities), 3) if perplexities else None,
        "removed_overlapping_training": removed,
    }


def _judge_rows(suite, judge, rows: list[dict], requests: RequestCache) -> None:
    if suite.kind == "overrefusal":
        for row in rows:
            row.update(suite.rule(row["response"]))
        return
    pairs = [(r["prompt"], r["response"]) for r in rows]
    if not judge.cache_verdicts:
        verdicts = judge.judge(pairs)
    else:
        verdicts = requests.fill(f"verdict/{content_key(judge.identity)}",
                                 [content_key(p, length=32) for p in pairs],
                                 lambda todo: judge.judge([pairs[i] for i in todo]))
    for row, verdict in zip(rows, verdicts):
        row.update(verdict)


def _reference_perplexity_rows(name, chosen, texts, tokenizer, engine, model_key, requests, cfg) -> list[dict]:
    """Perplexity of each reference answer (its first ``max_new_tokens`` tokens) under the model."""
    cap = cfg.eval.max_new_tokens
    references = [tokenizer.decode(tokenizer(r["response"], add_special_tokens=False)["input_ids"][:cap])
                  for r in chosen]
    values = cached_perplexities(lambda: engine().model, tokenizer, model_key, texts, references, requests,
                                 cfg.eval.batch_size, desc=f"reference perplexity {name}")
    return [{"suite": name, "id": r["id"], "prompt": r["prompt"], "reference": ref, "perplexity": v}
            for r, ref, v in zip(chosen, references, values)]


def evaluate(model: ModelRef, cfg: DictConfig, artifacts: ArtifactCache, requests: RequestCache,
             device, label: str, scorer: ModelRef | None = None,
             exclude: frozenset[str] = frozenset()) -> dict:
    """Return {'key', 'path', 'scores', 'generated', 'seconds', 'cached'} for ``model``.

    ``scorer`` is the FP model whose perplexity of each response feeds the degeneration guard;
    ``exclude`` holds normalised training prompts, removed from every evaluation set.
    """
    if cfg.eval.degeneration.max_fp_perplexity is None:
        scorer = None
    spec = eval_spec(cfg, scorer, exclude)
    stats = {"generated": 0}

    def build(out: Path) -> None:
        started = time.time()
        tokenizer = load_tokenizer(model.path)

        @lru_cache(maxsize=1)
        def engine():
            log.info("loading %s for generation on %s", label, device)
            return HFEngine(load_model(model.path, device), tokenizer, cfg.eval.batch_size)

        @lru_cache(maxsize=1)
        def fp_model():
            if scorer.key == model.key:
                return engine().model
            log.info("loading the FP model to score fluency")
            return load_model(scorer.path, device)

        judge = build_judge(cfg.judge)
        gen = GenerationSpec(max_new_tokens=cfg.eval.max_new_tokens, system_prompt=system_prompt_for(cfg))
        all_rows, scores = [], {}
        for name in cfg.eval.suites:
            suite = SUITES.get(name)
            records = load_records(suite.dataset, cfg.paths.data_dir, cfg.paths.cache_dir)
            chosen, removed = suite.select(records, cfg.eval.limit, cfg.eval.sample_seed, exclude)
            if removed:
                log.info("%s: removed %d prompts that the model was trained on", name, removed)
            texts = [render_chat(tokenizer, r["prompt"], gen.system_prompt) for r in chosen]
            if suite.kind == "utility":
                rows = _reference_perplexity_rows(name, chosen, texts, tokenizer, engine, model.key, requests, cfg)
                scores[name] = {"suite": name, "metric": suite.metric, "version": suite.version,
                                suite.metric: geometric_mean_ci([r["perplexity"] for r in rows]),
                                "removed_overlapping_training": removed}
                all_rows.extend(rows)
                continue
            responses, generated = generate_cached(engine, model.key, texts, gen, requests,
                                                   desc=f"{label} {name}")
            stats["generated"] += generated
            perplexities = [None] * len(texts)
            if scorer is not None:
                perplexities = cached_perplexities(fp_model, tokenizer, scorer.key, texts, responses, requests,
                                                   cfg.eval.batch_size, desc=f"fp perplexity {name}")
            rows = []
            for rec, response, ppl in zip(chosen, responses, perplexities):
                signals = degeneration_signals(response, cfg.eval.degeneration, ppl)
                rows.append({"suite": name, "id": rec["id"], "prompt": rec["prompt"],
                             "response": response, **signals})
            _judge_rows(suite, judge, rows, requests)
            scores[name] = score_suite(suite, rows, removed)
            all_rows.extend(rows)
        with open(out / "samples.jsonl", "w") as handle:
            for row in all_rows:
                handle.write(json.dumps(row) + "\n")
        write_json_atomic(out / "scores.json", {"scores": scores, "seconds": round(time.time() - started, 2),
                                                "generated": stats["generated"]})

    art = artifacts.get_or_build("eval", spec, build, upstream=[model.key], version=EVAL_STAGE_VERSION)
    result = json.loads((art.path / "scores.json").read_text())
    return {"key": art.key, "path": str(art.path), "scores": result["scores"],
            "seconds": result["seconds"], "generated": stats["generated"], "cached": not art.built}
