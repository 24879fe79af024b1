"""Pool a cell's answers over two samples of the suites (studies run with eval.sample_seed=0 and 1) and pair
them against the backbone's on the same prompts: one delta per suite on the union of the prompts, each prompt
once (a prompt both samples drew counts with the first study's answers), so a small effect measured twice at
n=64 gets one test at up to n=128. Re-judged with the current `harm` / `refusal` rules, as
bench/rejudge_cells.py does; writes nothing.

    python bench/pool_samples.py outputs/studies/claim_safepatching outputs/studies/claim_safepatching_confirm CELL ...
    python bench/pool_samples.py FIRST SECOND CELL=OTHER_CELL ...   # paired against another cell (e.g. a control)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rejudge_cells import judged

from qresafe_exp.judges.refusal import RULES_VERSION
from qresafe_exp.paired import read_samples
from qresafe_exp.stats import paired_binary

SUITES = ("harmbench_test", "harmfulqa", "xstest", "oktest")  # AdvBench: 0 flagged in every aligned cell


def answers(study: Path, cell: str, eval_cache: Path) -> dict[str, dict[str, dict]]:
    metrics = json.loads((study / cell / "metrics.json").read_text())
    return judged(read_samples(eval_cache / metrics["artifacts"]["eval"]))


def pooled(studies: list[Path], cell: str, eval_cache: Path) -> dict[str, dict[str, dict]]:
    """{suite: {prompt id: verdict}} over the studies, the first study's answer where a prompt repeats."""
    out: dict[str, dict[str, dict]] = {}
    for study in studies:
        for suite, by_id in answers(study, cell, eval_cache).items():
            for prompt, verdict in by_id.items():
                out.setdefault(suite, {}).setdefault(prompt, verdict)
    return out


def line(name: str, cell: dict, ref: dict) -> str:
    parts = []
    for suite in (s for s in SUITES if s in cell):
        ids = sorted(set(cell[suite]) & set(ref[suite]))
        mine, theirs = [cell[suite][i]["flag"] for i in ids], [ref[suite][i]["flag"] for i in ids]
        test = paired_binary(mine, theirs)
        star = "*" if test["significant"] else ""
        parts.append(f"{sum(mine)}/{len(ids)} {test['delta']:+.2f}{star} (p {test['p_value']:.3g})")
    return f"| {name} | " + " | ".join(parts) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path, help="the study of the first sample")
    parser.add_argument("second", type=Path, help="the study of the second sample (eval.sample_seed=1)")
    parser.add_argument("cells", nargs="+", help="a cell (vs the backbone), or CELL=OTHER to pair it against OTHER")
    parser.add_argument("--eval-cache", type=Path, default=Path("outputs/cache/eval"))
    args = parser.parse_args()
    studies = [args.first, args.second]
    first_cell = args.cells[0].split("=")[0]
    backbone = json.loads((args.first / first_cell / "metrics.json").read_text())["reference_cell"]
    ref = pooled(studies, backbone, args.eval_cache)
    print(f"rules v{RULES_VERSION}; both samples pooled, each prompt once; * = exact McNemar p < 0.05 vs {backbone}")
    print("(CELL = OTHER rows: vs OTHER on the same prompts instead)")
    print("| cell | " + " | ".join(f"{s} flagged, delta (p)" for s in SUITES) + " |")
    print("|---" * (len(SUITES) + 1) + "|")
    print(line("backbone", ref, ref))
    for arg in args.cells:
        cell, _, other = arg.partition("=")
        against = pooled(studies, other, args.eval_cache) if other else ref
        print(line(f"{cell} vs {other}" if other else cell, pooled(studies, cell, args.eval_cache), against))


if __name__ == "__main__":
    main()
