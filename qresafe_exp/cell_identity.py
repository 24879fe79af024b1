"""A cell's name is its identity on disk (outputs/studies/<study>/<cell>/). Cell names carry only the knobs
a study varies, so two configs that differ elsewhere (e.g. SafePatching's beta, which the default tag
leaves out, or the QLoRA damage's `quant.train.lr`, which its tag leaves out) get the same name,
and the second would silently overwrite the first's results. Two checks stop that before any model loads:
two jobs of one sweep that share a name, and a cell already written with other patch or quantizer knobs."""

from __future__ import annotations

import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from qresafe_exp.metrics import MetricsError
from qresafe_exp.metrics import load as load_metrics


def _flatten(node: DictConfig) -> dict:
    """A config subtree resolved and flattened to dotted keys ('se.lr', 'data.num_harmful')."""
    flat = {}

    def walk(value, prefix: str) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                walk(child, f"{prefix}{key}.")
        else:
            flat[prefix.rstrip(".")] = value

    walk(OmegaConf.to_container(node, resolve=True), "")
    return flat


def patch_knobs(patch_cfg: DictConfig) -> dict:
    """The patch's numeric settings, flattened ('tau', 'lr', 'data.num_harmful', 'se.lr'): the report's
    patch axes (report/collect.py), so a sweep over one sorts by its number, not by the cell's tag; and
    what a cell's name must stay faithful to (check_cell_not_taken)."""
    return {k: v for k, v in _flatten(patch_cfg).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _named(group: str, knobs: dict) -> dict:
    """Knobs keyed by their full dotted name ('patch.beta', 'quant.train.lr'), as messages and axes say them."""
    return {f"{group}.{k}": v for k, v in knobs.items()}


def quant_knobs(cfg: DictConfig) -> dict:
    """The quantizer's numeric settings, flattened ('quant.train.lr', 'quant.seed'). An FP cell has none.
    The calibration set is left out: a method that uses one names it in its tag, and one that does not
    (bnb, rtn) is the same cell whatever `calib` says."""
    if cfg.quant.name == "none":
        return {}
    return _named("quant", patch_knobs(cfg.quant))


def cell_knobs(cfg: DictConfig) -> dict:
    """Every numeric knob a cell's results depend on beyond its name, keyed by its full dotted name."""
    return {**_named("patch", patch_knobs(cfg.patch)), **quant_knobs(cfg)}


def knob_differences(old: dict, new: dict) -> dict[str, tuple]:
    """{knob: (old, new)} for the knobs both record with different values. A knob only one side has (a
    setting added to the code later) is no evidence of a different config, so it is not compared."""
    shared = sorted(old.keys() & new.keys())  # numbers on both sides: patch_knobs and the metrics reader
    return {k: (old[k], new[k]) for k in shared if not math.isclose(old[k], new[k], rel_tol=1e-9)}


def _describe(diff: dict[str, tuple], first: str, second: str) -> str:
    return ", ".join(f"{k}: {a} {first}, {b} {second}" for k, (a, b) in diff.items())


_FIX = (
    "Name the knob in the cell (patch.tag=... or quant.tag=..., or an experiment whose tag names it, e.g. "
    "experiment=claim_safepatching_grid), or run it in another study (study=...)"
)


def check_cell_not_taken(cfg: DictConfig, metrics_path: Path) -> None:
    """Raise ValueError when ``metrics_path`` (this cell's metrics.json) holds the results of other patch
    or quantizer knobs than ``cfg``'s: a rerun with the same config resumes; one with another would overwrite."""
    if not metrics_path.exists():
        return
    try:
        axes = load_metrics(metrics_path).axes
    except (OSError, MetricsError):
        return  # an unreadable metrics.json is rewritten by the run; nothing to protect
    written = {**_named("patch", axes.patch_knobs), **axes.quant_knobs}
    diff = knob_differences(written, cell_knobs(cfg))
    if diff:
        raise ValueError(
            f"cell {cfg.cell} of study {cfg.study} already holds the results of another config "
            f"({_describe(diff, 'there', 'now')}); this run would overwrite them. {_FIX}, or move "
            f"{metrics_path.parent} away to replace it"
        )


def check_unique_cell_names(jobs: list[DictConfig]) -> None:
    """Raise ValueError when two jobs of one sweep would write the same cell with different patch configs
    or quantizer knobs. Other axes that a name leaves out are the same cell by design (quant=none ignores
    bits, so `quant=none,gptq bits=4,8` runs the FP cell once, then resumes it)."""
    seen: dict[tuple[str, str], dict] = {}
    for job in jobs:
        key = (str(job.study), str(job.cell))
        flat = {**_named("patch", _flatten(job.patch)), **quant_knobs(job)}
        if key not in seen:
            seen[key] = flat
            continue
        first = seen[key]
        diff = {
            k: (first.get(k), flat.get(k)) for k in sorted(first.keys() | flat.keys()) if first.get(k) != flat.get(k)
        }
        if diff:
            raise ValueError(
                f"two cells of this sweep are both named {key[1]} (study {key[0]}) but differ in "
                f"{_describe(diff, 'in one', 'in the other')}: the second would overwrite the first. {_FIX}"
            )
