"""One self-contained HTML file per study (opens offline: every script, style, figure and sample is
inlined, nothing is fetched): the cells and the paper's tables (sortable by a header click, filterable
by axis values), interactive figures (plotly.js embedded), the PNG figures, and a sample browser
(a cell's prompts and responses with every judge's verdict; filters for judge disagreement and for a
changed verdict against the FP reference on the same prompt).

The page is a list of sections (``Section``: id, title, HTML); a new part of the page is one more
section, or one more entry in ``links`` (shown under the title)."""

from __future__ import annotations

import base64
import gzip
import html
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from qresafe_exp.report.figures import bits_label
from qresafe_exp.report.tables import cell_text

# table headers that name an axis of the study: each gets a value filter above its table
AXIS_HEADERS = {
    "model",
    "method",
    "quant",
    "bits",
    "group size",
    "risk / calib",
    "calib",
    "patch",
    "eval",
    "protocol",
    "status",
}
# the "Cells" table: (header, tidy column); rates print with their CI where the row has one
CELL_COLUMNS = (
    ("model", "model"),
    ("quant", "quant"),
    ("bits", "bits"),
    ("group size", "group_size"),
    ("calib", "calib"),
    ("patch", "patch_tag"),
    ("eval", "eval"),
    ("protocol", "protocol"),
    ("ASR", "advbench.asr"),
    ("vs FP", "advbench.asr.vs_fp"),
    ("p vs FP", "advbench.asr.vs_fp.p"),
    ("ASR (keyword)", "advbench.asr_keyword"),
    ("degenerate", "advbench.degenerate"),
    ("XSTest refusal", "xstest_safe.refusal_rate"),
    ("ref. ppl", "alpaca_eval_ppl.reference_perplexity"),
    ("status", "status"),
)


@dataclass
class Section:
    id: str
    title: str
    body: str  # HTML


def _asset(name: str) -> str:
    return resources.files("qresafe_exp.report").joinpath("assets", name).read_text()


def _script_json(value) -> str:
    """JSON inside a <script> element: '</' would end the element early."""
    return json.dumps(value, separators=(",", ":")).replace("</", "<\\/")


def _packed(value) -> str:
    """gzip + base64 JSON: the responses are most of a page's bytes and compress about 4x (a 17-cell study
    with 3,264 samples: 1.47 MB of JSON -> 0.35 MB); the page inflates them with DecompressionStream."""
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.b64encode(gzip.compress(raw, compresslevel=9, mtime=0)).decode()


def _th(name: str) -> str:
    axis = " data-axis" if name in AXIS_HEADERS else ""
    return f"<th{axis} title='click to sort'>{html.escape(name)}</th>"


def _table(columns: list[str], rows: list[list], table_id: str, cell_links: list[str] | None = None) -> str:
    """``cell_links``: per row, the cell whose samples its first column opens (the Cells table)."""
    body = []
    for n, row in enumerate(rows):
        cells = []
        for i, v in enumerate(row):
            sort = f" data-sort='{v}'" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            text = html.escape(cell_text(v))
            if i == 0 and cell_links:
                text = f"<a href='#samples' class='to-samples' data-cell='{html.escape(cell_links[n])}'>{text}</a>"
            cells.append(f"<td{sort}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<div class='filters' data-for='{table_id}'></div><div class='scroll'><table class='sortable' "
        f"id='{table_id}'><thead><tr>{''.join(_th(c) for c in columns)}</tr></thead><tbody>{''.join(body)}"
        "</tbody></table></div>"
    )


def _paper_table(table, index: int) -> str:
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in table.notes)  # the significance legend
    return (
        f"<h3 id='{html.escape(table.name)}'>{html.escape(table.title)}</h3>"
        f"{_table(table.columns, table.rows, f't{index}')}{notes}"
    )


def _with_ci(row: dict, key: str):
    value = row.get(key)
    if value is None or row.get(f"{key}.lo") is None:
        return value
    return f"{value:.2f} [{row[f'{key}.lo']:.2f},{row[f'{key}.hi']:.2f}]"


def _cell_value(r: dict, key: str):
    value = r.get(key)
    if key in ("advbench.asr", "xstest_safe.refusal_rate"):
        return _with_ci(r, key)
    if key == "bits" and r["quant"] == "none":
        return bits_label(value)  # FP sits at "16/FP", as on the figures' bits axis
    if value is None:
        return None
    return f"{value:+.2f}" if key.endswith(".vs_fp") else f"{value:.3g}" if key.endswith(".p") else value


def cells_section(rows: list[dict]) -> Section:
    ordered = sorted(rows, key=lambda r: r["cell"])
    # the cell's name without its model (the model has its own column)
    body = [[r["cell"].removeprefix(f"{r['model']}."), *(_cell_value(r, k) for _, k in CELL_COLUMNS)] for r in ordered]
    table = _table(["cell", *(h for h, _ in CELL_COLUMNS)], body, "cells-table", [r["cell"] for r in ordered])
    return Section(
        "cells",
        "Cells",
        "<p class='note'>one row per cell; click a header to sort, pick axis values "
        "to filter, click a cell for its samples</p>" + table,
    )


def figures_section(interactive: dict[str, dict]) -> Section:
    divs = "".join(
        f"<div class='plot' id='plot-{html.escape(name)}' data-figure='{html.escape(name)}'></div>"
        for name in interactive
    )
    return Section("figures", "Figures", divs or "<p class='note'>no interactive figure for this study</p>")


def pictures_section(figures: dict[str, Path]) -> Section:
    images = "".join(
        f'<h3>{html.escape(name.replace("_", " "))}</h3><img alt="{html.escape(name)}" '
        f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'
        for name, path in figures.items()
    )
    return Section(
        "pngs",
        "Figures (PNG, as in figures/ for the paper)",
        f"<details><summary>show the {len(figures)} PNG figures</summary>{images}</details>",
    )


SAMPLES_HTML = """<div class='sample-controls'>
<label>cell <select id='s-cell'></select></label>
<label>suite <select id='s-suite'></select></label>
<label><input type='checkbox' id='s-disagree'> judges disagree</label>
<label><input type='checkbox' id='s-vsfp'> verdict differs from the FP reference (same prompt)</label>
<label><input type='checkbox' id='s-degenerate'> degenerate</label>
<label>search <input type='search' id='s-search' placeholder='prompt or response text'></label>
</div><p id='s-count' class='note'></p><p id='s-note' class='note'></p>
<div class='scroll'><table id='s-table'><thead><tr><th>suite / id</th><th>prompt</th><th>response</th><th>verdicts</th>
<th>degeneration</th><th>FP reference, same prompt</th></tr></thead><tbody></tbody></table></div>"""


def samples_section(browser: dict | None) -> Section:
    if browser is None:
        return Section("samples", "Samples", "<p class='note'>no samples (report.dashboard.samples=false)</p>")
    n = sum(len(c["samples"]) for c in browser["cells"])
    return Section(
        "samples",
        "Samples",
        f"<p class='note'>{n} responses of {len(browser['cells'])} cells, each with "
        "every judge's verdict recorded in samples.jsonl (the first judge is the one the metric counts); "
        '"differs from FP" compares that headline verdict with the FP reference cell\'s on the same '
        f"prompt (the paired test's discordant pairs); responses over {browser['max_chars']} characters "
        "are cut (full text in the cell's samples.jsonl)</p>" + SAMPLES_HTML,
    )


def render(
    study: str,
    tables: list,
    figures: dict[str, Path],
    n_cells: int,
    notes: list[str],
    *,
    rows: list[dict] | None = None,
    interactive: dict[str, dict] | None = None,
    browser: dict | None = None,
    links: list[tuple[str, str]] = (),
    wandb: str = "",
) -> str:
    """The page. ``links``: (text, URL) pairs shown under the title; ``wandb``: the W&B section (wandb_html)."""
    sections = [
        *([cells_section(rows)] if rows else []),
        Section("tables", "Tables", "".join(_paper_table(t, i) for i, t in enumerate(tables))),
        *([figures_section(interactive)] if interactive is not None else []),
        pictures_section(figures),
        *([samples_section(browser)] if rows else []),
    ]
    nav = " · ".join(f"<a href='#{s.id}'>{html.escape(s.title)}</a>" for s in sections)
    link_html = "".join(
        f"<p class='links'><a href='{html.escape(url)}'>{html.escape(text)}</a></p>" for text, url in links
    )
    notes_html = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    body = "".join(f"<section id='{s.id}'><h2>{html.escape(s.title)}</h2>{s.body}</section>" for s in sections)
    data = {"figures": interactive or {}}
    scripts = ""
    if interactive:
        from plotly.offline import get_plotlyjs

        scripts += f"<script>{get_plotlyjs()}</script>"
    scripts += f"<script type='application/json' id='dashboard-data'>{_script_json(data)}</script>"
    if browser is not None:
        scripts += f"<script type='application/octet-stream' id='dashboard-samples'>{_packed(browser)}</script>"
    scripts += f"<script>{_asset('dashboard.js')}</script>"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>qresafe_exp: {html.escape(study)}</title>"
        f"<style>{_asset('dashboard.css')}</style></head><body><h1>Study {html.escape(study)}</h1>{link_html}"
        f"<p>{n_cells} cells; every number from the cells' metrics.json (95% CIs in brackets).</p>{notes_html}{wandb}"
        f"<nav>{nav}</nav>{body}{scripts}</body></html>\n"
    )


# ---------------------------------------------------------------- the study's W&B group (wandb_links + wandb_html)
def wandb_links(metrics: list[dict]) -> list[dict]:
    """Where the study's cells were logged, from their metrics.json "tracking": one entry per
    (entity, project, group) with its mode, the number of cells and the group's URL (online runs only)."""
    groups: dict[tuple, dict] = {}
    for cell in metrics:
        info = cell.get("tracking") or {}
        if not info.get("group"):
            continue  # logger=none, or a cell written before runs carried their group
        entry = groups.setdefault(
            (info.get("entity"), info.get("project"), info["group"]),
            {
                "entity": info.get("entity"),
                "project": info.get("project"),
                "group": info["group"],
                "modes": [],
                "cells": 0,
                "url": None,
            },
        )
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
            items.append(f'<li><a href="{html.escape(link["url"])}">{where}</a>{html.escape(cells)}</li>')
        else:
            items.append(
                f"<li>{where}{html.escape(cells)}: offline runs under each cell's wandb/; "
                "<code>make wandb-sync</code> uploads them</li>"
            )
    return f"<h2>W&amp;B</h2><ul>{''.join(items)}</ul>"
