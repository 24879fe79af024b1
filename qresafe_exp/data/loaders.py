"""File parsers: one per public file format, each returning a list of plain dict records."""

from __future__ import annotations

import csv
import json
from pathlib import Path


def advbench(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        {"id": f"advbench-{i}", "prompt": row["goal"], "target": row["target"]}
        for i, row in enumerate(rows)
    ]


def xstest(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        {"id": f"xstest-{row['id']}", "prompt": row["prompt"], "type": row["type"],
         "label": row["label"], "focus": row.get("focus", "")}
        for row in rows
    ]


def alpaca_pairs(path: Path) -> list[dict]:
    """Alpaca-format instruction/input/output pairs -> prompt/response records."""
    rows = json.loads(Path(path).read_text())
    records = []
    for i, row in enumerate(rows):
        prompt = row["instruction"] if not row.get("input") else f"{row['instruction']}\n\n{row['input']}"
        records.append({"id": f"alpaca-{i}", "prompt": prompt, "response": row["output"]})
    return records


def instruction_list(path: Path) -> list[dict]:
    """refusal_direction splits: [{"instruction": ..., "category": ...}]."""
    rows = json.loads(Path(path).read_text())
    return [
        {"id": f"{Path(path).stem}-{i}", "prompt": row["instruction"], "category": row.get("category")}
        for i, row in enumerate(rows)
    ]


def alpaca_eval_reference(path: Path) -> list[dict]:
    """AlpacaEval instructions with a reference model's outputs."""
    rows = json.loads(Path(path).read_text())
    return [{"id": f"alpaca_eval-{i}", "prompt": row["instruction"], "response": row["output"],
             "subset": row.get("dataset", "")} for i, row in enumerate(rows)]
