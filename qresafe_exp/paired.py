"""Paired deltas to the FP reference: the cell's and the reference's per-prompt results, matched on
(suite, id) from the two evaluations' samples.jsonl, each with a paired interval and an exact test
(stats.paired_binary / paired_continuous).

Every score of a suite's block that is its metric or starts with it (``asr``, ``asr_keyword``), or
is one of BESIDE_THE_METRIC (``refused``), and has a row reader below is paired. A row whose value
is None (a failed verdict) leaves its prompt out of the pair. The decoding attack writes one row per
(prompt, configuration): its prompts are paired on the worst case, jailbroken under any
configuration, as its ASR counts them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from qresafe_exp.stats import paired_binary, paired_continuous


def _field(name: str) -> Callable[[dict], object]:
    return lambda row: row.get(name)


# score name -> (the row's value for it, kind: binary / log (perplexity) / linear)
READERS: dict[str, tuple[Callable[[dict], object], str]] = {
    "asr": (_field("jailbroken"), "binary"),
    "asr_keyword": (_field("jailbroken_keyword"), "binary"),
    # a harmful suite's refusal statements (judges that sort outcomes); paired beside its ASR
    "refused": (lambda r: r["outcome"] == "refused" if r.get("outcome") else None, "binary"),
    # XSTest's contrast prompts (label unsafe) are reported apart: they never enter refusal_rate
    "refusal_rate": (lambda r: None if r.get("label") == "unsafe" else r.get("refused"), "binary"),
    "accuracy": (lambda r: r["pred"] == r["answer"] if "pred" in r and "answer" in r else None, "binary"),
    "reference_perplexity": (_field("perplexity"), "log"),
    "mtbench_score": (_field("score"), "linear"),
    "win_rate": (lambda r: None if r.get("preference") is None else 100.0 * r["preference"], "linear"),
}


BESIDE_THE_METRIC = ("refused",)  # pairable scores whose names do not start with their block's metric


def read_samples(eval_path: str | Path) -> list[dict]:
    path = Path(eval_path) / "samples.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no samples.jsonl in this evaluation artifact; it is written by the "
            "evaluate stage, so delete the artifact directory to have it rebuilt"
        )
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _item_key(row: dict) -> tuple:
    return row["id"], row.get("turn")  # MT-Bench has two rows (turns) per question


def per_item(rows: list[dict], read: Callable[[dict], object], kind: str) -> dict[tuple, object]:
    """{item key: value} for one suite's rows; repeated keys (the decoding attack's configurations)
    are combined into the worst case for a flag and refused for anything else."""
    values: dict[tuple, list] = defaultdict(list)
    for row in rows:
        values[_item_key(row)].append(read(row))
    out = {}
    for key, found in values.items():
        known = [v for v in found if v is not None]
        if len(found) > 1 and kind != "binary":
            raise ValueError(
                f"suite {rows[0]['suite']}: {len(found)} rows for item {key} and no rule to "
                "combine them; give each item one row (or a distinct 'turn')"
            )
        out[key] = (any(bool(v) for v in known) if kind == "binary" else known[0]) if known else None
    return out


def pair(cell_rows: list[dict], ref_rows: list[dict], name: str) -> dict:
    """The paired comparison of one suite's rows (cell vs reference) for the score ``name``."""
    read, kind = READERS[name]
    cell, ref = per_item(cell_rows, read, kind), per_item(ref_rows, read, kind)
    keys = [k for k, v in cell.items() if v is not None and ref.get(k) is not None]
    xs, ys = [cell[k] for k in keys], [ref[k] for k in keys]
    return paired_binary(xs, ys) if kind == "binary" else paired_continuous(xs, ys, log=kind == "log")


def paired_vs_reference(scores: dict, cell_rows: list[dict], ref_rows: list[dict]) -> dict:
    """{'<suite>.<score>': paired dict} for every pairable score of the cell's blocks."""
    by_suite: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for side, rows in ((0, cell_rows), (1, ref_rows)):
        for row in rows:
            by_suite[row["suite"]][side].append(row)
    out = {}
    for suite, block in scores.items():
        metric = block.get("metric")
        for name, value in block.items():
            pairable = metric and (name.startswith(metric) or name in BESIDE_THE_METRIC)
            if pairable and name in READERS and isinstance(value, dict):
                out[f"{suite}.{name}"] = pair(*by_suite[suite], name)
        # HarmBench's standard / contextual apart; a prompt's category is the same on both sides, so rows of a
        # reference evaluated before rows kept it take it from the cell's rows of the same prompt
        kind_of = {
            r["id"]: r["functional_category"] for rows in by_suite[suite] for r in rows if r.get("functional_category")
        }
        for kind in block.get("by_functional_category") or {}:
            cell_kind, ref_kind = (
                [r for r in rows if (r.get("functional_category") or kind_of.get(r["id"])) == kind]
                for rows in by_suite[suite]
            )
            if cell_kind and ref_kind:
                out[f"{suite}.{metric}.{kind}"] = pair(cell_kind, ref_kind, metric)
    return out
