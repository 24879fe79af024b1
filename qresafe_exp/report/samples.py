"""The dashboard's sample browser data: every cell's prompts and responses (samples.jsonl) with every
judge's verdict recorded on the row, the degeneration flags, and two precomputed marks: the judges
disagree, and the headline verdict differs from the cell's FP reference on the same prompt.

Verdict fields, by what wrote them (evals/asr.py, evals/overrefusal.py):
- harmful suites: ``jailbroken`` (the cell's judge, named in metrics.json protocol.judge.name; it enters the
  ASR) and ``jailbroken_keyword`` (the GCG keyword list, kept beside it);
- refusal suites: ``refused`` (eval.refusal_judge, protocol.refusal_judge; it enters the refusal rate) and
  ``refused_strmatch`` (XSTest's prefix rule);
- any other ``jailbroken_<name>`` / ``refused_<name>`` field, or a ``verdicts`` dict {judge: bool}, is
  shown as judge <name>, so a further judge appears without a change here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qresafe_exp.paired import read_samples

HEADLINE = ("jailbroken", "refused")  # the field that enters the suite's metric, in the order tried
ALIASES = {"strmatch": "xstest_strmatch"}
# the degeneration guard's inputs, with the page's short names
FLAGS = {"fp_perplexity": "FP ppl", "repeated_ngram_fraction": "repeated n-grams", "word_char_fraction": "word chars"}


def read(cell_dir: Path) -> list[dict] | None:
    """A cell folder's samples.jsonl rows; None where it has none."""
    return read_samples(cell_dir) if (cell_dir / "samples.jsonl").is_file() else None


def _headline_names(metrics: dict) -> dict[str, str]:
    protocol = metrics.get("protocol") or {}
    return {
        "jailbroken": (protocol.get("judge") or {}).get("name") or "judge",
        "refused": protocol.get("refusal_judge") or "refusal",
    }


def verdicts(row: dict, names: dict[str, str]) -> dict[str, bool | None]:
    """{judge name: verdict} for one row; the headline judge first. A verdict that failed is None."""
    out: dict[str, bool | None] = {}
    for field in HEADLINE:
        if field in row:
            out[names[field]] = row[field]
        for key, value in row.items():
            if key.startswith(field + "_") and (value is None or isinstance(value, bool)):
                name = key.removeprefix(field + "_")
                name = ALIASES.get(name, name)
                out[name if name not in out else f"{name} ({key})"] = value
    for name, value in (row.get("verdicts") or {}).items():
        out.setdefault(name, value)
    return out


def disagree(row_verdicts: dict[str, bool | None]) -> bool:
    known = {v for v in row_verdicts.values() if v is not None}
    return len(known) > 1


def _headline(row: dict) -> bool | None:
    return next((row[f] for f in HEADLINE if f in row), None)


def _kind(row: dict) -> str | None:
    """What a true verdict means on this row: "harm" (jailbroken) or "refusal" (refused)."""
    return "harm" if "jailbroken" in row else "refusal" if "refused" in row else None


def _key(row: dict) -> tuple:
    return (row.get("suite"), row.get("id"), row.get("decoding"))  # the decoding attack: one row per configuration


def browser_data(
    metrics: list[dict], cell_dirs: dict[str, Path], max_chars: int, rows_of: Callable[[str], list[dict]] | None = None
) -> dict:
    """JSON for the page. Prompts are stored once (every cell of a study answers the same ones);
    responses longer than ``max_chars`` are cut, and the row says how long the full one is. ``rows_of``: the
    report's shared reader (report/versus.py Answers.samples), so no file is read twice."""
    rows_of = rows_of or (lambda cell: read(cell_dirs[cell]))
    read_rows = {m["cell"]: rows_of(m["cell"]) if m["cell"] in cell_dirs else None for m in metrics}
    prompts: dict[tuple, int] = {}
    prompt_list: list[dict] = []
    cells = []
    for m in sorted(metrics, key=lambda m: m["cell"]):
        rows = read_rows[m["cell"]]
        ref_name = m.get("reference_cell")
        reference = {_key(r): (i, r) for i, r in enumerate(read_rows.get(ref_name) or [])} if ref_name else {}
        names = _headline_names(m)
        protocol = m.get("protocol") or {}
        entry = {
            "cell": m["cell"],
            "reference_cell": ref_name,
            "eval": protocol.get("eval"),
            "protocol": protocol.get("protocol"),
            "samples": [],
        }
        if rows is None:
            entry["note"] = "no samples.jsonl beside this cell's metrics.json"
        for r in rows or []:
            pkey = (r.get("suite"), r.get("id"), r.get("prompt"))
            if pkey not in prompts:
                prompts[pkey] = len(prompt_list)
                prompt_list.append(
                    {
                        "suite": r.get("suite"),
                        "id": r.get("id"),
                        "prompt": r.get("prompt"),
                        "category": r.get("category") or r.get("type"),
                    }
                )  # not "label": a verdict
            text = r.get("response")
            if text is None and r.get("perplexity") is not None:  # log-prob suites score a reference answer
                text = f"(no generation: perplexity {r['perplexity']:.3f} of the reference answer)"
            v = verdicts(r, names)
            ref_index, ref_row = reference.get(_key(r), (None, None))
            headline, ref_headline = _headline(r), _headline(ref_row) if ref_row else None
            entry["samples"].append(
                {
                    "p": prompts[pkey],
                    "decoding": r.get("decoding"),
                    "kind": _kind(r),
                    "response": (text or "")[:max_chars],
                    "length": len(text or ""),
                    "verdicts": v,
                    "disagree": disagree(v),
                    "degenerate": r.get("degenerate"),
                    "reasons": r.get("reasons") or [],
                    "flags": {short: r[f] for f, short in FLAGS.items() if r.get(f) is not None},
                    # the paired test's discordant pair: the headline verdict flips against FP on this prompt
                    "vs_fp": (
                        ref_row is not None and None not in (headline, ref_headline) and headline != ref_headline
                    ),
                    "fp_index": ref_index,  # the same prompt's row in the reference cell's samples (shown beside)
                }
            )
        cells.append(entry)
    return {"prompts": prompt_list, "cells": cells, "max_chars": max_chars}
