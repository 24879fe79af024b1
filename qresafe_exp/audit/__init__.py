"""Judge audits: how well a judge agrees with labels (accuracy, precision, recall, F1, Cohen's kappa).

A labels file is a CSV with a label column per task (names in config). A labelled set never copies a
dataset: the prompt is a column or joined back from a registry dataset by ``dataset`` + ``id``, and
so is the response when the file has no response column but a ``side`` column naming the record's
field that holds it (HH-RLHF: ``chosen`` / ``rejected``). Rows with an empty label are skipped and
counted (``harmful`` is only labelled where the prompt is harmful). ``positive`` lists the label
values that mean the judge's decision should be True (``jailbroken`` for harm, ``refused`` for refusal).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from qresafe_exp.audit.agreement import XSTEST_CLASSES, agreement, agreement_multiclass, cohen_kappa

__all__ = [
    "COLUMNS",
    "Labelled",
    "XSTEST_CLASSES",
    "agreement",
    "agreement_multiclass",
    "cohen_kappa",
    "label_files",
    "load_labelled",
]


# The labels files' column names (conf/audit.yaml's `columns`, with the refusal task's label column): what
# a reader outside the audit app (the `labels` judge) passes to load_labelled.
COLUMNS = {
    "prompt": "prompt",
    "response": "response",
    "label": "refusal",
    "side": "side",
    "dataset": "dataset",
    "id": "id",
    "cell": "cell",
}


@dataclass
class Labelled:
    rows: list[dict]
    # per labels file: rows dropped because the label was empty (or failed `where`)
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)


def label_files(labels) -> list[Path]:
    """One path, a comma-separated string of paths, or a list of them."""
    if isinstance(labels, (str, Path)):
        labels = str(labels).split(",")
    paths = [Path(str(p).strip()) for p in labels if str(p).strip()]
    if not paths:
        raise ValueError("labels= names no file. Give a CSV path, a comma-separated list or [a.csv,b.csv]")
    return paths


def _read(path: Path) -> tuple[list[str], list[dict]]:
    if not path.is_file():
        raise FileNotFoundError(
            f"labels={path}: no such file. Give a CSV with a label column and a response "
            "(or dataset + id + side) column"
        )
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    if not rows:
        raise ValueError(f"labels file {path} has no rows")
    return list(reader.fieldnames or []), rows


def load_labelled(
    labels, columns, data_dir=None, cache_dir=None, where: dict | None = None, sources: dict | None = None
) -> Labelled:
    """Rows of every labels file with ``prompt``, ``response``, ``label`` (the ``columns.label`` value),
    ``file`` and the derived ``source`` (by dataset, from ``sources``; ``default`` otherwise) and
    ``model`` (the ``columns.cell`` value where the file has one, else the source) columns."""
    from qresafe_exp.data import load_records

    sources = dict(sources or {})
    records: dict[str, dict[str, dict]] = {}  # dataset -> id -> record, loaded once for all files

    def record(path: Path, row: dict) -> dict:
        name = row.get(columns.dataset, "")
        if name not in records:
            records[name] = {rec["id"]: rec for rec in load_records(name, data_dir, cache_dir)}
        found = records[name].get(row[columns.id])
        if found is None:
            raise ValueError(
                f"labels file {path}: row {row[columns.id]!r} names no known prompt in dataset "
                f"'{name}' (no record with that id)"
            )
        return found

    out = Labelled(rows=[])
    for path in label_files(labels):
        header, rows = _read(path)
        if columns.label not in header:
            raise ValueError(
                f"labels file {path} has no column '{columns.label}' (columns: {', '.join(header)}); set columns.label"
            )
        joined_response = columns.response not in header
        if joined_response and columns.side not in header:
            raise ValueError(
                f"labels file {path} has no '{columns.response}' column and no '{columns.side}' "
                "column naming the dataset record's field that holds the response"
            )
        if (columns.prompt not in header or joined_response) and not {columns.dataset, columns.id} <= set(header):
            raise ValueError(
                f"labels file {path} needs '{columns.dataset}' and '{columns.id}' columns to join "
                "prompts (and responses) from the datasets"
            )
        kept = [r for r in rows if all(r.get(k) == str(v) for k, v in (where or {}).items())]
        labelled = [r for r in kept if (r[columns.label] or "").strip()]
        out.skipped[str(path)] = {"where": len(rows) - len(kept), "empty_label": len(kept) - len(labelled)}
        for row in labelled:
            rec = None if columns.prompt in header and not joined_response else record(path, row)
            if joined_response:
                side = row[columns.side]
                if side not in rec or not isinstance(rec[side], str):
                    raise ValueError(
                        f"labels file {path}: {columns.side}='{side}' of row {row[columns.id]!r} is "
                        f"no text field of its record (fields: {', '.join(rec)})"
                    )
            source = sources.get(row.get(columns.dataset), sources.get("default", "labels"))
            out.rows.append(
                {
                    **row,
                    "prompt": row[columns.prompt] if columns.prompt in header else rec["prompt"],
                    "response": rec[row[columns.side]] if joined_response else row[columns.response],
                    "label": row[columns.label].strip(),
                    "file": path.name,
                    "source": source,
                    "model": (row.get(columns.cell) or "").strip() or source,
                }
            )
    return out
