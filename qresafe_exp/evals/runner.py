"""The evaluate stage: run every configured suite on one model, score it; its plan (qresafe_exp/stages.py)
is cached as one artifact by the pipeline (pipeline.evaluate).

The artifact key covers the model checkpoint key, the frozen protocol (eval config, its version,
suite versions, judge identity, the user prompt file's content), the FP model that scores fluency
and the training prompts removed from the evaluation sets, so the FP model's evaluation is shared by
every cell of a sweep. Generations and costly verdicts are also cached per request, so a killed run
resumes where it stopped and a new judge re-scores without regenerating.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from functools import lru_cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from qresafe_exp.cache import content_key, write_json_atomic
from qresafe_exp.data import load_records
from qresafe_exp.data.hub import is_hub_uri
from qresafe_exp.data.loaders import user_prompt_table
from qresafe_exp.data.registry import hub_snapshot
from qresafe_exp.devices import resolve_device
from qresafe_exp.engines import EngineFactory, generation_dtype
from qresafe_exp.evals.context import EvalContext
from qresafe_exp.evals.protocols import protocol_of, system_prompt_for
from qresafe_exp.evals.suites import SUITES
from qresafe_exp.judges import build_judge
from qresafe_exp.models import ModelRef, load_model, load_tokenizer
from qresafe_exp.stages import EvalResult, Plan, StageContext

log = logging.getLogger(__name__)
EVAL_STAGE_VERSION = 3


def user_prompts_path(cfg: DictConfig) -> Path:
    """The user's prompt file; for a hf:// URI, the JSONL snapshot of its split (data/hub.py)."""
    if not cfg.get("prompts"):
        raise ValueError(
            "suite 'prompts' evaluates a prompt file of your own: give prompts=path/to/file.csv "
            "(or .json/.jsonl/.parquet, or hf://owner/name[:split]) and prompts_column=<the column "
            "holding the prompts>"
        )
    if is_hub_uri(cfg.prompts):
        return hub_snapshot(cfg.prompts, cfg.paths.cache_dir, key="prompts")
    path = Path(cfg.prompts).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"prompts={cfg.prompts}: no such file. Give the path of a .csv/.json/.jsonl/.parquet "
            "file, or hf://owner/name[:split]"
        )
    return path


def user_prompts(cfg: DictConfig) -> list[dict]:
    return user_prompt_table(
        user_prompts_path(cfg), cfg.prompts_column, cfg.get("prompts_category_column"), source=cfg.prompts
    )


def suite_records(suite, cfg: DictConfig) -> list[dict]:
    if suite.params.get("own_data"):  # lm_eval: the harness loads its tasks' documents itself
        return []
    if suite.name == "prompts":
        return user_prompts(cfg)
    return load_records(suite.dataset, cfg.paths.data_dir, cfg.paths.cache_dir)


def suite_limit(cfg: DictConfig, name: str):
    if SUITES.get(name).params.get("complete"):
        return None
    limits = cfg.eval.get("limits") or {}
    return limits[name] if name in limits else cfg.eval.limit


def eval_spec(cfg: DictConfig, scorer: ModelRef | None, exclude: frozenset[str]) -> dict:
    protocol = protocol_of(cfg)
    settings = OmegaConf.to_container(cfg.eval, resolve=True)
    if "lm_eval" not in cfg.eval.suites:  # added later; unused without the suite: earlier keys stay as they were
        settings.pop("lm_eval", None)
    spec = {
        "eval": settings,
        "protocol": {"name": protocol.name, "version": protocol.version},
        "suites": {name: SUITES.get(name).version for name in cfg.eval.suites},
        "judge": build_judge(cfg.judge).identity,
        "system_prompt": system_prompt_for(cfg),
        "fluency_scorer": scorer.key if scorer is not None else None,
        "excluded_training_prompts": content_key(sorted(exclude)) if exclude else None,
    }
    if cfg.engine.name != "hf":  # transformers' greedy output keeps the keys it always had
        spec["engine"] = cfg.engine.name
    if cfg.engine.name == "llamacpp" and cfg.engine.gguf_dtype != "f32":  # FP cells converted to f16
        spec["engine_gguf_dtype"] = cfg.engine.gguf_dtype
    dtype = generation_dtype(cfg.engine, resolve_device(cfg.device))
    if dtype is not None:  # scores of a model run in another dtype (log-prob suites included)
        spec["engine_dtype"] = str(dtype).removeprefix("torch.")
    if "lm_eval" in cfg.eval.suites:
        from qresafe_exp.evals.lm_harness import key_parts

        spec["lm_eval"] = key_parts(cfg)
    if "prompts" in cfg.eval.suites:
        spec["prompts_file"] = {
            "sha": content_key(user_prompts_path(cfg).read_bytes()),
            "column": cfg.prompts_column,
            "category": cfg.get("prompts_category_column"),
        }
    return spec


def eval_plan(
    model: ModelRef,
    cfg: DictConfig,
    ctx: StageContext,
    label: str,
    scorer: ModelRef | None = None,
    exclude: frozenset[str] = frozenset(),
) -> Plan[EvalResult]:
    """The evaluation of ``model`` (kind ``eval``): every suite, generated, judged and scored.

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

        def load_for_generation(path, dev, dtype=None):
            log.info("loading %s for generation on %s%s", label, dev, f" in {dtype}" if dtype else "")
            return load_model(path, dev, dtype=dtype)

        engine = EngineFactory(
            cfg.engine,
            model.path,
            ctx.device,
            tokenizer,
            load_for_generation,
            seed=cfg.seed,
            artifacts=ctx.artifacts,
            model_key=model.key,
        )

        @lru_cache(maxsize=1)
        def fp_model():
            if scorer.key == model.key:
                return engine().model
            log.info("loading the FP model to score fluency")
            return load_model(scorer.path, ctx.device)

        ectx = EvalContext(
            cfg=cfg,
            tokenizer=tokenizer,
            engine=engine,
            model_key=model.key,
            requests=ctx.requests,
            judge=build_judge(cfg.judge),
            protocol=protocol_of(cfg),
            system_prompt=system_prompt_for(cfg),
            label=label,
            fp_model=fp_model if scorer is not None else None,
            scorer_key=scorer.key if scorer is not None else None,
            stats=stats,
        )
        scores = {}
        with open(out / "samples.jsonl", "w") as samples, contextlib.closing(engine):
            for name in cfg.eval.suites:
                suite = SUITES.get(name)
                chosen, removed = suite.select(
                    suite_records(suite, cfg), suite_limit(cfg, name), cfg.eval.sample_seed, exclude
                )
                if removed:
                    log.info("%s: removed %d prompts that the model was trained on", name, removed)
                rows, block = suite.runner()(suite, chosen, ectx)
                block["removed_overlapping_training"] = removed
                scores[name] = block
                failures = block.get("judge_failures") or {}
                if failures.get("n"):
                    log.warning(
                        "%s: %d of %d judge verdicts failed (%s), e.g. %s",
                        name,
                        failures["n"],
                        failures["of"],
                        failures["kinds"],
                        failures["example"],
                    )
                for row in rows:
                    samples.write(json.dumps(row) + "\n")
        write_json_atomic(
            out / "scores.json",
            {"scores": scores, "seconds": round(time.time() - started, 2), "generated": stats["generated"]},
        )

    def read(art) -> EvalResult:
        result = json.loads((art.path / "scores.json").read_text())
        return EvalResult(
            key=art.key,
            path=str(art.path),
            scores=result["scores"],
            seconds=result["seconds"],
            generated=stats["generated"],
            cached=not art.built,
            judge_failures={
                name: b["judge_failures"]["n"]
                for name, b in result["scores"].items()
                if (b.get("judge_failures") or {}).get("n")
            },
        )

    return Plan("eval", spec, build, read, [model.key], EVAL_STAGE_VERSION)
