"""Suite ``lm_eval``: EleutherAI's lm-evaluation-harness on the cell's model, as this project loads it.

The harness gets the model object the other suites score (``ctx.engine().model``: quantized weights,
kept 16-bit weights, an unmerged patch delta or adapter all applied by ``models.load_model``) wrapped in
its ``HFLM``, so its numbers are about the cell, not about a checkpoint the harness would load itself.
Tasks, few-shot and limit come from ``eval.lm_eval``. Standard task names (mmlu, arc_easy, hellaswag,
truthfulqa_mc2, wikitext, ...) pass through and need the Hub for their data; the local tasks
(``lm_eval_tasks/*.yaml``) are harness task YAMLs whose data files are written at run time from the
project's datasets, so they run offline. Each task's metrics, with the harness's stderr, go to the
block's ``tasks``.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import json
import math
import random
from functools import lru_cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from qresafe_exp.cache import content_key, write_text_atomic
from qresafe_exp.data import load_records

LOCAL_TASKS_DIR = Path(__file__).parent / "lm_eval_tasks"
INSTALL_HINT = (
    "suite lm_eval needs lm-evaluation-harness: pip install -e '.[lmeval]' "
    "(make setup installs it; the pin is in pyproject.toml)"
)
FEWSHOT_DOCS = 5  # held out of a local multiple-choice task for its few-shot examples


def harness_version() -> str | None:
    try:
        return importlib.metadata.version("lm_eval")
    except importlib.metadata.PackageNotFoundError:
        return None


def key_parts(cfg: DictConfig) -> dict:
    """What the evaluation's cache key needs beyond eval.lm_eval: the harness's version (another release
    can score a task differently) and the content of the user's task YAMLs (a path or include_path)."""
    files = [Path(t).expanduser() for t in cfg.eval.lm_eval.tasks if t.endswith((".yaml", ".yml"))]
    if cfg.eval.lm_eval.include_path:
        files += sorted(Path(cfg.eval.lm_eval.include_path).expanduser().rglob("*.y*ml"))
    return {
        "version": harness_version(),
        "task_files": {str(f): content_key(f.read_bytes()) for f in files if f.is_file()},
    }


# ---------------------------------------------------------------- local tasks: data from the project
def _seeded(rows: list[dict], seed: int) -> list[dict]:
    # the harness's `limit` takes the first N documents; the offline files are ordered by topic
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows


def _safetybench_zh(data_dir, cache_dir, seed: int) -> dict[str, list[dict]]:
    from qresafe_exp.evals.mcq import LETTERS, attach_answers

    answers = load_records("safetybench_zh_answers", data_dir, cache_dir)[0]
    records = attach_answers(load_records("safetybench_zh", data_dir, cache_dir), answers, "safetybench_zh_answers")
    rows = _seeded(
        [
            {
                "id": r["id"],
                "category": r.get("category"),
                "question": r["question"],
                "options": [str(o) for o in r["options"]],
                "letters": list(LETTERS[: len(r["options"])]),
                "answer": r["answer"],
            }
            for r in records
        ],
        seed,
    )
    return {"fewshot": rows[:FEWSHOT_DOCS], "test": rows[FEWSHOT_DOCS:]}


def _alpaca_eval_ppl(data_dir, cache_dir, seed: int) -> dict[str, list[dict]]:
    rows = [{"id": r["id"], "text": r["response"]} for r in load_records("alpaca_eval", data_dir, cache_dir)]
    return {"test": _seeded([r for r in rows if r["text"].strip()], seed)}


# task name -> (the project datasets it reads, the builder of its data files)
LOCAL_TASKS = {
    "qresafe_safetybench_zh": (("safetybench_zh", "safetybench_zh_answers"), _safetybench_zh),
    "qresafe_alpaca_eval_ppl": (("alpaca_eval",), _alpaca_eval_ppl),
}


def local_task_config(name: str, cfg: DictConfig) -> dict:
    """The shipped task YAML of ``name`` with its data files written (once per content) under the cache
    directory and their paths filled in: an inline task config for the harness."""
    from lm_eval.tasks._yaml_loader import load_yaml

    task = load_yaml(LOCAL_TASKS_DIR / f"{name}.yaml")
    splits = LOCAL_TASKS[name][1](cfg.paths.data_dir, cfg.paths.cache_dir, cfg.eval.sample_seed)
    texts = {split: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) for split, rows in splits.items()}
    out = Path(cfg.paths.cache_dir) / "lm_eval_data" / name / content_key(*sorted(texts.items()))
    files = task["dataset_kwargs"]["data_files"]
    for split, file_name in files.items():
        path = out / file_name
        if not path.is_file():  # content-addressed: cells of a sweep write the same bytes
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, texts[split])
        files[split] = str(path)
    return task


# ---------------------------------------------------------------- preflight (no model loads)
@lru_cache(maxsize=4)
def _task_manager(include_path: str | None, defaults: bool = True):
    from lm_eval.tasks import TaskManager

    # indexing the harness's own ~15k task YAMLs takes seconds: skipped when only local tasks run
    return TaskManager(include_path=include_path, include_defaults=defaults)


def _include(settings) -> str | None:
    return str(Path(settings.include_path).expanduser()) if settings.include_path else None


def check_lm_eval(cfg: DictConfig) -> None:
    """Settings and task names of ``eval.lm_eval``; offline, also that each Hub task's data is cached.
    Raises ValueError naming the key and the fix."""
    from qresafe_exp.data.registry import resolve_file
    from qresafe_exp.preflight import check_count

    settings = cfg.eval.lm_eval
    if harness_version() is None:
        raise ValueError(INSTALL_HINT)
    tasks = list(settings.tasks or [])
    if not tasks or not all(isinstance(t, str) and t for t in tasks):
        raise ValueError(
            f"eval.lm_eval.tasks={tasks}: give a list of harness task names, e.g. "
            f"eval.lm_eval.tasks=[{','.join(LOCAL_TASKS)}] (offline) or [arc_easy,hellaswag]"
        )
    check_count("eval.lm_eval.num_fewshot", settings.num_fewshot, 0, "few-shot examples (null = each task's own)")
    check_count("eval.lm_eval.limit", settings.limit, 1, "documents per task (null = all of them)")
    check_count("eval.lm_eval.batch_size", settings.batch_size, 1, "requests per batch")
    check_count("eval.lm_eval.bootstrap_iters", settings.bootstrap_iters, 0, "bootstrap resamples for stderr")
    include = settings.include_path
    if include is not None and not Path(include).expanduser().is_dir():
        raise ValueError(
            f"eval.lm_eval.include_path={include}: no such directory; give a directory of task YAML files, or null"
        )
    manager = None
    for name in tasks:
        if name in LOCAL_TASKS:
            for dataset in LOCAL_TASKS[name][0]:
                resolve_file(dataset, cfg.paths.data_dir, cfg.paths.cache_dir)
            continue
        if name.endswith((".yaml", ".yml")):
            if not Path(name).expanduser().is_file():
                raise ValueError(f"eval.lm_eval.tasks: {name}: no such task file; give an existing task YAML")
            continue
        manager = manager or _task_manager(_include(settings))
        if name not in manager.all_tasks:
            known = [*LOCAL_TASKS, *manager.all_tasks]
            close = difflib.get_close_matches(name, known, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(
                f"eval.lm_eval.tasks: '{name}' is not an lm-evaluation-harness task, group or tag"
                f"{hint}; list them with `lm-eval ls tasks`, or use a local task "
                f"({', '.join(LOCAL_TASKS)}), a task YAML path, or eval.lm_eval.include_path"
            )
        _check_offline_data(manager, name)


def _check_offline_data(manager, name: str) -> None:
    """Offline, load the task now (its dataset from the local cache, or a clear failure before any model
    loads); online its data downloads when the suite runs."""
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        return
    try:
        manager.load([name])
    except (ConnectionError, OSError) as err:
        raise ValueError(
            f"eval.lm_eval.tasks: '{name}' needs its data from the Hugging Face Hub, which "
            f"HF_HUB_OFFLINE=1 forbids ({str(err).splitlines()[0]}); run it where the Hub is "
            f"reachable, or use the local tasks {', '.join(LOCAL_TASKS)}"
        ) from None


# ---------------------------------------------------------------- the suite
def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None  # the harness writes "N/A" where it has no stderr
    return round(float(value), 6)


def metric_value(value, stderr, n) -> dict:
    """{value, stderr, ci95 (normal approximation, where there is a stderr), n}."""
    value, stderr = _number(value), _number(stderr)
    ci = (
        [round(value - 1.96 * stderr, 6), round(value + 1.96 * stderr, 6)]
        if None not in (value, stderr)
        else [None, None]
    )
    return {"value": value, "stderr": stderr, "ci95": ci, "n": n}


def _metric_order(config: dict) -> dict[str, int]:
    return {m.get("metric"): i for i, m in enumerate(config.get("metric_list") or []) if isinstance(m, dict)}


def task_scores(results: dict, order: list[str] = ()) -> dict[str, dict]:
    """{task or group: {metric: metric_value}} from ``simple_evaluate``'s output, the tasks named in
    ``order`` first and each task's metrics in its metric_list order (the first is its headline); a metric
    computed under a filter other than the default keeps it in its name (``exact_match,strict-match``)."""
    out = {}
    first = {name: i for i, name in enumerate(order)}
    for task, res in sorted(results["results"].items(), key=lambda kv: first.get(kv[0], len(first))):
        position = _metric_order((results.get("configs") or {}).get(task) or {})
        n = (results.get("n-samples") or {}).get(task, {}).get("effective") or res.get("sample_len")
        metrics = {}
        for key, value in res.items():
            metric, sep, filter_name = key.partition(",")
            if not sep or metric.endswith("_stderr") or _number(value) is None:
                continue
            name = metric if filter_name == "none" else key
            metrics[name] = metric_value(value, res.get(f"{metric}_stderr,{filter_name}"), n)
        if metrics:
            out[task] = dict(
                sorted(metrics.items(), key=lambda kv: position.get(kv[0].partition(",")[0], len(position)))
            )
    return out


def top_level(block: dict) -> list[str]:
    """The block's tasks that are not a group's subtask, in the configured order: what the tables show.
    (metrics.json is written with sorted keys, so the order is kept in ``order`` / ``metric_order``.)"""
    inside = {t for subtasks in (block.get("groups") or {}).values() for t in subtasks}
    return [t for t in block.get("order") or block.get("tasks", {}) if t not in inside]


def task_metrics(block: dict, task: str) -> list[str]:
    """A task's metric names, its headline (the task's first metric) first."""
    return (block.get("metric_order") or {}).get(task) or list(block["tasks"][task])


def sample_rows(suite_name: str, samples: dict) -> list[dict]:
    """One samples.jsonl row per document: task, doc id, target, the context, its scalar metrics."""
    rows = []
    for task, docs in samples.items():
        for doc in docs:
            arguments = doc.get("arguments") or [[""]]
            first = arguments[0] if isinstance(arguments, (list, tuple)) else arguments
            context = first[0] if isinstance(first, (list, tuple)) and first else first
            scalars = {
                k: v for k, v in doc.items() if k in (doc.get("metrics") or []) and isinstance(v, (int, float, bool))
            }
            rows.append(
                {
                    "suite": suite_name,
                    "id": f"{task}:{doc['doc_id']}",
                    "task": task,
                    "doc_id": doc["doc_id"],
                    "prompt": str(context),
                    "target": str(doc.get("target")),
                    **scalars,
                }
            )
    return rows


def task_specs(cfg: DictConfig) -> list:
    """The harness's task list: a local task as its inline config, anything else by name or path."""
    return [local_task_config(name, cfg) if name in LOCAL_TASKS else name for name in cfg.eval.lm_eval.tasks]


def run_lm_eval(suite, records: list[dict], ctx) -> tuple[list[dict], dict]:
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    settings = ctx.cfg.eval.lm_eval
    named = [t for t in settings.tasks if t not in LOCAL_TASKS and not t.endswith((".yaml", ".yml"))]
    manager = _task_manager(_include(settings), defaults=bool(named))
    model = ctx.engine().model  # the cell's model as the project loads it (sidecars, adapters applied)
    lm = HFLM(pretrained=model, tokenizer=ctx.tokenizer, batch_size=settings.batch_size)
    dtype = getattr(ctx.engine, "dtype", None)
    tag = ctx.model_key + (f"-{str(dtype).removeprefix('torch.')}" if dtype is not None else "")
    requests_db = Path(ctx.cfg.paths.cache_dir) / "lm_eval_requests" / tag  # the harness's own request cache
    requests_db.parent.mkdir(parents=True, exist_ok=True)
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=task_specs(ctx.cfg),
        task_manager=manager,
        num_fewshot=settings.num_fewshot,
        limit=settings.limit,
        bootstrap_iters=settings.bootstrap_iters,
        log_samples=True,
        apply_chat_template=settings.apply_chat_template,
        use_cache=str(requests_db),
        # in the chat template, the cell's system prompt, as the other suites render it
        system_instruction=ctx.system_prompt if settings.apply_chat_template else None,
    )
    tasks = task_scores(results, list(settings.tasks))
    block = {
        "suite": suite.name,
        "metric": "tasks",
        "version": suite.version,
        "tasks": tasks,
        "order": list(tasks),
        "metric_order": {task: list(metrics) for task, metrics in tasks.items()},
        "groups": results.get("group_subtasks") or {},
        "higher_is_better": results.get("higher_is_better") or {},
        "harness": {
            "lm_eval": harness_version(),
            "n_shot": results.get("n-shot") or {},
            "task_versions": results.get("versions") or {},
            "n_samples": results.get("n-samples") or {},
        },
        "settings": OmegaConf.to_container(settings, resolve=True),
    }
    return sample_rows(suite.name, results.get("samples") or {}), block


def task_deltas(suite_name: str, block: dict, ref_block: dict | None) -> dict[str, float | None]:
    """{'<suite>.<task>.<metric>': cell minus reference} for every task metric of the block."""
    out = {}
    for task, metrics in (block.get("tasks") or {}).items():
        ref = ((ref_block or {}).get("tasks") or {}).get(task) or {}
        for metric, value in metrics.items():
            a, b = value.get("value"), (ref.get(metric) or {}).get("value")
            out[f"{suite_name}.{task}.{metric}"] = None if a is None or b is None else round(a - b, 6)
    return out
