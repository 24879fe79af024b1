"""The short end-of-run table: cell, ASR (CI), XSTest refusal (CI), degeneration, time."""

from __future__ import annotations


def _rate(block: dict | None) -> str:
    if not block or block.get("rate") is None:
        return "-"
    lo, hi = block["ci95"]
    return f"{block['rate']:.2f} [{lo:.2f},{hi:.2f}] n={block['n']}"


def table_row(metrics: dict) -> dict:
    if metrics.get("status") == "unsupported":
        return {"cell": metrics["cell"], "ASR advbench (95% CI)": "unsupported", "XSTest-safe refusal (95% CI)":
                metrics["reason"], "degenerate": "-", "time": "-"}
    scores = metrics.get("scores", {})
    asr = scores.get("advbench", {}).get("asr")
    refusal = scores.get("xstest_safe", {}).get("refusal_rate")
    degenerate = metrics["summary"]["degenerate"]
    flag = " BROKEN" if metrics["summary"]["broken"] else ""
    return {
        "cell": metrics["cell"],
        "ASR advbench (95% CI)": _rate(asr),
        "XSTest-safe refusal (95% CI)": _rate(refusal),
        "degenerate": f"{degenerate['rate']:.2f}{flag}" if degenerate["rate"] is not None else "-",
        "time": f"{metrics['cost']['wall_seconds']:.0f}s",
    }


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "(no cells)"
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    line = lambda values: "| " + " | ".join(str(v).ljust(widths[c]) for c, v in zip(columns, values)) + " |"
    sep = "|" + "|".join("-" * (widths[c] + 2) for c in columns) + "|"
    return "\n".join([line(columns), sep, *(line([r[c] for c in columns]) for r in rows)])
