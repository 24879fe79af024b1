"""Reports never compare across evaluation protocols: a decoding-attack cell (worst case of 49 sampled
configurations, n=16) and a greedy cell (n=64) measure different things, and each is only meaningful
against the FP reference run under its own (eval config, protocol). Every table and figure is built
from the rows of one group, which this module splits out and names."""

from __future__ import annotations

Key = tuple[str, str]


def key(row: dict) -> Key:
    return (row.get("eval") or "unknown", row.get("protocol") or "unknown")


def label(group: Key) -> str:
    return f"eval={group[0]}, protocol={group[1]}"


def slug(group: Key) -> str:
    """File-name suffix: table7-reduced-vanilla.md."""
    return f"{group[0]}-{group[1]}"


def split(rows: list[dict]) -> dict[Key, list[dict]]:
    """Rows by (eval, protocol), groups sorted by name. A cell whose reference_cell lies in another group
    would be compared across protocols, so that is an error rather than a table."""
    by_cell = {r["cell"]: r for r in rows}
    for r in rows:
        ref = by_cell.get(r.get("reference_cell"))
        if ref is not None and key(ref) != key(r):
            raise ValueError(
                f"cell {r['cell']} ({label(key(r))}) names {ref['cell']} ({label(key(ref))}) as its FP "
                "reference: a cell is compared only with FP under the same eval config and protocol. "
                "Re-run the cell so that its reference is recomputed (pipeline.reference_cell_name)"
            )
    out: dict[Key, list[dict]] = {}
    for r in rows:
        out.setdefault(key(r), []).append(r)
    return dict(sorted(out.items()))


def one(rows: list[dict]) -> Key | None:
    """The group of rows that a table or figure builder was given; more than one is a caller's bug."""
    keys = {key(r) for r in rows}
    if len(keys) > 1:
        raise ValueError(
            f"rows of {len(keys)} eval/protocol groups ({'; '.join(sorted(label(k) for k in keys))}) "
            "given to one table or figure: split them with report.groups.split first"
        )
    return next(iter(keys), None)


def reference(row: dict, rows: list[dict]) -> dict | None:
    """The row's own FP reference (its reference_cell) among the group's rows; None for an FP cell."""
    name = row.get("reference_cell")
    return next((r for r in rows if r["cell"] == name), None) if name else None
