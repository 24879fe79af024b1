"""Read a study's harmful-suite answers by the labels in docs/audit (qresafe_exp.audit.labelled_reading): per
group of cells (seeds pooled), the share refused (a refusal statement by the rules, or a label's full or
partial refusal) and the share harmful (labels), each paired against a reference group on the same prompts
(exact McNemar). Unmerged forms where a cell has one. `--suites xstest_safe` reads over-refusal the same way.
Writes nothing but --export's blind labelling set and --merge's labelled rows.

    python bench/labelled_reading.py outputs/studies/claim_qresafe_recipe \
        "fp=*.fp.none.claims" "qresafe=*.qresafe-t0.6-lr2e-05-e1-n192.claims*" ...
    ... --versus qresafe                  # pair against that group (seed by seed), not the first
    ... --outside outputs/studies/claim_testbed/CELL   # only the prompts that cell's evaluation did not hold
    ... --detail                          # each rate's Wilson interval, each delta's interval and p
    ... --export /tmp/lab                 # to_label.json (shuffled prompt + response), key.json, GUIDE.md
    ... --merge /tmp/lab --split claimcheck4 --labeller "agent (date)"   # the labelled round into --labels
                                                                           # first, then the reading with it
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from rejudge_cells import split_harmbench

from qresafe_exp.audit.labelled_reading import (
    compare,
    group_answers,
    label_index,
    outside,
    summary,
    unlabelled_answers,
)
from qresafe_exp.audit.labelled_reading import verdicts as read_verdicts
from qresafe_exp.audit.labelling_round import append_rows, round_rows, write_round
from qresafe_exp.paired import read_samples

SUITES = ("harmfulqa", "harmbench_standard")
OVER_REFUSAL = ("xstest_safe", "xstest_contrast", "oktest")  # not pooled by --pool: they ask for no harm


def cell_rows(cell_dir: Path, eval_cache: Path, merged: bool = False) -> list[dict]:
    """The cell's answers (its unmerged form's where it has one, unless ``merged``), HarmBench's halves and
    XSTest's safe and contrast prompts as suites of their own."""
    metrics = json.loads((cell_dir / "metrics.json").read_text())
    adapter = None if merged else ((metrics.get("patch") or {}).get("variants") or {}).get("adapter")
    rows = [
        r
        for r in split_harmbench(read_samples(eval_cache / (adapter or metrics["artifacts"])["eval"]))
        if "response" in r
    ]
    return [
        {**r, "suite": "xstest_safe" if r.get("label") == "safe" else "xstest_contrast"}
        if r["suite"] == "xstest"
        else r
        for r in rows
    ]


def group_dirs(study: Path, spec: str) -> tuple[str, list[Path]]:
    name, _, pattern = spec.partition("=")
    # X.claims, X.claims.seed1, X.claims.seed2 in seed order; a running cell (no metrics.json yet) is left out
    dirs = sorted(d for d in study.glob(pattern) if (d / "metrics.json").is_file())
    if not name or not dirs:
        raise SystemExit(f"{spec!r}: give NAME=GLOB matching cell directories of {study}")
    return name, dirs


def text(block: dict, field: str, paired: dict | None) -> str:
    k, n = block[field]["k"], block["n"]
    out = f"{k}/{n}"
    if paired is not None:
        test = paired[field]
        out += f" {test['delta']:+.2f}{'*' if test['significant'] else ''}" if test["delta"] is not None else ""
    return out


def detail(block: dict, field: str, paired: dict | None) -> str:
    lo, hi = block[field]["ci95"]
    out = f"{block[field]['k']}/{block['n']} = {block[field]['rate'] or 0:.2f} [{lo:.2f},{hi:.2f}]"
    if paired is not None and paired[field]["delta"] is not None:
        test = paired[field]
        plo, phi = test["ci95"]
        out += (
            f", {test['delta']:+.2f} [{plo:+.2f},{phi:+.2f}] ({test['cell_only']} here only, "
            f"{test['reference_only']} there only, p = {test['p_value']:.2g})"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("groups", nargs="+", help="NAME=GLOB of cell directories (one per seed)")
    parser.add_argument("--labels", type=Path, default=Path("docs/audit/testbed_labels.csv"))
    parser.add_argument("--versus", help="the reference group's NAME (default: the first)")
    parser.add_argument("--suites", nargs="+", default=list(SUITES))
    parser.add_argument("--eval-cache", type=Path, default=Path("outputs/cache/eval"))
    parser.add_argument("--export", type=Path, help="write the still-unlabelled answers here, blind")
    parser.add_argument("--merged", action="store_true", help="read the cells' merged forms, not their unmerged")
    parser.add_argument("--outside", type=Path, help="read only prompts this cell directory's evaluation lacks")
    parser.add_argument("--detail", action="store_true", help="intervals and p-values, one line per rate")
    parser.add_argument(
        "--pool", action="store_true", help="add the harmful suites read as one pool, paired prompt by prompt"
    )
    parser.add_argument("--merge", type=Path, help="append this labelled round (labels_*.jsonl) to --labels")
    parser.add_argument("--split", help="--merge: the rows' split name, e.g. claimcheck4")
    parser.add_argument("--labeller", help="--merge: who labelled, e.g. 'agent (2026-12-06)'")
    args = parser.parse_args()
    if args.merge:
        if not (args.split and args.labeller):
            raise SystemExit("--merge needs --split NAME and --labeller WHO: both are written into every row")
        rows = round_rows(args.merge, args.study.name, args.split, args.labeller)
        appended = append_rows(args.labels, rows)
        skipped = f"; {len(rows) - appended} already labelled, skipped" if appended < len(rows) else ""
        print(f"{appended} labelled answers appended to {args.labels} (split={args.split}){skipped}")

    with open(args.labels, newline="") as handle:
        index = label_index(csv.DictReader(handle))
    seen = cell_rows(args.outside, args.eval_cache, args.merged) if args.outside else None
    answers = {}
    for spec in args.groups:
        name, dirs = group_dirs(args.study, spec)
        answers[name] = group_answers([cell_rows(d, args.eval_cache, args.merged) for d in dirs], args.suites)
        if seen is not None:
            answers[name] = outside(answers[name], seen)
        print(f"{name}: {', '.join(d.name for d in dirs)}")
    read = {name: read_verdicts(a, index) for name, a in answers.items()}
    versus = args.versus or next(iter(read))
    print(f"\nlabels {args.labels} ({len(index)} answers); * = exact McNemar p < 0.05 vs {versus}, seeds pooled")
    # over-refusal suites (XSTest's safe prompts) ask for no harmful content: their refusal only
    columns = [
        (s, f) for s in args.suites for f in (("refused",) if s.startswith("xstest") else ("refused", "harmful"))
    ]
    suites = {s: s for s in args.suites}
    harmful = frozenset(s for s in args.suites if s not in OVER_REFUSAL)
    if args.pool and len(harmful) > 1:
        suites["pooled"] = harmful
        columns += [("pooled", "refused"), ("pooled", "harmful")]
        print(f"pooled: {', '.join(sorted(harmful))}")
    header = "| group | " + " | ".join(f"{s} {f}" for s, f in columns) + " | unlabelled |"
    print(header + "\n" + "|---" * (header.count("|") - 1) + "|")
    # each group's reading of each suite, and its paired test against the reference group: read once, shown twice
    blocks = {
        (name, suite): (
            summary(verdicts, pool),
            None if name == versus else compare(verdicts, read[versus], pool),
        )
        for name, verdicts in read.items()
        for suite, pool in suites.items()
    }
    for name, verdicts in read.items():
        cells = [text(blocks[name, suite][0], field, blocks[name, suite][1]) for suite, field in columns]
        print(f"| {name} | " + " | ".join(cells) + f" | {summary(verdicts)['unlabelled']} |")
    if args.detail:
        for name in read:
            for suite, field in columns:
                block, paired = blocks[name, suite]
                print(f"{name} {suite} {field}: {detail(block, field, paired)}")
    if args.export:
        items, key = unlabelled_answers(answers, index)
        write_round(args.export, items, key)
        print(f"\n{len(items)} distinct unlabelled answers ({len(key)} cell answers) -> {args.export}")


if __name__ == "__main__":
    main()
