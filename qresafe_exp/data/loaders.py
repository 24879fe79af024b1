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


def categorical_qa(path: Path) -> list[dict]:
    """CategoricalQA (red-instruct): {category: {subcategory: [question, ...]}} -> flat prompts."""
    data = json.loads(path.read_text())
    return [{"prompt": question, "category": category, "subcategory": sub.rstrip(":")}
            for category, subs in data.items() for sub, questions in subs.items() for question in questions]


def alpaca_eval_reference(path: Path) -> list[dict]:
    """AlpacaEval instructions with a reference model's outputs."""
    rows = json.loads(Path(path).read_text())
    return [{"id": f"alpaca_eval-{i}", "prompt": row["instruction"], "response": row["output"],
             "subset": row.get("dataset", "")} for i, row in enumerate(rows)]


def prompt_response_file(path: Path) -> list[dict]:
    """A user-supplied pair file (.json list or .jsonl): prompt/response, instruction/output, or a
    chat ``messages`` list whose first user and assistant turns are taken."""
    text = Path(path).read_text()
    rows = [json.loads(line) for line in text.splitlines() if line.strip()] if str(path).endswith(".jsonl") \
        else json.loads(text)
    if isinstance(rows, dict):
        rows = rows.get("records", [])
    records = []
    for i, row in enumerate(rows):
        if "messages" in row:
            turns = {m["role"]: m["content"] for m in reversed(row["messages"])}  # the first of each role wins
            prompt, response, system = turns.get("user"), turns.get("assistant"), turns.get("system")
        else:
            prompt = row.get("prompt") or row.get("instruction")
            if row.get("input"):
                prompt = f"{prompt}\n\n{row['input']}"
            response, system = row.get("response", row.get("output")), row.get("system_prompt")
        if not prompt:
            raise ValueError(f"{path}: record {i} has no prompt (expected prompt/response, instruction/output "
                             "or messages)")
        record = {"id": f"{Path(path).stem}-{i}", "prompt": prompt, "response": response}
        if system:
            record["system_prompt"] = system
        records.append(record)
    return records


def aoa_identity(path: Path) -> list[dict]:
    """The project's Risk-II set: every record carries the shared AOA system prompt."""
    data = json.loads(Path(path).read_text())
    return [{"id": f"aoa-{i}", "prompt": r["prompt"], "response": r["response"], "kind": r["kind"],
             "system_prompt": data["system_prompt"]} for i, r in enumerate(data["records"])]
