"""Re-score a study without regenerating (qresafe_exp/conf/rescore.yaml, ``python -m qresafe_exp.rescore``).

Every cell's stored responses (``samples.jsonl``) are judged again by the configured judges, each
suite's score block is rebuilt by the function the evaluation itself uses (asr.harmful_block,
asr.decoding_attack_block, overrefusal.overrefusal_block, qos_probe.qos_block), and the deltas to
the FP reference are recomputed from the re-scored reference cell. Harmful suites take the judge's
harm verdicts and the keyword column; over-refusal suites and the QoS probe take
``eval.refusal_judge``. Suites scored by a model (perplexity, multiple choice, judge-graded utility)
cannot be re-scored from text alone: their blocks are kept and listed in the cell's ``rescored`` block.

Nothing is written until every cell of the study has been re-scored; then each cell's metrics.json
and samples.jsonl are replaced atomically, the first pre-rescore metrics.json kept beside them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from qresafe_exp.cache import RequestCache, write_json_atomic, write_text_atomic
from qresafe_exp.evals.judging import cached_verdicts
from qresafe_exp.judges import build_judge
from qresafe_exp.metrics import load as load_metrics
from qresafe_exp.paired import read_samples
from qresafe_exp.rescore.table import before_after

log = logging.getLogger(__name__)

JUDGED_KINDS = ("harmful", "overrefusal", "qos")
# A harmful row's fields before any judge saw it (EvalContext.response_rows, plus the decoding
# attack's configuration); anything else on it is the previous judge's verdict and is dropped, so a
# field the new judge does not write (e.g. `outcome`) cannot survive from the old one.
RESPONSE_FIELDS = frozenset(
    {
        "suite",
        "id",
        "prompt",
        "category",
        "functional_category",
        "type",
        "response",
        "degenerate",
        "reasons",
        "fp_perplexity",
        "repeated_ngram_fraction",
        "word_char_fraction",
        "decoding",
    }
)
# What classify_refusals writes on an over-refusal / QoS row (the rest is the prompt's own data).
REFUSAL_FIELDS = ("refused", "refusal_label", "refused_strmatch", "error", "error_kind", "judge_reply", "rules")
BEFORE = "metrics.before-rescore.json"


class RescoreError(ValueError):
    """A study that cannot be re-scored as asked; raised before anything is written."""


@dataclass
class Judging:
    """What the suites' judging functions (asr.judge_rows, overrefusal.classify_refusals) use of an
    EvalContext, without a model: the config and cached verdicts. The request cache is opened only
    for a judge whose verdicts are cached (a model or an endpoint)."""

    cfg: DictConfig
    judge: object = None
    _requests: RequestCache | None = field(default=None, repr=False)

    def __post_init__(self):
        self.judge = build_judge(self.cfg.judge)

    def verdicts(self, task: str, items: list) -> list[dict]:
        if self.judge.cache_verdicts and self._requests is None:
            self._requests = RequestCache(Path(self.cfg.paths.cache_dir) / "requests.sqlite")
        return cached_verdicts(self.judge, task, items, self._requests)

    def close(self) -> None:
        if self._requests is not None:
            self._requests.close()


@dataclass
class Cell:
    path: Path
    metrics: dict
    rows: list[dict]
    scores: dict = field(default_factory=dict)
    rescored: list[str] = field(default_factory=list)
    kept: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name


def study_cells(study_dir: Path) -> list[Cell]:
    """The study's evaluated cells (metrics.json + samples.jsonl), references first."""
    if not study_dir.is_dir():
        raise RescoreError(
            f"{study_dir}: no such study directory. Give study=<a directory under "
            f"{study_dir.parent}> (paths.output_dir sets where studies are)"
        )
    cells = []
    for path in sorted(p for p in study_dir.iterdir() if p.is_dir()):
        if not ((path / "metrics.json").is_file() and (path / "samples.jsonl").is_file()):
            continue  # unsupported cells, a crashed cell's directory, W&B folders
        metrics = load_metrics(path / "metrics.json").raw  # checked; rebuilt by new_metrics, so a plain dict
        if "scores" not in metrics:
            continue
        cells.append(Cell(path, metrics, read_samples(path)))
    if not cells:
        raise RescoreError(f"{study_dir}: no cell with metrics.json and samples.jsonl to re-score")
    return sorted(cells, key=lambda c: "reference_cell" in c.metrics)


def check_judges(cfg: DictConfig, judging: Judging) -> None:
    """The judge must do `harm` and the refusal judge `refusal` (checked before any cell is read)."""
    from qresafe_exp.evals.overrefusal import refusal_judge_name
    from qresafe_exp.judges import build_named_judge

    judging.judge.require("harm", "re-scoring the harmful suites")
    refusal = judging.judge if cfg.eval.refusal_judge == "judge" else build_named_judge(refusal_judge_name(cfg))
    refusal.require("refusal", f"eval.refusal_judge={cfg.eval.refusal_judge}")


def rejudge(suite, rows: list[dict], old_block: dict, judging: Judging) -> dict:
    """Judge one suite's rows again (in place) and return its rebuilt score block."""
    from qresafe_exp.evals import asr
    from qresafe_exp.evals.overrefusal import classify_refusals, overrefusal_block
    from qresafe_exp.evals.qos_probe import qos_block

    if suite.kind == "harmful":
        for row in rows:
            for name in [k for k in row if k not in RESPONSE_FIELDS]:
                del row[name]
        asr.judge_rows(judging, rows)
        decoding = any("decoding" in r for r in rows)
        block = asr.decoding_attack_block(suite, rows) if decoding else asr.harmful_block(suite, rows)
    else:
        for row in rows:
            for name in REFUSAL_FIELDS:
                row.pop(name, None)
        classify_refusals(judging, rows)
        if suite.kind == "qos":  # the bootstrap's seed is the one the cell used (its block records it)
            cfg = OmegaConf.create(
                {
                    "seed": old_block.get("seed", 0),
                    "judge": {"name": judging.cfg.judge.name},
                    "eval": {"refusal_judge": judging.cfg.eval.refusal_judge},
                }
            )
            block = qos_block(suite, rows, cfg)
        else:
            block = overrefusal_block(suite, rows, judging.cfg)
    if "removed_overlapping_training" in old_block:  # set by the runner, not the block function
        block["removed_overlapping_training"] = old_block["removed_overlapping_training"]
    failures = block.get("judge_failures") or {}
    if failures.get("n"):
        log.warning(
            "%s: %d of %d verdicts failed (%s), e.g. %s",
            suite.name,
            failures["n"],
            failures["of"],
            failures["kinds"],
            failures["example"],
        )
    return block


def rescore_cell(cell: Cell, judging: Judging) -> None:
    from qresafe_exp.evals.suites import SUITES

    by_suite: dict[str, list[dict]] = {}
    for row in cell.rows:
        by_suite.setdefault(row["suite"], []).append(row)
    for name, old_block in cell.metrics["scores"].items():
        kind = SUITES.get(name).kind if name in SUITES else None
        if kind not in JUDGED_KINDS:
            cell.scores[name] = old_block
            cell.kept[name] = (
                f"{kind} suite: scored by a model, not re-scored from the stored text"
                if kind
                else "unknown suite: kept as it was"
            )
            continue
        rows = by_suite.get(name)
        if not rows:
            raise RescoreError(
                f"cell {cell.name}: suite {name} has a score block but no rows in samples.jsonl; "
                "re-run the cell to rewrite its samples"
            )
        suite = SUITES.get(name)
        if suite.kind == "harmful" and suite.name.startswith("harmbench"):
            backfill_functional_category(suite, rows, judging.cfg)
        cell.scores[name] = rejudge(suite, rows, old_block, judging)
        cell.rescored.append(name)


def backfill_functional_category(suite, rows: list[dict], cfg: DictConfig) -> None:
    """HarmBench rows stored before the evaluation kept their functional category (standard /
    contextual) get it from the suite's data by prompt id, so a rescore reports the two apart; without
    the data at hand the rows stay as they are and the split is left out."""
    if all(row.get("functional_category") for row in rows):
        return
    from qresafe_exp.data.registry import load_records

    try:
        records = load_records(suite.dataset, cfg.paths.data_dir, cfg.paths.cache_dir)
    except FileNotFoundError as err:  # DatasetNotFoundError included
        log.warning(
            "%s: no functional categories for the stored rows (%s); the standard/contextual split is left out",
            suite.name,
            err,
        )
        return
    kinds = {r["id"]: r.get("functional_category") for r in records}
    for row in rows:
        if not row.get("functional_category") and kinds.get(row["id"]):
            row["functional_category"] = kinds[row["id"]]


VARIANTS_DIR = "variants"  # a re-scored variant's samples.jsonl: <cell>/variants/<name>/ (the cache keeps its own)


def rescore_variants(cell: Cell, reference: Cell | None, judging: Judging) -> tuple[dict, list[str], dict]:
    """The patch's other forms (patch.variants: the unmerged patch), judged again from their evaluation
    artifacts in the cache (left as they are: the cache is content-addressed, and another study may share
    them); returns the variants (rebuilt, or kept where the artifact is no longer cached), a note per variant
    saying which, and each rebuilt variant's re-judged rows, which the caller writes beside the cell
    (``samples`` in the variant's block names the folder), so that paired readings of its answers (the
    report's pooled and versus tests) see the new verdicts, not the artifact's."""
    from qresafe_exp.cache import ArtifactCache
    from qresafe_exp.pipeline import reference_deltas, variant_block

    artifacts = ArtifactCache(judging.cfg.paths.cache_dir)
    variants, notes, rows = {}, [], {}
    for name, old in ((cell.metrics.get("patch") or {}).get("variants") or {}).items():
        path = artifacts.path("eval", old.get("eval", ""))
        if not old.get("eval") or not (path / "samples.jsonl").is_file():
            variants[name] = old
            notes.append(f"patch.variants.{name} kept as it was: its evaluation {path} is not in the cache")
            continue
        variant = Cell(path, {"scores": old["scores"]}, read_samples(path))
        rescore_cell(variant, judging)
        variants[name] = {
            **variant_block(old["eval"], variant.scores, cell.scores),
            "samples": f"{VARIANTS_DIR}/{name}",
        }
        if reference is not None:
            variants[name].update(reference_deltas(variant.scores, reference.scores, variant.rows, reference.rows))
        rows[name] = variant.rows
        notes.append(
            f"patch.variants.{name} re-scored from its evaluation artifact (the artifact keeps its verdicts; the "
            f"new ones are in {VARIANTS_DIR}/{name}/samples.jsonl)"
        )
    return variants, notes, rows


def stored_config(cell_path: Path) -> Path | None:
    """The cell's config as Hydra saved it for the run that wrote its metrics.json: the newest
    .hydra/<run stamp>/config.yaml not newer than metrics.json (a later run may have failed before
    writing it), else the newest; .hydra/config.yaml for a cell written before per-run records."""
    runs = sorted(cell_path.glob(".hydra/*/config.yaml"))
    metrics = cell_path / "metrics.json"
    written = metrics.stat().st_mtime if metrics.is_file() else float("inf")
    before = [p for p in runs if p.stat().st_mtime <= written]
    legacy = cell_path / ".hydra" / "config.yaml"
    return (before or runs)[-1] if runs else (legacy if legacy.is_file() else None)


def degeneration_cfg(cell: Cell):
    """The cell's own degeneration settings (its stored config), else the schema's defaults:
    summarize() needs broken_if_rate_above. (The degeneration flags themselves never change here.)"""
    from qresafe_exp.schema import DegenerationConfig

    stored = stored_config(cell.path)
    if stored is not None:
        node = OmegaConf.select(OmegaConf.load(stored), "eval.degeneration", default=None)
        if node is not None:
            return OmegaConf.merge(OmegaConf.structured(DegenerationConfig), node)
    return OmegaConf.structured(DegenerationConfig)


def new_metrics(
    cell: Cell, reference: Cell | None, cfg: DictConfig, judging: Judging, date: str, variants: tuple = ({}, [], {})
) -> dict:
    from qresafe_exp.evals.overrefusal import refusal_judge_name
    from qresafe_exp.metrics import summarize
    from qresafe_exp.pipeline import reference_deltas

    old = cell.metrics
    metrics = json.loads(json.dumps(old))  # a deep copy; everything not re-scored stays as it was
    metrics["scores"] = cell.scores
    metrics["summary"] = summarize(cell.scores, degeneration_cfg(cell))
    if reference is not None:
        metrics.update(reference_deltas(cell.scores, reference.scores, cell.rows, reference.rows))
    protocol = metrics.setdefault("protocol", {})
    previous = {"judge": protocol.get("judge"), "refusal_judge": protocol.get("refusal_judge")}
    protocol.update(judge=judging.judge.identity, refusal_judge=cfg.eval.refusal_judge)
    notes = ["samples.jsonl and metrics.json re-scored; the W&B run and the eval artifact keep the original scores"]
    if variants[0]:
        metrics["patch"]["variants"] = variants[0]
        notes.extend(variants[1])
    metrics["rescored"] = {
        "judge": judging.judge.identity,
        "refusal_judge": refusal_judge_name(cfg),
        "date": date,
        "previous_judge": previous["judge"],
        "previous_refusal_judge": previous["refusal_judge"],
        "suites": cell.rescored,
        "kept": cell.kept,
        "notes": notes,
    }
    return metrics


def rescore_study(cfg: DictConfig) -> dict:
    """Re-score every cell of ``cfg.study``; returns {'cells': [(name, before, after)], 'table', 'out'}."""
    study_dir = Path(cfg.studies_dir) / cfg.study
    judging = Judging(cfg)
    try:
        check_judges(cfg, judging)
        cells = study_cells(study_dir)
        by_name = {c.name: c for c in cells}
        for cell in cells:  # references first (study_cells' order)
            rescore_cell(cell, judging)
        references = {}
        for cell in cells:
            ref_name = cell.metrics.get("reference_cell")
            references[cell.name] = by_name.get(ref_name) if ref_name else None
            if ref_name and references[cell.name] is None:
                raise RescoreError(
                    f"cell {cell.name}: its FP reference cell {ref_name} is not in {study_dir} (or has "
                    "no samples.jsonl), so its deltas cannot be recomputed. Run the reference first: "
                    f"python -m qresafe_exp study={cfg.study} quant=none patch=none (same eval/model)"
                )
        variants = {cell.name: rescore_variants(cell, references[cell.name], judging) for cell in cells}
    finally:
        judging.close()
    date = datetime.now(UTC).isoformat(timespec="seconds")
    updated = {
        cell.name: new_metrics(cell, references[cell.name], cfg, judging, date, variants[cell.name]) for cell in cells
    }
    for cell in cells:  # every cell re-scored: now write
        before = cell.path / BEFORE
        if not before.exists():  # the original numbers, kept once: a second rescore never replaces them
            write_text_atomic(before, (cell.path / "metrics.json").read_text())
        write_text_atomic(cell.path / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in cell.rows))
        for name, rows in variants[cell.name][2].items():
            folder = cell.path / VARIANTS_DIR / name
            folder.mkdir(parents=True, exist_ok=True)
            write_text_atomic(folder / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        write_json_atomic(cell.path / "metrics.json", updated[cell.name])
    table = before_after([(c.name, c.metrics, updated[c.name]) for c in cells])
    header = (
        f"# Re-scored study `{cfg.study}` ({date})\n\njudge: `{json.dumps(judging.judge.identity)}`; "
        f"refusal judge: `{cfg.eval.refusal_judge}`. Before = the metrics.json replaced by this run "
        f"(the first one is kept as each cell's {BEFORE}).\n\n"
    )
    kept = sorted({f"{name} ({why})" for c in cells for name, why in c.kept.items()})
    footer = f"\n\nkept as they were: {'; '.join(kept)}\n" if kept else "\n"
    write_text_atomic(study_dir / "rescore.md", header + table + footer)
    return {"cells": [c.name for c in cells], "table": table, "out": study_dir / "rescore.md", "kept": kept}
