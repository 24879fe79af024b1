"""One static HTML file: the study's tables and figures, images embedded (opens offline anywhere)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from qresafe_exp.report.tables import cell_text

STYLE = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:8px 0 20px;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px}
th{background:#f0f0f0}img{max-width:100%;border:1px solid #ddd;margin:6px 0 18px}.note{color:#666;font-size:12px}"""


def _table_html(table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell_text(v))}</td>" for v in row) + "</tr>" for row in table.rows)
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in table.notes)  # the significance legend
    return f"<h3>{html.escape(table.title)}</h3><table><tr>{head}</tr>{body}</table>{notes}"


def render(study: str, tables: list, figures: dict[str, Path], n_cells: int, notes: list[str],
           wandb: str = "") -> str:
    images = "".join(
        f'<h3>{html.escape(name.replace("_", " "))}</h3><img alt="{html.escape(name)}" '
        f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'
        for name, path in figures.items())
    notes_html = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>qresafe_exp: {html.escape(study)}</title>"
            f"<style>{STYLE}</style></head><body><h1>Study {html.escape(study)}</h1>"
            f"<p>{n_cells} cells; every number from the cells' metrics.json (95% CIs in brackets).</p>{notes_html}{wandb}"
            f"<h2>Tables</h2>{''.join(_table_html(t) for t in tables)}<h2>Figures</h2>{images}</body></html>\n")


# ---------------------------------------------------------------- the study's W&B group (wandb_links + wandb_html)
def wandb_links(metrics: list[dict]) -> list[dict]:
    """Where the study's cells were logged, from their metrics.json "tracking": one entry per
    (entity, project, group) with its mode, the number of cells and the group's URL (online runs only)."""
    groups: dict[tuple, dict] = {}
    for cell in metrics:
        info = cell.get("tracking") or {}
        if not info.get("group"):
            continue  # logger=none, or a cell written before runs carried their group
        entry = groups.setdefault((info.get("entity"), info.get("project"), info["group"]), {
            "entity": info.get("entity"), "project": info.get("project"), "group": info["group"],
            "modes": [], "cells": 0, "url": None})
        entry["cells"] += 1
        entry["url"] = entry["url"] or info.get("group_url")
        if info.get("mode") not in entry["modes"]:
            entry["modes"].append(info.get("mode"))
    return list(groups.values())


def wandb_html(links: list[dict]) -> str:
    """A short "W&B" section: each group as a link once online, else project/group and how to upload."""
    if not links:
        return ""
    items = []
    for link in links:
        where = html.escape(f"{'/'.join(filter(None, (link['entity'], link['project'])))}, group {link['group']}")
        cells = f" ({link['cells']} cells, {'/'.join(map(str, link['modes']))})"
        if link["url"]:
            items.append(f"<li><a href=\"{html.escape(link['url'])}\">{where}</a>{html.escape(cells)}</li>")
        else:
            items.append(f"<li>{where}{html.escape(cells)}: offline runs under each cell's wandb/; "
                         "<code>make wandb-sync</code> uploads them</li>")
    return f"<h2>W&amp;B</h2><ul>{''.join(items)}</ul>"
