"""The before/after table of a re-score: one line per cell, suite and headline number (the judge's
ASR, the keyword ASR, the refusal rate), each with its 95 % interval and n, and the change."""

from __future__ import annotations

# the headline numbers of each re-scored suite kind, as named in its score block
HEADLINES = {
    "asr": "ASR",
    "asr_keyword": "keyword ASR",
    "refusal_rate": "refusal rate",
    "refusal_rate_all": "refusal rate (all groups)",
}


def _cell(value: dict | None) -> str:
    if not value or value.get("rate") is None:
        return "-"
    lo, hi = value["ci95"]
    return f"{value['rate']:.2f} [{lo:.2f},{hi:.2f}] n={value['n']}"


def _change(before: dict | None, after: dict | None) -> str:
    a, b = (before or {}).get("rate"), (after or {}).get("rate")
    return "-" if a is None or b is None else f"{b - a:+.2f}"


def before_after(cells: list[tuple[str, dict, dict]]) -> str:
    """Markdown for [(cell, metrics before, metrics after)], re-scored suites only."""
    lines = ["| cell | suite | score | before | after | change |", "|---|---|---|---|---|---|"]
    for name, before, after in cells:
        for suite in (after.get("rescored") or {}).get("suites", []):
            old, new = before["scores"].get(suite, {}), after["scores"][suite]
            for score, label in HEADLINES.items():
                if score in new or score in old:
                    lines.append(
                        f"| {name} | {suite} | {label} | {_cell(old.get(score))} | {_cell(new.get(score))} "
                        f"| {_change(old.get(score), new.get(score))} |"
                    )
    return "\n".join(lines)
