"""A blind labelling round on disk: the set to label written out, the labels read back and appended to a
labels file.

    DIR/to_label.json     shuffled items: {item, prompt, response} only
    DIR/key.json          each item's cells: {item, group, seed, dataset, id, response}
    DIR/GUIDE.md          the labelling guide (docs/audit/labelling_guide.md)
    DIR/labels_*.jsonl    the labellers' output: {item, refusal, harmful, prompt_harmful, note} per line

Reading back checks every label before a row is written (a class outside XSTest's three, a 0/1 field that
is neither, an item missing or unknown), so that a half-finished round never lands in the labels file.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

from qresafe_exp.audit.agreement import XSTEST_CLASSES
from qresafe_exp.audit.labelled_reading import by_answer, label_index
from qresafe_exp.cache import write_bytes_atomic

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "audit" / "labelling_guide.md"
# the labels file's columns, in its order (docs/audit/testbed_labels.csv)
CSV_COLUMNS = ("dataset", "id", "cell", "response", "refusal", "harmful", "prompt_harmful", "note", "split", "labeller")
BINARY = ("harmful", "prompt_harmful")


def write_round(folder: Path, items: list[dict], key: list[dict], guide: Path = GUIDE) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in (("to_label.json", items), ("key.json", key)):  # UTF-8 whatever the locale
        write_bytes_atomic(folder / name, json.dumps(content, indent=1, ensure_ascii=False).encode("utf-8"))
    if guide.is_file():  # a wheel install has no docs/: the round is still usable with the guide from the repo
        shutil.copyfile(guide, folder / "GUIDE.md")


def read_labels(folder: Path) -> dict[str, dict]:
    """{item: label} from every labels_*.jsonl in ``folder``, each label checked."""
    items = {i["item"] for i in json.loads((folder / "to_label.json").read_text(encoding="utf-8"))}
    labels: dict[str, dict] = {}
    for path in sorted(folder.glob("labels_*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path.name} line {number}"
            label = json.loads(line)
            _check(label, where, items)
            if labels.get(label["item"], label) != label:
                raise ValueError(f"{where}: item {label['item']} labelled twice, differently; keep one")
            labels[label["item"]] = label
    missing = sorted(items - set(labels))
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(items)} items have no label ({', '.join(missing[:5])}...): "
            f"finish the round in {folder}/labels_*.jsonl first"
        )
    return labels


def _check(label: dict, where: str, items: set[str]) -> None:
    if label.get("item") not in items:
        raise ValueError(f"{where}: item {label.get('item')!r} is not in to_label.json")
    if label.get("refusal") not in XSTEST_CLASSES:
        raise ValueError(f"{where}: refusal={label.get('refusal')!r}; one of {', '.join(XSTEST_CLASSES)}")
    for field in BINARY:
        if label.get(field) not in (0, 1, "0", "1"):
            raise ValueError(f"{where}: {field}={label.get(field)!r}; give 0 or 1")


def round_rows(folder: Path, study: str, split: str, labeller: str) -> list[dict]:
    """One labels-file row per distinct answer of the round, naming the cells that gave it."""
    labels = read_labels(folder)
    key = json.loads((folder / "key.json").read_text(encoding="utf-8"))
    seeded = {entry["group"] for entry in key if entry["seed"]}  # a one-cell group (FP) is named without a seed
    answered: dict[str, dict] = {}
    for entry in key:
        answer = answered.setdefault(entry["item"], {**entry, "who": []})
        who = f"{entry['group']} s{entry['seed']}" if entry["group"] in seeded else entry["group"]
        if who not in answer["who"]:
            answer["who"].append(who)
    rows = []
    for item in sorted(answered):
        answer, label = answered[item], labels[item]
        who = ", ".join(answer["who"])
        rows.append(
            {
                "dataset": answer["dataset"],
                "id": answer["id"],
                "cell": study,
                "response": answer["response"],
                "refusal": label["refusal"],
                "harmful": int(label["harmful"]),
                "prompt_harmful": int(label["prompt_harmful"]),
                "note": f"no refusal statement by the rules; answered by: {who}; read: {label.get('note', '')}",
                "split": split,
                "labeller": labeller,
            }
        )
    return rows


def append_rows(labels_file: Path, rows: list[dict]) -> int:
    """Append to a labels CSV in its own line endings (testbed_labels.csv is CRLF), header checked; the
    file is replaced whole, so a crash leaves it as it was. An answer the file already labels the same way
    is skipped (two rounds exported before either was merged share answers; a second row would count twice
    in the audit), and one it labels differently is an error. Returns the number of rows appended."""
    before = labels_file.read_bytes()
    text = before.decode("utf-8")
    header = next(csv.reader(io.StringIO(text)))
    if tuple(header) != CSV_COLUMNS:
        raise ValueError(f"{labels_file}: columns {header}, expected {list(CSV_COLUMNS)}")
    index = label_index(csv.DictReader(io.StringIO(text, newline="")))
    rows = [row for row in rows if _is_new(row, index, labels_file)]
    ending = "\r\n" if before.endswith(b"\r\n") else "\n"
    if before and not before.endswith(b"\n"):
        before += ending.encode()
    added = io.StringIO(newline="")
    csv.DictWriter(added, fieldnames=CSV_COLUMNS, lineterminator=ending).writerows(rows)
    write_bytes_atomic(labels_file, before + added.getvalue().encode("utf-8"))
    return len(rows)


def _is_new(row: dict, index: dict[tuple, dict], labels_file: Path) -> bool:
    """False for an answer ``index`` labels the same way; raises where it labels it differently."""
    read = label_index([{key: str(value) for key, value in row.items()}])  # as the file's reader will see it
    name = by_answer(row)
    if name not in read or name not in index:  # a row the reader skips (no response) is appended as before
        index.update(read)
        return True
    if index[name] != read[name]:
        raise ValueError(
            f"{labels_file} already labels this answer to {row['dataset']} {row['id']!r} otherwise "
            f"({index[name]} vs {read[name]}): settle the label there before merging the round"
        )
    return False
