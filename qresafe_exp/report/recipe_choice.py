"""Which Q-resafe recipe a recorded sweep chooses (the `recipe_choice-<group>` table).

Issue 17 asks that Q-resafe's training recipe (lr x epochs x pairs) be chosen by a sweep that is recorded,
not by hand; `experiment=claim_qresafe_recipe` runs the sweep, and this table applies its rule to what ran,
so the choice is read off the results rather than made by a reader:

  among the recipes whose XSTest-safe refusal and reference perplexity stay within `within` (10 %) of FP's
  (the claim's own bound, claim_targets._within; `claim_targets.sides=rise` reads it on the loss side only,
  so that a recipe refusing less than FP is not ruled out for it), choose the lowest mean harm ASR over the
  harmful suites; ties go to the lower XSTest-safe refusal, then the lower perplexity.

A base (model, quantizer, bits, calibration) with two or more Q-resafe recipes is a sweep; its merged and
unmerged forms are chosen separately (each is a way to serve the patch). Where no recipe keeps within the
bounds, nothing is chosen and the recipe that strays least (the smallest of the largest relative changes)
is named as the closest, so that a reader sees how far the sweep got. A recipe run at several seeds is
read by its mean over them (the harmful suites' ASR, the bounded metrics and their paired deltas), so that
one lucky seed does not choose; the `seeds` column says which ran.
"""

from __future__ import annotations

import itertools

from qresafe_exp.report import groups
from qresafe_exp.report.claim_targets import (
    DEFAULT,
    LABELS,
    OVER_REFUSAL,
    PPL,
    Readings,
    _harmful_suites,
    _setting,
    _within,
    relative_changes,
    strayed,
    within_header,
)
from qresafe_exp.report.collect import KNOB_PREFIX
from qresafe_exp.report.tables import Table, _base, _ok

BOUNDED = (OVER_REFUSAL[0], OVER_REFUSAL[1], PPL)  # the claim's "within 10 % of FP" metrics


def _form(row: dict) -> str:
    return row.get("variant") or "merged"


def _mean_harm_asr(row: dict, readings: Readings) -> float | None:
    values = [row[k] for k in _harmful_suites(row, readings)]
    return sum(values) / len(values) if values else None


def _largest_change(row: dict, reference: dict | None, readings: Readings) -> float:
    """The largest relative change of a bounded metric against the reference, as the reading's sides count it
    (inf where one is unknown)."""
    changes = relative_changes(row, BOUNDED, reference)
    return max((float("inf") if c is None else strayed(c, readings) for *_, c in changes), default=float("inf"))


def _seed_mean(runs: list[dict], readings: Readings) -> dict:
    """One row for a recipe's seeds: the lowest seed's, with every metric the rule reads (and its paired delta,
    which the bound falls back on) replaced by the mean over the seeds that measured it, and `seeds` added."""
    runs = sorted(runs, key=lambda r: r.get("seed") or 0)
    row = {**runs[0], "seeds": [r.get("seed") or 0 for r in runs]}
    for key in {k for r in runs for k in (*_harmful_suites(r, readings), *BOUNDED)}:
        for name in (key, f"{key}.vs_fp"):
            values = [r[name] for r in runs if r.get(name) is not None]
            row[name] = sum(values) / len(values) if values else None
    return row


def _by_recipe(runs: list[dict], readings: Readings) -> list[dict]:
    """One row per recipe (patch tag), its seeds averaged."""
    runs = sorted(runs, key=lambda r: r["patch_tag"])
    return [_seed_mean(list(g), readings) for _, g in itertools.groupby(runs, key=lambda r: r["patch_tag"])]


def _knob_text(value) -> str:
    """A swept number as written (5e-06, 0.0001, 96): the tables' two decimals would print lr 0.00."""
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _knobs(runs: list[dict]) -> list[str]:
    """The patch settings the sweep varied (patch.lr, patch.epochs, patch.data.num_harmful ...)."""
    keys = sorted({k for r in runs for k in r if k.startswith(KNOB_PREFIX)})
    return [k for k in keys if len({r.get(k) for r in runs}) > 1]


def _choose(runs: list[dict], kept: list[dict], by_cell: dict, readings: Readings) -> tuple[dict | None, dict | None]:
    """(the chosen run or None, the closest run where none of ``kept``, the runs within the bounds, is scored)."""
    scored = [r for r in runs if _mean_harm_asr(r, readings) is not None]
    rank = lambda r: (_mean_harm_asr(r, readings), r.get(OVER_REFUSAL[1]) or 0.0, r.get(PPL) or 0.0)
    if candidates := [r for r in kept if _mean_harm_asr(r, readings) is not None]:
        return min(candidates, key=rank), None
    closest = min(scored, key=lambda r: (_largest_change(r, by_cell.get(r.get("reference_cell")), readings), *rank(r)))
    return None, closest if scored else None


def recipe_choice(rows: list[dict], readings: Readings = DEFAULT) -> Table | None:
    """One table per group holding a Q-resafe sweep: every recipe of each swept base and form, its mean harm
    ASR and its bounds, and the one the rule chooses. None where no base has two Q-resafe recipes."""
    group = groups.one(rows)
    ok = [r for r in _ok(rows) if not r.get("broken")]
    by_cell = {r["cell"]: r for r in ok}
    # Q-resafe's own runs: a mask control (patch.mask_score=random | magnitude) is a baseline, not a recipe
    runs = [r for r in ok if r["patch"] == "qresafe" and r.get("mask_score") in (None, "snip")]
    sweeps = {}
    for r in sorted(runs, key=lambda r: (_base(r), _form(r))):
        sweeps.setdefault((_base(r), _form(r)), []).append(r)
    sweeps = {key: _by_recipe(rs, readings) for key, rs in sweeps.items() if len({r["patch_tag"] for r in rs}) > 1}
    if not sweeps:
        return None
    knobs = _knobs([r for rs in sweeps.values() for r in rs])
    within = _within(BOUNDED, readings)
    body = []
    for (_, form), recipes in sweeps.items():
        verdicts = {id(r): within(r, by_cell.get(r.get("reference_cell"))) for r in recipes}
        chosen, closest = _choose(recipes, [r for r in recipes if verdicts[id(r)].met], by_cell, readings)
        recipes.sort(key=lambda r: [(r.get(k) is None, r.get(k) or 0.0) for k in knobs])
        for r in recipes:
            mean = _mean_harm_asr(r, readings)
            mark = "chosen" if r is chosen else "closest (none within the bounds)" if r is closest else ""
            body.append(
                [
                    *_setting(r)[:-1],  # model, method, bits, calib: the claim-target table's columns
                    form,
                    *[_knob_text(r.get(k)) for k in knobs],
                    "-" if mean is None else f"{mean:.3f}",
                    str(verdicts[id(r)]),
                    r["patch_tag"].removesuffix(f" ({form})"),  # names what the knob columns cannot (a string setting)
                    ", ".join(map(str, r["seeds"])),
                    mark,
                ]
            )
    suites = sorted({LABELS[k] for rs in sweeps.values() for r in rs for k in _harmful_suites(r, readings)})
    return Table(
        f"recipe_choice-{groups.slug(group)}",
        f"Q-resafe's recipe, chosen by the recorded sweep — {groups.label(group)}",
        [
            *["model", "method", "bits", "risk / calib", "form"],
            *[k.removeprefix(KNOB_PREFIX) for k in knobs],
            "mean harm ASR",
            f"XSTest-safe refusal and ref. ppl {within_header(readings)} of FP",
            "patch",
            "seeds",
            "choice",
        ],
        body,
        [
            f"mean harm ASR: over {', '.join(suites) or 'no harmful suite'}; a recipe's metrics are its mean over "
            "the seeds named",
            f"rule: the lowest mean harm ASR among the recipes {within_header(readings)} of FP on every bounded "
            "metric; ties to the lower XSTest-safe refusal, then perplexity; merged and unmerged forms chosen apart",
            "closest: where no recipe keeps within the bounds, the one whose largest relative change is smallest",
            *(
                ["bounds read on the loss side only (claim_targets.sides=rise): a fall below FP keeps within"]
                if readings.sides == "rise"
                else []
            ),
        ],
    )
