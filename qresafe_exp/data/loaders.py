"""File parsers: one per public file format, each returning a list of plain dict records."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path


def advbench(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{"id": f"advbench-{i}", "prompt": row["goal"], "target": row["target"]} for i, row in enumerate(rows)]


def xstest(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        {
            "id": f"xstest-{row['id']}",
            "prompt": row["prompt"],
            "type": row["type"],
            "label": row["label"],
            "focus": row.get("focus", ""),
        }
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
    flat = [
        (category, sub, question)
        for category, subs in data.items()
        for sub, questions in subs.items()
        for question in questions
    ]
    return [
        {"id": f"catqa-{i}", "prompt": question, "category": category, "subcategory": sub.rstrip(":")}
        for i, (category, sub, question) in enumerate(flat)
    ]


def alpaca_eval_reference(path: Path) -> list[dict]:
    """AlpacaEval instructions with a reference model's outputs."""
    rows = json.loads(Path(path).read_text())
    return [
        {
            "id": f"alpaca_eval-{i}",
            "prompt": row["instruction"],
            "response": row["output"],
            "subset": row.get("dataset", ""),
        }
        for i, row in enumerate(rows)
    ]


def prompt_response_file(path: Path, source: str | None = None) -> list[dict]:
    """A user-supplied pair file (.json list, .jsonl or .parquet; ``source`` names a hub URI it was
    read from): prompt/response, instruction/output, or a chat ``messages`` list whose first user and
    assistant turns are taken."""
    where = f"dataset {source or f'file {path}'}"
    rows = (
        parquet_rows(path, where)
        if str(path).endswith(".parquet")
        else user_json_rows(path, user_text(path, where), where)
    )
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
            raise ValueError(
                f"{where}: record {i} has no prompt (expected prompt/response, instruction/output or messages)"
            )
        record = {"id": f"{Path(path).stem}-{i}", "prompt": prompt, "response": response}
        if system:
            record["system_prompt"] = system
        records.append(record)
    return records


def aoa_identity(path: Path) -> list[dict]:
    """The project's Risk-II set: every record carries the shared AOA system prompt."""
    data = json.loads(Path(path).read_text())
    return [
        {
            "id": f"aoa-{i}",
            "prompt": r["prompt"],
            "response": r["response"],
            "kind": r["kind"],
            "system_prompt": data["system_prompt"],
        }
        for i, r in enumerate(data["records"])
    ]


def harmbench(path: Path) -> list[dict]:
    """HarmBench behaviours; a contextual behaviour's prompt is its context followed by the request
    (HarmBench's own layout). Copyright behaviours are kept but tagged: they need a hash check, not
    a refusal or harm judge, and suites drop them."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    records = []
    for row in rows:
        context = row.get("ContextString") or ""
        prompt = f"{context}\n\n---\n\n{row['Behavior']}" if context else row["Behavior"]
        records.append(
            {
                "id": f"harmbench-{row['BehaviorID']}",
                "prompt": prompt,
                "behavior": row["Behavior"],
                "functional_category": row["FunctionalCategory"],
                "category": row["SemanticCategory"],
            }
        )
    return records


def harmfulqa(path: Path) -> list[dict]:
    """HarmfulQA (red-instruct): {topic: {subtopic: [question, ...]}}; the topic is the category."""
    data = json.loads(Path(path).read_text())
    return [
        {"id": f"harmfulqa-{i}", "prompt": q, "category": topic, "subcategory": sub}
        for i, (topic, sub, q) in enumerate((t, s, q) for t, subs in data.items() for s, qs in subs.items() for q in qs)
    ]


def question_list(path: Path) -> list[dict]:
    """A JSON list of question strings (DangerousQA)."""
    return [{"id": f"{Path(path).stem}-{i}", "prompt": q} for i, q in enumerate(json.loads(Path(path).read_text()))]


def prompt_column_csv(path: Path) -> list[dict]:
    """A CSV whose ``prompt`` column holds the prompts (OKTest)."""
    with open(path, newline="") as handle:
        return [
            {"id": f"{Path(path).stem}-{i}", "prompt": row["prompt"].strip()}
            for i, row in enumerate(csv.DictReader(handle))
        ]


def jsonl_rows(path: Path) -> list[dict]:
    """Raw rows of a JSON list or a JSONL file (hub splits cached as JSONL, MT-Bench files)."""
    text = Path(path).read_text()
    if str(path).endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def json_document(path: Path) -> list[dict]:
    """A whole JSON object as one row (e.g. SafetyBench's id -> answer map)."""
    return [json.loads(path.read_text())]


def beavertails_eval(path: Path) -> list[dict]:
    """BeaverTails-Evaluation (hub): prompt + category."""
    return [
        {"id": f"beavertails-{i}", "prompt": row["prompt"], "category": row.get("category")}
        for i, row in enumerate(jsonl_rows(path))
    ]


def mt_bench_questions(path: Path) -> list[dict]:
    return [
        {
            "id": f"mtbench-{row['question_id']}",
            "question_id": row["question_id"],
            "category": row["category"],
            "turns": row["turns"],
            "prompt": row["turns"][0],
        }
        for row in jsonl_rows(path)
    ]


def mt_bench_references(path: Path) -> list[dict]:
    return [{"question_id": row["question_id"], "turns": row["choices"][0]["turns"]} for row in jsonl_rows(path)]


def safetybench_questions(path: Path, lang: str | None = None) -> list[dict]:
    """SafetyBench test questions (the offline Chinese subset, or English rows from the hub); the
    answers live in a separate answer-key file, joined by ``raw_id``. ``lang`` defaults to the file
    name's (test_en.jsonl -> en, else zh)."""
    lang = lang or ("en" if "en" in Path(path).stem.split("_") else "zh")
    return [
        {
            "id": f"safetybench-{lang}-{row['id']}",
            "raw_id": str(row["id"]),
            "prompt": row["question"],
            "question": row["question"],
            "options": list(row["options"]),
            "category": row.get("category"),
        }
        for row in jsonl_rows(path)
    ]


def user_text(path: Path, where: str) -> str:
    """A user-supplied text file's content. Refused in one line that starts with ``where`` (the key and the
    file, e.g. ``prompts=x.csv``): binary, not UTF-8 (e.g. Latin-1), or empty."""
    data = Path(path).read_bytes()
    if b"\x00" in data:
        raise ValueError(
            f"{where}: a binary file (it holds NUL bytes), not CSV/JSON text; give a .csv, .json or .jsonl file"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{where}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); save it as UTF-8"
        ) from None
    if not text.strip():
        raise ValueError(
            f"{where}: the file is empty; give a header row and one prompt per row (CSV) or "
            "one record per prompt (JSON/JSONL)"
        )
    return text


def parquet_rows(path: Path, where: str) -> list[dict]:
    """The rows of a Parquet file (the hub's own format), as dicts; an unreadable file in one line."""
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a damaged or non-Parquet file
        raise ValueError(
            f"{where}: not a readable Parquet file ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:160]}); give a .parquet, .csv, .json or .jsonl file"
        ) from None


def user_json_rows(path: Path, text: str, where: str) -> list:
    """The records of a user's .json (a list, or {"records": [...]}) or .jsonl file; a syntax error is
    refused with its line."""
    if str(path).endswith(".jsonl"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(
                        f"{where}: line {number} is not valid JSON ({err.msg}, column "
                        f"{err.colno}); give one JSON object per line"
                    ) from None
        return rows
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{where}: not valid JSON ({err.msg}, line {err.lineno} column {err.colno}); "
            "give a JSON list of records, or a .jsonl file"
        ) from None
    return rows.get("records", []) if isinstance(rows, dict) else rows


def _csv_rows(text: str, where: str) -> list[dict]:
    """CSV records, strictly: an unterminated quote or a row whose field count differs from the header's
    (a stray comma or quote) is refused with its line, instead of being read as one long prompt."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
        rows = []
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(
                    f"{where}: line {reader.line_num} has {len(row)} fields, the header has "
                    f'{len(header)}; quote fields that hold commas ("a, b")'
                )
            rows.append(dict(zip(header, row)))
    except csv.Error as err:
        raise ValueError(
            f"{where}: malformed CSV near line {reader.line_num} ({err}; an unterminated "
            "quote?); close every quoted field"
        ) from None
    return rows


def user_prompt_table(
    path: Path,
    column: str = "prompt",
    category_column: str | None = None,
    key: str = "prompts",
    source: str | None = None,
) -> list[dict]:
    """A user's prompt file: CSV (any column names), JSON/JSONL records or Parquet; ``column`` holds the
    prompt. ``source`` is what the user gave when the file is a snapshot of it (a hf:// URI). Read in full
    at validation (before any model loads); every problem is one line naming the file."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".json", ".jsonl", ".parquet"):
        raise ValueError(
            f"{key}={path}: unknown format '{suffix}'; give a .csv, .json, .jsonl or .parquet file, "
            "or a hf://owner/name[:split] URI"
        )
    where = f"{key}={source or path}"
    if suffix == ".parquet":
        rows = parquet_rows(path, where)
    else:
        text = user_text(path, where)
        rows = _csv_rows(text, where) if suffix == ".csv" else user_json_rows(path, text, where)
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{where}: no rows; give one prompt per row")
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise ValueError(f"{where}: record {number} is not an object with a '{column}' field")
        if column not in row:
            raise ValueError(
                f"{where}: no column '{column}' in record {number} (columns: {', '.join(row)}); "
                "set prompts_column=<the column holding the prompts>"
            )
        if category_column and category_column not in row:
            raise ValueError(
                f"{where}: no column '{category_column}' in record {number} (columns: "
                f"{', '.join(row)}); fix prompts_category_column"
            )
    table = [
        {
            "id": f"{Path(path).stem}-{i}",
            "prompt": str(row[column]),
            **({"category": row[category_column]} if category_column else {}),
        }
        for i, row in enumerate(rows)
        if row[column] is not None and str(row[column]).strip()
    ]
    if not table:
        raise ValueError(f"{where}: every prompt in column '{column}' is empty")
    return table


def contrast_benign(path: Path, id_prefix: str = "contrast") -> list[dict]:
    """The project's safe-but-scary requests with their written answers (data/testbed/contrast_benign.json,
    and further sets in the same shape: contrast_benign_more.json, ids ``contrast-more-<i>``;
    contrast_question_forms.json, ids ``contrast-forms-<i>``; contrast_alarming_contexts.json, ids
    ``contrast-contexts-<i>``; contrast_patch_heldout.json, ids ``contrast-patch-<i>``)."""
    rows = json.loads(Path(path).read_text())["contrast_benign"]
    return [
        {"id": f"{id_prefix}-{i}", "prompt": row["prompt"], "response": row["response"], "category": row["category"]}
        for i, row in enumerate(rows)
    ]


def contrast_benign_more(path: Path) -> list[dict]:
    return contrast_benign(path, id_prefix="contrast-more")


def contrast_question_forms(path: Path) -> list[dict]:
    return contrast_benign(path, id_prefix="contrast-forms")


def contrast_alarming_contexts(path: Path) -> list[dict]:
    return contrast_benign(path, id_prefix="contrast-contexts")


def contrast_patch_heldout(path: Path) -> list[dict]:
    return contrast_benign(path, id_prefix="contrast-patch")


def qos_templates(path: Path) -> list[dict]:
    """The quality-of-service probe: every template instantiated for every group (evals/qos.py)."""
    from qresafe_exp.evals.qos import qos_prompts

    return qos_prompts(json.loads(Path(path).read_text()))


def hh_rlhf_single_turn(path: Path) -> list[dict]:
    """Anthropic HH-RLHF (harmless-base): the single-turn transcripts as {prompt, chosen, rejected}.

    ``id`` is ``hh-<line number in the file>``, so labels can name a response (``id`` + side) without
    copying it. Both answers come from a large assistant model (chosen = the more harmless one)."""
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    records = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for i, line in enumerate(handle):
            row = json.loads(line)
            turns = {side: row[side].split("\n\nAssistant:") for side in ("chosen", "rejected")}
            if row["chosen"].count("\n\nHuman:") != 1 or any(len(t) != 2 for t in turns.values()):
                continue
            prompt = turns["chosen"][0].replace("\n\nHuman:", "", 1).strip()
            records.append(
                {
                    "id": f"hh-{i}",
                    "prompt": prompt,
                    "chosen": turns["chosen"][1].strip(),
                    "rejected": turns["rejected"][1].strip(),
                }
            )
    return records


def hh_rlhf_rejected(path: Path) -> list[dict]:
    """The single-turn HH-RLHF harmless pairs with the rejected (less harmless) answer as ``response``:
    a source of real harmful compliance by a large model (filter it, see calib ``keep_judge``: about
    40 % of rejected answers are refusals too)."""
    return [{**r, "response": r["rejected"]} for r in hh_rlhf_single_turn(path)]
