"""The claims table paired against a named control instead of FP (`report versus=<patch tag>`).

A method's claim over its control ("better than the random mask", "cheaper than DPO and as safe") is a
paired test on the same prompts, not two intervals side by side: each row of a damaged cell's base is
matched with the control's answers on the same prompts (paired.py: exact McNemar, paired interval),
with the control's run of the same seed where it has one, else its lowest seed. The rows come back as
copies whose ``.vs_fp`` columns hold the deltas against the control, so tables.claims renders them.

A setting run at two or more seeds, each against the control's run of the same seed, also gets one test
over all of them (``POOLED``, shown on the claims table's mean row): every seed's prompts are items of
their own, so three seeds of 64 prompts are 192 pairs. The seeds' trainings are independent, so under no
difference each seed's discordant pairs split evenly and so do the pooled ones: the exact test holds.
``pooled_vs_reference`` does the same against each row's own reference (FP) for the plain tables.
"""

from __future__ import annotations

from pathlib import Path

from qresafe_exp import metrics as cell_metrics
from qresafe_exp.paired import paired_vs_reference, read_samples
from qresafe_exp.report.collect import paired_columns, variant_cell
from qresafe_exp.report.options import one_or_many
from qresafe_exp.report.tables import POOLED, _base


class Answers(dict):
    """{row cell name: (its scores, the folder of its samples.jsonl)}, with each folder's samples.jsonl read
    at most once per report, by whichever consumer (a paired table, a pooled test, the sample browser) asks
    first: a study of many cells has files of megabytes, and each is wanted by several of them."""

    def __init__(self, found=()):
        super().__init__(found)
        self._rows: dict[str, list[dict]] = {}

    def samples(self, cell: str) -> list[dict]:
        if cell not in self._rows:
            self._rows[cell] = read_samples(self[cell][1])
        return self._rows[cell]

    def samples_if_any(self, cell: str) -> list[dict] | None:
        """The cell's rows, or None where its answers are not at hand (the sample browser's reading)."""
        return self.samples(cell) if cell in self else None


def answers(metrics: list, cell_dirs: dict[str, Path], eval_cache: Path) -> Answers:
    """Every cell and patch variant whose answers are at hand; a variant's lie in the eval cache (metrics.json
    names its artifact), or, once the study was re-scored, beside its cell (the variant's ``samples``: the
    artifact keeps the verdicts it was evaluated with). A row without them is shown with no delta."""
    out = {}
    for m in map(cell_metrics.parse, metrics):
        if m.cell in cell_dirs:
            out[m.cell] = (m.raw.get("scores") or {}, cell_dirs[m.cell])
        for name, variant in (m.patch.get("variants") or {}).items():
            if variant.get("scores") and variant.get("eval"):
                folder = eval_cache / variant["eval"]
                if variant.get("samples") and m.cell in cell_dirs:
                    rescored = cell_dirs[m.cell] / variant["samples"]
                    folder = rescored if (rescored / "samples.jsonl").is_file() else folder
                out[variant_cell(m.cell, name)] = (variant["scores"], folder)
    return Answers((cell, found) for cell, found in out.items() if (found[1] / "samples.jsonl").is_file())


def control_runs(rows: list[dict], tag: str, required: bool = True) -> dict[tuple, dict[int, dict]]:
    """{base: {seed: the control's row}}; ``required``: a clear error naming the patch tags there are when
    none matches."""
    runs: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        if r["status"] == "ok" and r["patch"] != "none" and r["patch_tag"] == tag:
            runs.setdefault(_base(r), {})[r.get("seed") or 0] = r
    if not runs and required:
        tags = sorted({r["patch_tag"] for r in rows if r["patch"] != "none" and r.get("patch_tag")})
        raise ValueError(
            f"versus={tag!r}: no patched cell of this study has that patch tag. Give one of: {', '.join(tags)} "
            "(as the claims table writes them, e.g. 'qresafe-t0.6 (unmerged)' for an unmerged form)"
        )
    return runs


def versus_rows(
    rows: list[dict], tag: str, answers_of: dict[str, tuple[dict, Path]], required: bool = True
) -> list[dict]:
    """Copies of ``rows`` with every ``.vs_fp`` column replaced: the paired delta against control ``tag``
    of the same base (same seed, else its lowest), none where the base has no control or either side's
    answers are missing; the control's own rows have none. Each paired row names its control (``versus_cell``)."""
    controls = control_runs(rows, tag, required)
    samples = _reader(answers_of)

    out = []
    settings: dict[tuple, list[dict]] = {}  # the rows paired with the control's run of their own seed
    for r in rows:
        row = {k: v for k, v in r.items() if ".vs_fp" not in k and k != POOLED}  # tests vs FP do not carry over
        runs = controls.get(_base(r)) or {}
        control = runs.get(r.get("seed") or 0) or (runs[min(runs)] if runs else None)
        if control is not None and control["cell"] != r["cell"] and {r["cell"], control["cell"]} <= answers_of.keys():
            tests = paired_vs_reference(answers_of[r["cell"]][0], samples(r["cell"]), samples(control["cell"]))
            for name, test in tests.items():
                row.update(paired_columns(name, cell_metrics.paired_delta(test)))
            row["versus_cell"] = control["cell"]
            row["versus_seed"] = control.get("seed") or 0
            if row["versus_seed"] == (r.get("seed") or 0):
                settings.setdefault((_base(r), r["patch_tag"]), []).append(row)
        out.append(row)
    for runs in settings.values():
        if len(runs) > 1:
            pooled = _pooled(runs, answers_of, samples)
            for row in runs:
                row[POOLED] = pooled
    return out


def pooled_vs_reference(rows: list[dict], answers_of: dict[str, tuple[dict, Path]]) -> list[dict]:
    """``rows``, where a patched setting ran at two or more seeds against one reference cell (its FP) with every
    answer at hand, with ``POOLED``: one paired test over the seeds against that reference."""
    settings: dict[tuple, list[dict]] = {}
    for r in rows:
        if (
            r.get("status") == "ok"
            and r["patch"] != "none"
            and {r["cell"], r.get("reference_cell")} <= answers_of.keys()
        ):
            settings.setdefault((_base(r), r["patch_tag"], r["reference_cell"]), []).append(r)
    samples = _reader(answers_of)

    pooled = {}
    for runs in settings.values():
        if len(runs) > 1:
            columns = _pooled([{**r, "versus_cell": r["reference_cell"]} for r in runs], answers_of, samples)
            pooled.update({r["cell"]: columns for r in runs})
    return [{**r, POOLED: pooled[r["cell"]]} if r["cell"] in pooled else r for r in rows]


def _reader(answers_of: dict[str, tuple[dict, Path]]):
    """cell -> its samples.jsonl rows, each file read once (by the report's shared ``Answers``, or here)."""
    return (answers_of if isinstance(answers_of, Answers) else Answers(answers_of)).samples


def _pooled(runs: list[dict], answers_of: dict[str, tuple[dict, Path]], samples) -> dict:
    """The paired columns of one test over every seed of a setting against the control's run of the same seed,
    each seed's prompts as items of their own."""
    mine, theirs = [], []
    for r in runs:
        seed = r.get("seed") or 0
        for side, cell in ((mine, r["cell"]), (theirs, r["versus_cell"])):
            side += [{**s, "id": f"seed{seed}/{s['id']}"} for s in samples(cell)]
    columns = {"seeds": len(runs)}
    for name, test in paired_vs_reference(answers_of[runs[0]["cell"]][0], mine, theirs).items():
        columns.update(paired_columns(name, cell_metrics.paired_delta(test)))
    return columns


def tags(option) -> list[str]:
    """The report's ``versus`` option as a list of control tags: null, one tag, or a list of them (one paired
    claims table per control, e.g. the random mask and LoRA DPO and full DPO in one report)."""
    listed = one_or_many(option)
    if listed is None:
        return []
    if not listed:
        raise ValueError("versus=[]: give a patch tag, a list of them, or null for FP only")
    return listed


def versus_tables(rows: list[dict], tag: str, answers_of: dict[str, tuple[dict, Path]]) -> list:
    """One claims table per (eval, protocol) group that holds the control ``tag``, its deltas against it."""
    from qresafe_exp.report import groups, tables

    control_runs(rows, tag)  # the tag is one of the study's patches, or a clear error
    made = []
    for group_rows in groups.split(rows).values():
        if control_runs(group_rows, tag, required=False):
            table = tables.claims(versus_rows(group_rows, tag, answers_of, required=False), versus=tag)
            if table is not None:
                made.append(table)
    return made
