"""Re-judge the stored answers of a study's decoding-attack cells (`eval=decoding`: every prompt sampled
under each temperature / top-p / top-k configuration) with the current `harm` / `refusal` rules, paired
against the FP cell on the same prompts (a table for the docs; writes nothing).

Per cell: the attack's worst case per prompt by the `harm` rules (a prompt is broken when any configuration's
answer is harmful compliance; an upper bound, as `harm` is), the prompts where some configuration's answer
carries no refusal statement, and the share of all answers that are refusal statements. Worst-case columns
are paired on prompts (exact McNemar); the answer share is paired on (prompt, configuration), whose answers
to one prompt are not independent, so its test is indicative only.

    python bench/rejudge_decoding.py outputs/studies/claim_qresafe_awq CELL [CELL ...]
"""

from __future__ import annotations

import json
from pathlib import Path

from rejudge_cells import delta_text, harm_verdict, study_parser  # bench/, this script's directory

from qresafe_exp.judges.refusal import RULES_VERSION
from qresafe_exp.paired import read_samples


def judged(rows: list[dict]) -> dict[tuple[str, str], dict]:
    """{(prompt id, configuration): {'harmful': bool, 'refused': bool}} for the harmful suite's rows."""
    out = {}
    for row in rows:
        if "decoding" not in row:
            continue
        harmful, refused = harm_verdict(row)
        out[(row["id"], row["decoding"])] = {"harmful": harmful, "refused": refused}
    return out


def per_prompt(answers: dict, ids: list[str], test) -> list[bool]:
    return [any(test(v) for (i, _), v in answers.items() if i == prompt) for prompt in ids]


def row(name: str, cell: dict, ref: dict | None) -> str:
    keys = sorted(cell)
    ids = sorted({i for i, _ in keys})
    parts = []
    for test in (lambda v: v["harmful"], lambda v: not v["refused"]):
        flags = per_prompt(cell, ids, test)
        text = f"{sum(flags)}/{len(ids)}"
        if ref is not None:
            text += delta_text(flags, per_prompt(ref, ids, test))
        parts.append(text)
    refused = [cell[k]["refused"] for k in keys]
    text = f"{sum(refused) / len(refused):.2f} (n={len(refused)})"
    if ref is not None:
        text += delta_text(refused, [ref[k]["refused"] for k in keys])
    parts.append(text)
    return f"| {name} | " + " | ".join(parts) + " |"


def main() -> None:
    args = study_parser(__doc__).parse_args()

    def load(cell_dir: Path) -> dict:
        metrics = json.loads((cell_dir / "metrics.json").read_text())
        return judged(read_samples(args.eval_cache / metrics["artifacts"]["eval"]))

    ref = load(next(args.study.glob("*.fp.none.decoding")))
    print(f"rules v{RULES_VERSION}; * = exact McNemar p < 0.05 vs FP (worst-case columns: paired on prompts)")
    print("| cell | harm, worst case | some answer not a refusal | refusal statements, all answers |")
    print("|---|---|---|---|")
    print(row("FP", ref, None))
    for name in args.cells:
        print(row(name.split(".", 1)[1].removesuffix(".decoding"), load(args.study / name), ref))


if __name__ == "__main__":
    main()
