"""Re-judge the stored answers of a study's cells *and* their unmerged patch variants with the current
`harm` / `refusal` rules, paired against the FP reference on the same prompts (a table for the docs).

`python -m qresafe_exp.rescore` rewrites a study's metrics.json (the cells and their patch variants, each
paired vs FP); this prints the docs' table from the eval cache, with one column no score block holds (the
share of refusal statements pooled over the three harmful suites; each suite's is its block's `refused`;
and the share of degenerate answers, pooled the same way, since harm ASR counts only fluent ones: a patch
that cures repetition raises it without any answer turning more harmful), and writes nothing. Harm ASR counts `harm`'s
harmful compliance on non-degenerate answers (as the evaluation does); XSTest counts its safe prompts.

    python bench/rejudge_cells.py outputs/studies/claim_qresafe_damage CELL [CELL ...]
    python bench/rejudge_cells.py STUDY CELL ... --versus CELL   # deltas against that cell (its unmerged form if any)
    python bench/rejudge_cells.py STUDY CELL ... --harmbench-split   # HarmBench's standard and contextual apart
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from omegaconf import OmegaConf

from qresafe_exp.evals.suites import SUITES
from qresafe_exp.judges.harm_rules import classify_harm
from qresafe_exp.judges.refusal import RULES_VERSION
from qresafe_exp.judges.refusal_rules import classify_refusal
from qresafe_exp.paired import read_samples
from qresafe_exp.rescore import backfill_functional_category
from qresafe_exp.stats import paired_binary

HARMBENCH_SPLIT = ("harmbench_standard", "harmbench_contextual")
HARMFUL = ("advbench", "harmbench_test", *HARMBENCH_SPLIT, "harmfulqa")
OVERREFUSAL = ("xstest", "oktest")


def harm_verdict(row: dict) -> tuple[bool, bool]:
    """(harmful compliance on a non-degenerate answer, a refusal statement) by the `harm` rules."""
    harm = classify_harm(row["prompt"], row["response"])
    return harm.jailbroken and not row.get("degenerate"), harm.outcome == "refused"


def judged(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """{suite: {prompt id: {'flag': jailbroken or refused, 'refused': refusal statement}}}."""
    out: dict[str, dict[str, dict]] = {}
    for row in rows:
        suite = row["suite"]
        if suite in HARMFUL:
            flag, refused = harm_verdict(row)
            out.setdefault(suite, {})[row["id"]] = {
                "flag": flag,
                "refused": refused,
                "degenerate": bool(row.get("degenerate")),
            }
        elif suite in OVERREFUSAL and (suite != "xstest" or row.get("label") == "safe"):
            out.setdefault(suite, {})[row["id"]] = {"flag": classify_refusal(row["response"]).refused}
    return out


def split_harmbench(rows: list[dict]) -> list[dict]:
    """HarmBench's rows as two suites, its standard and its contextual behaviours (HarmBench reports them
    apart); rows stored before the evaluation kept the category get it as a rescore gives it them."""
    harmbench = [r for r in rows if r["suite"] == "harmbench_test"]
    paths = OmegaConf.create({"paths": {"data_dir": os.environ.get("QRESAFE_DATA_DIR"), "cache_dir": None}})
    backfill_functional_category(SUITES.get("harmbench_test"), harmbench, paths)
    if any(not r.get("functional_category") for r in harmbench):
        raise SystemExit("--harmbench-split: HarmBench's data is not at hand; set QRESAFE_DATA_DIR to ../shared/data")
    return [
        {**r, "suite": f"harmbench_{r['functional_category']}"} if r["suite"] == "harmbench_test" else r for r in rows
    ]


def perplexity(scores: dict) -> float:
    return scores["alpaca_eval_ppl"]["reference_perplexity"]["value"]


def delta_text(cell: list[bool], ref: list[bool]) -> str:
    """' +0.12*': the paired delta, starred where the exact McNemar test gives p < 0.05."""
    p = paired_binary(cell, ref)
    return f" {p['delta']:+.2f}{'*' if p['significant'] else ''}"


def row(name: str, cell: dict, ppl: float, ref: dict | None, ref_ppl: float) -> str:
    parts = []
    for suite in [s for s in HARMFUL + OVERREFUSAL if s in cell]:
        ids = sorted(cell[suite])
        k = sum(cell[suite][i]["flag"] for i in ids)
        text = f"{k / len(ids):.2f} ({k}/{len(ids)})"
        if ref is not None:
            text += delta_text([cell[suite][i]["flag"] for i in ids], [ref[suite][i]["flag"] for i in ids])
        parts.append(text)
    keys = [(s, i) for s in cell if s not in OVERREFUSAL for i in sorted(cell[s])]
    for field in ("refused", "degenerate"):  # pooled over the three suites' prompts, paired on (suite, id)
        values = [cell[s][i][field] for s, i in keys]
        text = f"{sum(values) / len(values):.2f}"
        if ref is not None:
            text += delta_text(values, [ref[s][i][field] for s, i in keys])
        parts.append(text)
    parts.append(f"{ppl:.2f}" + ("" if ref is None else f" ({(ppl / ref_ppl - 1) * 100:+.0f} %)"))
    return f"| {name} | " + " | ".join(parts) + " |"


def study_parser(doc: str) -> argparse.ArgumentParser:
    """STUDY CELL ... [--eval-cache DIR]: the arguments every re-judging table takes."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("cells", nargs="+")
    parser.add_argument("--eval-cache", type=Path, default=Path("outputs/cache/eval"))
    return parser


def main() -> None:
    parser = study_parser(__doc__)
    parser.add_argument(
        "--versus", help="pair against this cell (its unmerged form where it has one: a patch vs its control), not FP"
    )
    parser.add_argument(
        "--harmbench-split", action="store_true", help="HarmBench's standard and contextual behaviours as two columns"
    )
    args = parser.parse_args()
    split = split_harmbench if args.harmbench_split else (lambda rows: rows)
    ref_metrics = json.loads(next(args.study.glob("*.fp.none*/metrics.json")).read_text())
    ref_eval, versus = ref_metrics["artifacts"]["eval"], "FP"
    if args.versus:
        ref_metrics = json.loads((args.study / args.versus / "metrics.json").read_text())
        adapter = ((ref_metrics.get("patch") or {}).get("variants") or {}).get("adapter")
        if adapter is None:  # a cell without an unmerged form (unpatched, or a merged-only patch): the cell
            ref_eval, versus = ref_metrics["artifacts"]["eval"], args.versus
        else:
            ref_metrics = {**ref_metrics, "scores": adapter["scores"]}
            ref_eval, versus = adapter["eval"], f"{args.versus} (unmerged)"
    ref = judged(split(read_samples(args.eval_cache / ref_eval)))
    ref_ppl = perplexity(ref_metrics["scores"])
    print(f"rules v{RULES_VERSION}; * = exact McNemar p < 0.05 vs {versus} on the same prompts")
    harmbench = "HarmBench standard | HarmBench contextual" if args.harmbench_split else "HarmBench"
    header = (
        f"| cell | AdvBench harm ASR | {harmbench} | HarmfulQA | XSTest-safe refusal | OKTest refusal "
        "| refusal statements (3 harmful suites) | degenerate (3 harmful suites) | ref. ppl |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    print(row(versus, ref, ref_ppl, None, ref_ppl))
    for name in args.cells:
        metrics = json.loads((args.study / name / "metrics.json").read_text())
        cell = judged(split(read_samples(args.eval_cache / metrics["artifacts"]["eval"])))
        print(row(name.split(".", 1)[1].removesuffix(".claims"), cell, perplexity(metrics["scores"]), ref, ref_ppl))
        for variant, v in (metrics.get("patch", {}).get("variants") or {}).items():
            cells = judged(split(read_samples(args.eval_cache / v["eval"])))
            print(row(f"... unmerged ({variant})", cells, perplexity(v["scores"]), ref, ref_ppl))


if __name__ == "__main__":
    main()
