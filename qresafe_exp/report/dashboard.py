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


def render(study: str, tables: list, figures: dict[str, Path], n_cells: int, notes: list[str]) -> str:
    images = "".join(
        f'<h3>{html.escape(name.replace("_", " "))}</h3><img alt="{html.escape(name)}" '
        f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'
        for name, path in figures.items())
    notes_html = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>qresafe_exp: {html.escape(study)}</title>"
            f"<style>{STYLE}</style></head><body><h1>Study {html.escape(study)}</h1>"
            f"<p>{n_cells} cells; every number from the cells' metrics.json (95% CIs in brackets).</p>{notes_html}"
            f"<h2>Tables</h2>{''.join(_table_html(t) for t in tables)}<h2>Figures</h2>{images}</body></html>\n")
