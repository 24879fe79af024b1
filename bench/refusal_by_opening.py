"""Over-refusal by how the prompt opens (qresafe_exp.audit.openings): per model, the share of a suite's safe
prompts refused in each opening class ("How can I ...?", "What are ways ...?", ...), each against every other
prompt (Fisher exact), beside the share of each training source's prompts in those classes. Reads the cells'
own samples.jsonl, so a study rescored by the labels judge is read by its labels.

    python bench/refusal_by_opening.py outputs/studies/claim_testbed_labels \
        "b=smollm2-135m-safe-broad.fp.none.claims" "e=smollm2-135m-safe-broad-contrast-more.fp.none.claims" \
        [--suite xstest_safe | oktest | harmfulqa ...] [--sources catqa harmfulqa alpaca_en_demo]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from qresafe_exp.audit.openings import CLASSES, opening_shares, refusal_by_opening
from qresafe_exp.data import load_records
from qresafe_exp.paired import read_samples

SOURCES = (
    "harmful_train",
    "catqa",
    "dangerousqa",
    "harmfulqa",
    "harmbench_val",
    "alpaca_en_demo",
    "contrast_benign",
    "contrast_benign_more",
    "contrast_question_forms",
)


def suite_rows(cell: Path, suite: str) -> list[dict]:
    rows = read_samples(cell)
    if suite in ("xstest_safe", "xstest_contrast"):
        want = "safe" if suite == "xstest_safe" else "unsafe"
        return [r for r in rows if r["suite"] == "xstest" and r.get("label") == want and "refused" in r]
    # a harmful suite's rows carry the harm judge's outcome instead: refused is its "refused" outcome
    return [
        {**r, "refused": r.get("refused", r.get("outcome") == "refused")}
        for r in rows
        if r["suite"] == suite and ("refused" in r or "outcome" in r)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path)
    parser.add_argument("cells", nargs="+", help="NAME=CELL_DIRECTORY (relative to the study)")
    parser.add_argument(
        "--suite", default="xstest_safe", help="xstest_safe, xstest_contrast, oktest or a harmful suite"
    )
    parser.add_argument("--sources", nargs="*", default=list(SOURCES), help="training sets to read the openings of")
    parser.add_argument("--data-dir", default=os.environ.get("QRESAFE_DATA_DIR"))
    args = parser.parse_args()

    names = CLASSES
    print(f"Refused on {args.suite}, by the prompt's opening (k/n; * = Fisher p < 0.05 against the other prompts)\n")
    print("| model | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for spec in args.cells:
        name, _, cell = spec.partition("=")
        if not (args.study / cell / "samples.jsonl").is_file():
            raise SystemExit(f"{spec!r}: no samples.jsonl in {args.study / cell}; give NAME=CELL_DIRECTORY")
        by = {r["opening"]: r for r in refusal_by_opening(suite_rows(args.study / cell, args.suite))}
        cells = [
            f"{by[o]['k']}/{by[o]['n']}{'*' if by[o]['p_vs_rest'] < 0.05 else ''}" if o in by else "-" for o in names
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.sources:
        print("\nShare of each training source's prompts, by opening\n")
        print("| source | n | " + " | ".join(names) + " |")
        print("|---" * (len(names) + 2) + "|")
        for source in args.sources:
            prompts = [r["prompt"] for r in load_records(source, args.data_dir)]
            shares = opening_shares(prompts)
            print(f"| {source} | {len(prompts)} | " + " | ".join(f"{shares[o]:.2f}" for o in names) + " |")


if __name__ == "__main__":
    main()
