"""The evaluate stage: generate on every suite's prompts, judge, score; cached as one artifact.

The artifact key covers the model checkpoint key, the frozen protocol (eval config, suite
versions, judge identity), so the FP model's evaluation is shared by every cell of a sweep.
"""

from __future__ import annotations

import json
import logging
import time
from functools import lru_cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from qresafe_exp.cache import ArtifactCache, RequestCache, content_key, write_json_atomic
from qresafe_exp.data import load_records
from qresafe_exp.evals.degeneration import degeneration_signals
from qresafe_exp.evals.suites import SUITES
from qresafe_exp.generate import GenerationSpec, HFEngine, generate_cached, render_chat
from qresafe_exp.judges import build_judge
from qresafe_exp.models import ModelRef, load_model, load_tokenizer
from qresafe_exp.stats import rate

log = logging.getLogger(__name__)
EVAL_STAGE_VERSION = 1


def eval_spec(cfg: DictConfig) -> dict:
    judge = build_judge(cfg.judge)
    return {
        "eval": OmegaConf.to_container(cfg.eval, resolve=True),
        "suites": {name: SUITES.get(name).version for name in cfg.eval.suites},
        "judge": judge.identity,
        "system_prompt": cfg.model.system_prompt,
    }


def score_suite(suite, rows: list[dict]) -> dict:
    flag = "jailbroken" if suite.kind == "harmful" else "refused"
    clean = [r for r in rows if not r["degenerate"]]
    return {
        "suite": suite.name, "metric": suite.metric, "version": suite.version,
        suite.metric: rate([r[flag] for r in rows]),
        f"{suite.metric}_non_degenerate": rate([r[flag] for r in clean]),
        "degenerate": rate([r["degenerate"] for r in rows]),
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
        ns = f"verdict/{content_key(judge.identity)}"
        keys = [content_key(p, length=32) for p in pairs]
        found = requests.get_many(ns, keys)
        todo = [i for i, k in enumerate(keys) if k not in found]
        if todo:
            new = judge.judge([pairs[i] for i in todo])
            requests.put_many(ns, {keys[i]: v for i, v in zip(todo, new)})
            found.update({keys[i]: v for i, v in zip(todo, new)})
        verdicts = [found[k] for k in keys]
    for row, verdict in zip(rows, verdicts):
        row.update(verdict)


def evaluate(model: ModelRef, cfg: DictConfig, artifacts: ArtifactCache, requests: RequestCache,
             device, label: str) -> dict:
    """Return {'key', 'path', 'scores', 'generated', 'seconds'} for ``model`` under ``cfg.eval``."""
    spec = eval_spec(cfg)
    stats = {"generated": 0}

    def build(out: Path) -> None:
        started = time.time()
        tokenizer = load_tokenizer(model.path)

        @lru_cache(maxsize=1)
        def engine():
            log.info("loading %s for generation on %s", label, device)
            return HFEngine(load_model(model.path, device), tokenizer, cfg.eval.batch_size)

        judge = build_judge(cfg.judge)
        gen = GenerationSpec(max_new_tokens=cfg.eval.max_new_tokens, system_prompt=cfg.model.system_prompt)
        all_rows, scores = [], {}
        for name in cfg.eval.suites:
            suite = SUITES.get(name)
            records = load_records(suite.dataset, cfg.paths.data_dir, cfg.paths.cache_dir)
            chosen = suite.select(records, cfg.eval.limit, cfg.eval.sample_seed)
            texts = [render_chat(tokenizer, r["prompt"], gen.system_prompt) for r in chosen]
            responses, generated = generate_cached(engine, model.key, texts, gen, requests,
                                                   desc=f"{label} {name}")
            stats["generated"] += generated
            rows = []
            for rec, response in zip(chosen, responses):
                signals = degeneration_signals(response, cfg.eval.degeneration)
                rows.append({"suite": name, "id": rec["id"], "prompt": rec["prompt"],
                             "response": response, **signals})
            _judge_rows(suite, judge, rows, requests)
            scores[name] = score_suite(suite, rows)
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
