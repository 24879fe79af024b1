"""One cell of a study, top to bottom: validate -> model -> FP reference -> quantize -> patch
-> evaluate -> score -> write and log. Every stage plans its artifact (stages.py) and ``run_plan`` here
caches it (cache.py): the one place a stage's top-level artifact is looked up or built."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from omegaconf import DictConfig, OmegaConf

from qresafe_exp.align import training_prompts
from qresafe_exp.cache import ArtifactCache, RequestCache, file_lock, write_json_atomic, write_text_atomic
from qresafe_exp.calibration import check_calibration
from qresafe_exp.cell_identity import check_cell_not_taken, patch_knobs, quant_knobs
from qresafe_exp.data import DatasetNotFoundError
from qresafe_exp.data.registry import resolve_file
from qresafe_exp.devices import resolve_device
from qresafe_exp.engines import check_engine
from qresafe_exp.evals.lm_harness import task_deltas
from qresafe_exp.evals.overrefusal import check_refusal_judge
from qresafe_exp.evals.protocols import PROTOCOLS, protocol_of, selected_grid
from qresafe_exp.evals.runner import eval_plan, user_prompts
from qresafe_exp.evals.suites import JUDGE_TASK, SUITES
from qresafe_exp.fingerprint import cached_fingerprint
from qresafe_exp.hub_push import push_cell
from qresafe_exp.judges import JUDGES, build_judge
from qresafe_exp.metrics import headline as block_headline
from qresafe_exp.metrics import load as load_metrics
from qresafe_exp.metrics import summarize
from qresafe_exp.models import ModelRef, materialize
from qresafe_exp.paired import paired_vs_reference, read_samples
from qresafe_exp.patch import PATCHES
from qresafe_exp.patch.base import PatchContext
from qresafe_exp.preflight import ConfigError, check_inputs
from qresafe_exp.provenance import provenance, seed_everything
from qresafe_exp.quant import QUANTIZERS
from qresafe_exp.quant.base import UnsupportedCombinationError
from qresafe_exp.registry import UnknownNameError
from qresafe_exp.resources import StageMonitor
from qresafe_exp.stages import EvalResult, PatchResult, Plan, QuantResult, StageContext, config_view
from qresafe_exp.summary import format_table, table_row
from qresafe_exp.tracking import Tracker, build_tracker, check_logger, headline, score_rows, scrub_secrets

log = logging.getLogger(__name__)
R = TypeVar("R")


# ---------------------------------------------------------------- validation (no model loads)
def unsupported_reason(cfg: DictConfig) -> str | None:
    """Why the quantizer cannot run this cell (bits, format, backend, hardware), None when it can."""
    try:
        QUANTIZERS.get(cfg.quant.name).validate(cfg.quant)
        PATCHES.get(cfg.patch.name).validate(cfg.patch, cfg.quant)
    except UnsupportedCombinationError as err:
        return str(err)
    return None


def _cell_label(cfg: DictConfig) -> str:
    try:
        return cfg.cell
    except Exception:  # noqa: BLE001 - e.g. model.name unset: the message names that key itself
        return "?"


def _check_names(cfg: DictConfig) -> None:
    """Registry names in the config (quant.name, patch.name, judge.name, eval.suites): the key and the choices."""
    checks = [
        (key, registry, OmegaConf.select(cfg, key))
        for key, registry in (("quant.name", QUANTIZERS), ("patch.name", PATCHES), ("judge.name", JUDGES))
    ]
    checks += [("eval.suites", SUITES, name) for name in cfg.eval.suites]
    for key, registry, name in checks:
        try:
            registry.check(name)
        except UnknownNameError as err:
            raise ValueError(f"{key}={name}: {err}") from None


def validate(cfg: DictConfig) -> None:
    try:
        check_inputs(cfg)
        _check_names(cfg)
        check_cell_not_taken(cfg, cell_dir(cfg, cfg.cell) / "metrics.json")
        if cfg.on_unsupported not in ("error", "record"):
            raise ValueError(f"on_unsupported={cfg.on_unsupported} is unknown. Allowed: error, record")
        reason = unsupported_reason(cfg)
        if reason and cfg.on_unsupported == "error":
            raise UnsupportedCombinationError(f"{reason} (or set on_unsupported=record to record such cells and go on)")
        method = PATCHES.get(cfg.patch.name)
        method.check_data(config_view(cfg, method.reads))
        judge = build_judge(cfg.judge)
        check_refusal_judge(cfg)
        for name in cfg.eval.suites:
            suite = SUITES.get(name)
            task = JUDGE_TASK.get(suite.kind) or (
                "refusal" if suite.kind in ("overrefusal", "qos") and cfg.eval.refusal_judge == "judge" else None
            )
            if task:
                judge.require(task, f"suite '{name}'")
            if name == "prompts":  # read in full now: a bad file stops the cell before any model loads
                user_prompts(cfg)
            elif name == "lm_eval":  # task names (and, offline, their data) before any model loads
                from qresafe_exp.evals.lm_harness import check_lm_eval

                check_lm_eval(cfg)
            else:
                resolve_file(suite.dataset, cfg.paths.data_dir, cfg.paths.cache_dir)
        selected_grid(cfg.eval.decoding.configs)
        calibration = QUANTIZERS.get(cfg.quant.name).calibration_of(cfg.quant)
        if calibration == "activation":
            resolve_file(
                cfg.calib.activation.dataset, cfg.paths.data_dir, cfg.paths.cache_dir, key="calib.activation.dataset"
            )
        if calibration == "finetune":
            check_calibration(cfg)
        if cfg.eval.protocol not in PROTOCOLS:
            raise ValueError(f"eval.protocol={cfg.eval.protocol} is unknown. Allowed: {', '.join(PROTOCOLS)}")
        check_engine(cfg.engine, resolve_device(cfg.device))
        check_logger(cfg.logger)
    except (KeyError, ValueError, DatasetNotFoundError, RuntimeError, FileNotFoundError) as err:
        raise ConfigError(f"[{_cell_label(cfg)}] {err}") from err


# ---------------------------------------------------------------- stages
def run_plan(plan: Plan[R] | R, ctx: StageContext) -> R:
    """The one place a stage's top-level artifact is cached (the stage contract, stages.py): served
    from the cache, or built into the directory the cache gives and published; then read back."""
    if not isinstance(plan, Plan):
        return plan  # the stage built nothing (no quantizer, no patch, tau=0, nothing to learn)
    art = ctx.artifacts.get_or_build(plan.kind, plan.spec, plan.build, upstream=plan.upstream, version=plan.version)
    return plan.read(art)


def quantize(fp: ModelRef, cfg: DictConfig, ctx: StageContext) -> QuantResult:
    quantized = run_plan(QUANTIZERS.get(cfg.quant.name).plan(fp, cfg, ctx), ctx)
    if quantized.model.key != fp.key:
        quantized.info["fingerprint"] = fingerprint(quantized.model.path, cfg)
    return quantized


def fingerprint(path: str, cfg: DictConfig) -> dict:
    """The checkpoint's tensor fingerprint (fingerprint.py), cached beside its artifact; a hub id is read
    from transformers' local snapshot. Reproducibility facts never fail a cell: on error, the reason."""
    try:
        local = Path(path)
        if not local.exists():
            from huggingface_hub import snapshot_download

            local = Path(snapshot_download(path, revision=cfg.model.get("revision"), local_files_only=True))
        return cached_fingerprint(local, Path(cfg.paths.cache_dir) / "fingerprints")
    except Exception as err:  # noqa: BLE001 - recorded in metrics.json and logged
        log.warning("could not fingerprint the checkpoint %s: %s: %s", path, type(err).__name__, err)
        return {"error": f"{type(err).__name__}: {err}"}


def fp_model_facts(fp: ModelRef, cfg: DictConfig) -> dict:
    return {"name": fp.name, "key": fp.key, "fingerprint": fingerprint(fp.path, cfg)}


def patch(fp: ModelRef, quantized: ModelRef, cfg: DictConfig, ctx: StageContext) -> PatchResult:
    """The patch gets the root keys it declares (``Patch.reads``), not the whole cell config."""
    method = PATCHES.get(cfg.patch.name)
    view = config_view(cfg, method.reads)
    pctx = PatchContext(**vars(ctx), cfg=view, cell=cfg.cell, fp=fp, quantized=quantized)
    return run_plan(method().plan(pctx), ctx)


def evaluate(
    model: ModelRef,
    cfg: DictConfig,
    ctx: StageContext,
    label: str,
    scorer: ModelRef | None = None,
    exclude: frozenset[str] = frozenset(),
) -> EvalResult:
    """``model``'s scores on every suite (evals/runner.py); ``scorer`` and ``exclude`` as in ``eval_plan``."""
    result = run_plan(eval_plan(model, cfg, ctx, label, scorer, exclude), ctx)
    if result.judge_failures:  # never serve missing verdicts from the cache: the next run asks the judge again
        ctx.artifacts.mark_incomplete("eval", result.key)
        log.warning(
            "judge failures in %s (%s): this evaluation will be redone on the next run "
            "(generations and the verdicts obtained are cached)",
            label,
            result.judge_failures,
        )
    return result


def evaluate_variants(
    variants: dict[str, ModelRef],
    result: EvalResult,
    reference: EvalResult | None,
    cfg: DictConfig,
    ctx: StageContext,
    scorer: ModelRef,
    exclude: frozenset,
) -> dict:
    """Scores of the patch's other forms (e.g. unmerged), the cell's difference from each and each one's
    paired deltas to the FP reference (the unmerged form is a result of its own, tested like the cell)."""
    out = {}
    ref_rows = read_samples(reference.path) if reference is not None else None
    for name, model in variants.items():
        scores = evaluate(model, cfg, ctx, label=f"{cfg.cell} [{name}]", scorer=scorer, exclude=exclude)
        out[name] = variant_block(scores.key, scores.scores, result.scores)
        if reference is not None:
            out[name].update(reference_deltas(scores.scores, reference.scores, read_samples(scores.path), ref_rows))
    return out


def variant_block(eval_key: str, scores: dict, cell_scores: dict) -> dict:
    """A patch variant's entry in metrics.json patch.variants (also rebuilt by rescore)."""
    return {"scores": scores, "eval": eval_key, "cell_minus_variant": headline_deltas(cell_scores, scores)}


# ---------------------------------------------------------------- results
def reference_cell_name(cfg: DictConfig) -> str:
    # one FP reference per evaluation protocol: an AOA-protocol cell compares with FP under AOA
    suffix = cfg.eval.cell_suffix
    if cfg.eval.protocol != "vanilla" and not suffix.endswith(f".{cfg.eval.protocol}"):
        suffix += f".{cfg.eval.protocol}"
    return f"{cfg.model.name}.fp.none{suffix}"


def cell_dir(cfg: DictConfig, cell: str) -> Path:
    return Path(cfg.paths.output_dir) / "studies" / cfg.study / cell


def build_metrics(
    cfg: DictConfig,
    cell: str,
    result: EvalResult,
    reference: EvalResult | None,
    quant_info: dict,
    patch_info: dict,
    wall_seconds: float,
    keys: dict,
) -> dict:
    is_fp = cfg.quant.name == "none"
    metrics = {
        "cell": cell,
        "study": cfg.study,
        "axes": {
            "model": cfg.model.name,
            "quant": cfg.quant.name,
            "bits": None if is_fp else cfg.quant.bits,
            "group_size": None if is_fp else cfg.quant.group_size,
            "calib": _calib_label(cfg) if quant_info else None,
            "patch": cfg.patch.name,
            "patch_tag": cfg.patch.get("tag", cfg.patch.name),
        },
        "protocol": {
            "eval": cfg.eval.name,
            "version": cfg.eval.version,
            "protocol": cfg.eval.protocol,
            "protocol_version": protocol_of(cfg).version,
            "refusal_judge": cfg.eval.refusal_judge,
            "max_new_tokens": cfg.eval.max_new_tokens,
            "limit": cfg.eval.limit,
            "judge": build_judge(cfg.judge).identity,
            "suites": {n: SUITES.get(n).version for n in cfg.eval.suites},
        },
        "scores": result.scores,
        "summary": summarize(result.scores, cfg.eval.degeneration),
        "quantization": quant_info,
        "patch": patch_info,
        "cost": {
            "wall_seconds": round(wall_seconds, 2),
            "eval_seconds": result.seconds,
            "generated_now": result.generated,
            "eval_cached": result.cached,
        },
        "artifacts": keys,
        "provenance": provenance(cfg.paths.root_dir),
    }
    knobs = patch_knobs(cfg.patch)
    if knobs:  # patch=none has none (and its cells keep the axes they always had)
        metrics["axes"]["patch_knobs"] = knobs
    if quantized := quant_knobs(cfg):  # an FP cell has none
        metrics["axes"]["quant_knobs"] = quantized
    if reference is not None:
        metrics["reference_cell"] = reference_cell_name(cfg)
        metrics.update(
            reference_deltas(result.scores, reference.scores, read_samples(result.path), read_samples(reference.path))
        )
    return metrics


def reference_deltas(scores: dict, ref_scores: dict, rows: list[dict], ref_rows: list[dict]) -> dict:
    """{'vs_reference', 'paired_vs_reference'}: the cell's headline minus the FP reference's, and the
    same deltas on the same prompts with a paired interval and an exact test (also used by rescore)."""
    return {
        "vs_reference": headline_deltas(scores, ref_scores),
        "paired_vs_reference": paired_vs_reference(scores, rows, ref_rows),
    }


def headline_deltas(scores: dict, ref_scores: dict) -> dict:
    """{'<suite>.<metric>': the headline of ``scores`` minus that of ``ref_scores``}."""
    deltas = {}
    for suite, block in scores.items():
        if "tasks" in block:  # lm_eval: one delta per task metric, no single headline
            deltas.update(task_deltas(suite, block, ref_scores.get(suite)))
        else:
            deltas[f"{suite}.{block['metric']}"] = _delta(block, ref_scores.get(suite))
    return deltas


def _calib_label(cfg: DictConfig) -> str | None:
    kind = QUANTIZERS.get(cfg.quant.name).calibration_of(cfg.quant)
    return {"activation": f"act:{cfg.calib.activation.name}", "finetune": cfg.calib.name}.get(kind)


def _delta(block: dict, ref_block: dict | None):
    """The cell's headline minus the reference's (same suite), None where either has none."""
    a, b = block_headline(block), block_headline(ref_block)
    return None if a is None or b is None or a.value is None or b.value is None else round(a.value - b.value, 4)


def _patch_numbers(info: dict) -> dict:
    """The patch facts worth charting (cost, parameter counts, merge survival, unmerged scores)."""
    # train: the trained patches' facts and per-step history; se / osm: SafePatching's two trainings
    keep = {k: info[k] for k in ("cost", "train", "merge", "sizes", "se", "osm") if k in info}
    for name, variant in (info.get("variants") or {}).items():
        keep[name] = {k: variant[k] for k in ("scores", "cell_minus_variant", "vs_reference") if k in variant}
    return keep


@contextlib.contextmanager
def cell_run(cfg: DictConfig, cell: str, monitor: StageMonitor | None = None) -> Iterator[Tracker]:
    """The cell's tracker run, open while the cell runs: the scrubbed resolved config, group = the study.
    A cell that raises closes it as failed (exit code 1, the error and the stage it failed in); what it
    logged until then stays in the run."""
    is_fp = cfg.quant.name == "none"
    tracker = build_tracker(cfg.logger)
    tracker.start(
        run_dir=cell_dir(cfg, cell),
        name=cell,
        group=cfg.study,
        job_type="cell",
        config=scrub_secrets(OmegaConf.to_container(cfg, resolve=True)),
        tags=[
            f"model:{cfg.model.name}",
            f"quant:{cfg.quant.name}",
            f"bits:{None if is_fp else cfg.quant.bits}",
            f"patch:{cfg.patch.name}",
        ],
    )
    try:
        yield tracker
    except BaseException as err:
        stage = monitor.running if monitor is not None else None
        tracker.finish(
            exit_code=1, error=f"{type(err).__name__}" + (f" in stage {stage}" if stage else "") + f": {err}"
        )
        raise
    tracker.finish()


def log_checkpoints(tracker: Tracker, cfg: DictConfig, models: dict[str, ModelRef]) -> None:
    """logger.log_checkpoints=true: each checkpoint the cell built (stage -> model) as a W&B model
    Artifact named by its cache key, a file:// reference to the cache (no copy of the weights)."""
    if not cfg.logger.get("log_checkpoints"):
        return
    for stage, model in models.items():
        if Path(model.path).exists():  # a hub id (the FP model) has no local checkpoint to point at
            tracker.log_artifact(
                f"checkpoint-{model.key}",
                "model",
                references={"checkpoint": Path(model.path)},
                metadata={"stage": stage, "name": model.name, "key": model.key},
            )


def log_results(tracker: Tracker, cfg: DictConfig, cell: str, metrics: dict, out: Path) -> None:
    """The cell's results in its run: scores with their intervals (asr/advbench, _ci_low, _ci_high, _n),
    the summary, costs and patch facts; a scores table, the samples table and samples.jsonl as an
    Artifact of type "samples"."""
    tracker.log_metrics(
        {
            **headline(metrics["scores"]),
            "scores": metrics["scores"],
            "summary": metrics["summary"],
            "vs_reference": metrics.get("vs_reference", {}),
            "paired_vs_reference": metrics.get("paired_vs_reference", {}),
            "cost": metrics["cost"],
            "patch": _patch_numbers(metrics.get("patch") or {}),
        }
    )
    tracker.log_table("scores", score_rows(metrics["scores"], metrics.get("vs_reference")))
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines() if line.strip()]
    tracker.log_table("samples", rows)
    tracker.log_artifact(
        f"samples-{cell}",
        "samples",
        files={"samples.jsonl": out / "samples.jsonl"},
        metadata={"cell": cell, "study": cfg.study, "eval": metrics["artifacts"].get("eval"), "rows": len(rows)},
    )


def write_cell(cfg: DictConfig, cell: str, metrics: dict, eval_path: str, tracker: Tracker | None = None) -> Path:
    """metrics.json + samples.jsonl (the source of truth), then mirror to the tracker: the cell's open
    run, or (the FP reference cell) a run of its own."""
    out = cell_dir(cfg, cell)
    out.mkdir(parents=True, exist_ok=True)
    # a copy of the eval artifact's samples (metrics.json names that artifact): atomic, fsynced
    write_text_atomic(out / "samples.jsonl", (Path(eval_path) / "samples.jsonl").read_text())
    with contextlib.ExitStack() as stack:
        if tracker is None:
            tracker = stack.enter_context(cell_run(cfg, cell))
        log_results(tracker, cfg, cell, metrics, out)
        metrics["tracking"] = tracker.info()
        tracker.save_json("metrics.json", metrics)
    write_json_atomic(out / "metrics.json", metrics)
    return out


def ensure_reference_cell(cfg: DictConfig, reference: EvalResult, fp: ModelRef, wall_seconds: float) -> None:
    """Write the FP reference cell once per study (and again only if its evaluation changed)."""
    cell = reference_cell_name(cfg)
    path = cell_dir(cfg, cell) / "metrics.json"
    with file_lock(cell_dir(cfg, cell).parent / f".{cell}.lock"):
        if path.exists() and load_metrics(path).get("artifacts", {}).get("eval") == reference.key:
            return
        ref_cfg = cfg.copy()
        OmegaConf.set_struct(ref_cfg, False)
        ref_cfg.quant = OmegaConf.create({"name": "none", "tag": "fp", "bits": None, "group_size": None})
        ref_cfg.patch = OmegaConf.create({"name": "none", "tag": "none"})
        metrics = build_metrics(
            ref_cfg, cell, reference, None, {}, {}, wall_seconds, {"model": fp.key, "eval": reference.key}
        )
        metrics["fp_model"] = fp_model_facts(fp, cfg)
        write_cell(ref_cfg, cell, metrics, reference.path)
        log.info("wrote FP reference cell %s", cell)


def write_unsupported_cell(cfg: DictConfig, reason: str) -> dict:
    metrics = {
        "cell": cfg.cell,
        "study": cfg.study,
        "status": "unsupported",
        "reason": reason,
        "axes": {
            "model": cfg.model.name,
            "quant": cfg.quant.name,
            "bits": cfg.quant.bits,
            "group_size": cfg.quant.group_size,
            "calib": None,
            "patch": cfg.patch.name,
        },
        "provenance": provenance(cfg.paths.root_dir),
    }
    write_json_atomic(cell_dir(cfg, cfg.cell) / "metrics.json", metrics)
    log.warning("cell %s recorded as unsupported: %s", cfg.cell, reason)
    print(f"\n{format_table([table_row(metrics)])}\n", flush=True)
    return metrics


# ---------------------------------------------------------------- the cell
def run_cell(cfg: DictConfig) -> dict:
    started = time.time()
    validate(cfg)
    reason = unsupported_reason(cfg)
    if reason:  # on_unsupported=record (validate raised otherwise)
        return write_unsupported_cell(cfg, reason)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, cfg.get("deterministic", True), device)  # recorded in provenance.determinism
    requests = RequestCache(Path(cfg.paths.cache_dir) / "requests.sqlite")
    ctx = StageContext(ArtifactCache(cfg.paths.cache_dir), requests, device)
    cell = cfg.cell
    log.info("cell %s (study %s) on %s", cell, cfg.study, device)
    monitor = StageMonitor(device)
    try:
        with cell_run(cfg, cell, monitor) as tracker:
            monitor.on_end = tracker.log_stage  # each stage's seconds and memory, as it finishes
            ctx.log_step = tracker.log_step  # training steps, streamed to the cell's run as they happen
            with monitor.stage("model"):
                fp = materialize(cfg.model, ctx.artifacts, cfg.paths)
                # An aligned model's training prompts never count as evaluation prompts.
                exclude = frozenset(training_prompts(fp.path))
            with monitor.stage("reference_eval"):
                reference = evaluate(fp, cfg, ctx, label=f"{cfg.model.name}.fp", scorer=fp, exclude=exclude)
            is_reference = cfg.quant.name == "none" and cfg.patch.name == "none"
            if not is_reference:
                ensure_reference_cell(cfg, reference, fp, time.time() - started)
            with monitor.stage("quantize"):
                quant = quantize(fp, cfg, ctx)
            quantized, quant_info = quant.model, quant.info
            with monitor.stage("patch"):
                seed_everything(cfg.seed, deterministic=None)
                patched = patch(fp, quantized, cfg, ctx)
            patch_info = patched.info
            if patched.model.key != quantized.key:  # the patch built a checkpoint of its own
                patch_info["fingerprint"] = fingerprint(patched.model.path, cfg)
            built = {"quantize": quantized, "patch": patched.model}
            log_checkpoints(
                tracker,
                cfg,
                {
                    stage: model
                    for stage, model in built.items()  # each once
                    if model.key not in (fp.key, quantized.key if stage == "patch" else None)
                },
            )
            with monitor.stage("eval"):
                seed_everything(cfg.seed, deterministic=None)
                result = (
                    reference
                    if patched.model.key == fp.key
                    else evaluate(patched.model, cfg, ctx, label=cell, scorer=fp, exclude=exclude)
                )
            if patched.variants:
                with monitor.stage("variant_eval"):
                    patch_info["variants"] = evaluate_variants(
                        patched.variants,
                        result,
                        None if is_reference else reference,
                        cfg,
                        ctx,
                        scorer=fp,
                        exclude=exclude,
                    )
            keys = {
                "model": fp.key,
                "quantize": quant_info.get("artifact"),
                "patch": patch_info.get("artifact"),
                "eval": result.key,
                "reference_eval": reference.key,
            }
            metrics = build_metrics(
                cfg,
                cell,
                result,
                None if is_reference else reference,
                quant_info,
                patch_info,
                time.time() - started,
                keys,
            )
            metrics["resources"] = monitor.stages  # per stage of this process: seconds, peak memory
            metrics["fp_model"] = fp_model_facts(fp, cfg)  # the FP weights' fingerprint, to compare machines
            out = write_cell(cfg, cell, metrics, result.path, tracker)
            if cfg.hub.push:  # after metrics.json: the card shows the scores, and a failed push loses nothing
                metrics["hub"] = push_cell(
                    cfg, Path(patched.model.path) if patched.model.key != fp.key else None, metrics
                )
                write_json_atomic(out / "metrics.json", metrics)
    finally:
        requests.close()
    rows = [table_row(metrics)]
    ref_metrics = cell_dir(cfg, reference_cell_name(cfg)) / "metrics.json"
    if not is_reference and ref_metrics.exists():
        rows.insert(0, table_row(load_metrics(ref_metrics)))
    print(f"\n{format_table(rows)}\nresults: {out}\n", flush=True)
    return metrics
