"""The paper's table layouts from the tidy rows, as Markdown and LaTeX, each with a "vs FP" delta.

Table 3: model x method x bits x risk -> ASR, MT-Bench, AlpacaEval (win rate, else reference
perplexity). Table 4: the decoding attack's single configurations. Table 5: the tau ablation with
cost. Table 6: patch methods with cost. Table 7: ASR by bit-width. A table whose cells the study does
not have is left out (the report says which).
"""

from __future__ import annotations

from dataclasses import dataclass

ASR = "advbench.asr"
TABLE4_CONFIGS = ("T=0.95", "T=0.7", "k=500", "k=200", "p=0.95", "p=0.7")


@dataclass
class Table:
    name: str
    title: str
    columns: list[str]
    rows: list[list]

    def markdown(self) -> str:
        lines = [f"**{self.title}**", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(cell_text(v) for v in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        esc = lambda v: cell_text(v).replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")
        body = [" & ".join(esc(v) for v in row) + r" \\" for row in self.rows]
        return "\n".join([r"\begin{table}[t]", r"\centering", rf"\caption{{{esc(self.title)}}}",
                          r"\begin{tabular}{" + "l" * len(self.columns) + "}", r"\toprule",
                          " & ".join(esc(c) for c in self.columns) + r" \\", r"\midrule", *body,
                          r"\bottomrule", r"\end{tabular}", r"\end{table}"]) + "\n"


def cell_text(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _ci(row: dict, key: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    lo, hi = row.get(f"{key}.lo"), row.get(f"{key}.hi")
    return f"{value:.2f} [{lo:.2f},{hi:.2f}]" if lo is not None and hi is not None else f"{value:.2f}"


def _asr(row: dict) -> str:
    # a broken cell's ASR measures gibberish, not safety
    return f"broken (raw {row[ASR]:.2f})" if row.get("broken") else _ci(row, ASR)


def _delta(row: dict, key: str):
    value = row.get(f"{key}.vs_fp")
    return None if value is None else f"{value:+.2f}"


def _utility(row: dict) -> tuple:
    mtbench = row.get("mtbench.mtbench_score")
    alpaca = row.get("alpaca_eval.win_rate")
    ppl = row.get("alpaca_eval_ppl.reference_perplexity")
    return mtbench, alpaca if alpaca is not None else (f"ppl {ppl:.2f}" if ppl is not None else None)


def _ok(rows):
    return [r for r in rows if r["status"] == "ok"]


def table3(rows: list[dict]) -> Table | None:
    cells = [r for r in _ok(rows) if r.get(ASR) is not None]
    if not cells:
        return None
    body = []
    for r in sorted(cells, key=lambda r: (r["model"], r["eval"] or "", r["quant"] != "none", r["quant"], r["bits"] or 0,
                                          r["calib"] or "", r["patch"] != "none", r["patch_tag"] or "")):
        mtbench, alpaca = _utility(r)
        body.append([r["model"], r["quant"], r["bits"] or "16", r["calib"] or "-", r["patch_tag"],
                     f"{r['eval']}/{r['protocol']}", _asr(r), _delta(r, ASR), mtbench, alpaca])
    return Table("table3", "Table 3: ASR (95% CI) and utility per model x method x bits x risk",
                 ["model", "method", "bits", "risk / calib", "patch", "eval / protocol", "ASR", "vs FP", "MT-Bench",
                  "AlpacaEval"], body)


def table4(rows: list[dict]) -> Table | None:
    cells = [r for r in _ok(rows) if r.get("advbench.decoding.p=0.7") is not None]
    if not cells:
        return None
    fp = next((r for r in cells if r["quant"] == "none"), None)
    body = []
    for r in sorted(cells, key=lambda r: (r["quant"] != "none", r["quant"], r["bits"] or 0)):
        vals = [r.get(f"advbench.decoding.{c}") for c in TABLE4_CONFIGS]
        worst = r.get(ASR)
        delta = None if fp is None or r is fp else f"{worst - fp[ASR]:+.2f}"
        body.append([r["model"], r["quant"], r["bits"] or "16", *vals, _ci(r, ASR), delta])
    return Table("table4", "Table 4: ASR under single decoding configurations and the 49-config worst case",
                 ["model", "method", "bits", *TABLE4_CONFIGS, "worst case (49)", "vs FP"], body)


def table5(rows: list[dict]) -> Table | None:
    """Only bases (quant, bits, calib) patched with two or more qresafe settings form an ablation."""
    cells = [r for r in _ok(rows) if r["patch"] == "qresafe" and r.get(ASR) is not None]
    base = lambda r: (r["quant"], r["bits"], r["calib"] or "")
    ablated = {b for b in {base(r) for r in cells} if len({r["patch_tag"] for r in cells if base(r) == b}) > 1}
    if not ablated:
        return None
    body = [[r["quant"], r["bits"], r["calib"], r["patch_tag"], _asr(r), _delta(r, ASR), r.get("advbench.asr.unmerged"),
             r.get("alpaca_eval_ppl.reference_perplexity"), _seconds(r["patch_seconds"]), r["patch_peak_rss_mb"]]
            for r in sorted((r for r in cells if base(r) in ablated), key=lambda r: (base(r), r["patch_tag"]))]
    return Table("table5", "Table 5: tau ablation (merged ASR, unmerged ASR, utility, cost)",
                 ["method", "bits", "risk / calib", "patch", "ASR merged", "vs FP", "ASR unmerged", "ref. ppl",
                  "patch time", "peak RSS (MB)"], body)


def table6(rows: list[dict]) -> Table | None:
    cells = [r for r in _ok(rows) if r["patch"] != "none" and r.get(ASR) is not None]
    if not cells:
        return None
    bases = {(r["quant"], r["bits"], r["calib"]) for r in cells}
    body = []
    for r in sorted(_ok(rows), key=lambda r: (r["quant"], r["bits"] or 0, r["calib"] or "", r["patch"] != "none",
                                              r["patch_tag"] or "")):
        if (r["quant"], r["bits"], r["calib"]) not in bases or r.get(ASR) is None:
            continue
        body.append([r["quant"], r["bits"], r["calib"], r["patch_tag"], _asr(r), _delta(r, ASR),
                     r.get("xstest_safe.refusal_rate"), r.get("alpaca_eval_ppl.reference_perplexity"),
                     _seconds(r["patch_seconds"]), r["patch_peak_rss_mb"]])
    return Table("table6", "Table 6: patch methods on the same quantized cells (ASR, over-refusal, utility, cost)",
                 ["method", "bits", "risk / calib", "patch", "ASR", "vs FP", "XSTest refusal", "ref. ppl",
                  "patch time", "peak RSS (MB)"], body)


def table7(rows: list[dict]) -> Table | None:
    cells = [r for r in _ok(rows) if r["quant"] != "none" and r["patch"] == "none" and r.get(ASR) is not None]
    bits = sorted({r["bits"] for r in cells if r["bits"]}, reverse=True)
    if len(bits) < 2:
        return None
    fp = next((r for r in _ok(rows) if r["quant"] == "none" and r.get(ASR) is not None), None)
    methods = sorted({(r["quant"], r["calib"] or "-") for r in cells})
    body = []
    for quant, calib in methods:
        by_bits = {r["bits"]: r for r in cells if r["quant"] == quant and (r["calib"] or "-") == calib}
        body.append([quant, calib, *[_cell_asr(by_bits.get(b)) for b in bits]])
    header = ["method", "calib", *[f"W{b}" for b in bits]]
    title = "Table 7: ASR by bit-width" + (f" (FP: {fp[ASR]:.2f})" if fp else "")
    return Table("table7", title, header, body)


def _cell_asr(row: dict | None) -> str:
    if row is None:
        return "-"
    if row.get("broken"):
        return "broken"
    delta = row.get(f"{ASR}.vs_fp")
    return f"{row[ASR]:.2f}" + (f" ({delta:+.2f})" if delta is not None else "")


def _seconds(value) -> str | None:
    return None if value is None else f"{value:.0f}s"


BUILDERS = (table3, table4, table5, table6, table7)


def all_tables(rows: list[dict]) -> list[Table]:
    return [t for t in (build(rows) for build in BUILDERS) if t is not None]
