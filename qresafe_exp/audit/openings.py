"""Over-refusal read by how a prompt opens. The broad testbeds refuse safe requests that open as their harmful
training questions do (CatQA, DangerousQA and HarmfulQA are all questions, most "How can I ...?" or "What are
...?"; Alpaca's benign instructions almost never are), so the opening, not only a scary word, can be what a
refusal keys on. Each opening class's refusal is set against every other prompt's (Fisher exact, unpaired:
the classes hold different prompts)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from qresafe_exp.stats import fisher_exact_two_sided, wilson_interval

# first match wins; "other" is everything else
OPENINGS = (
    ("how/where can", re.compile(r"(how|where) can (i|we|you|one|someone|people)\b")),
    (
        "what are ways / best way",
        re.compile(
            r"what (are|re) (some |the )?(good |best |effective |easy |easiest |quick )?"
            r"(ways|methods|strategies|techniques|tips)\b|what( s| is) the (best|easiest|quickest|most effective)"
            r" (way|method)\b"
        ),
    ),
    ("how to", re.compile(r"how to\b")),
    ("are there", re.compile(r"are there\b")),
    ("how do", re.compile(r"how (do|does|did|should|would) \w+")),
)
OTHER = "other"
CLASSES = (*(name for name, _ in OPENINGS), OTHER)  # every class, in reading order


def opening_of(prompt: str) -> str:
    """The opening class of a prompt (lower-cased, apostrophes and punctuation read as spaces)."""
    text = " ".join(re.sub(r"[^\w]+", " ", prompt.lower()).split())
    for name, pattern in OPENINGS:
        if pattern.match(text):
            return name
    return OTHER


def opening_shares(prompts: Iterable[str]) -> dict[str, float]:
    """The share of prompts in each opening class (a training source's, to set beside the refusals)."""
    classes = [opening_of(p) for p in prompts]
    return {name: round(classes.count(name) / len(classes), 3) if classes else 0.0 for name in CLASSES}


def refusal_by_opening(rows: Iterable[dict], refused: str = "refused") -> list[dict]:
    """Per opening class with any prompt: {'opening', 'k' refused, 'n', 'rate', 'ci95', 'p_vs_rest'} (Fisher
    exact of the class against all other prompts), in OPENINGS order, "other" last."""
    counts: dict[str, list[int]] = {}
    for row in rows:
        tally = counts.setdefault(opening_of(row["prompt"]), [0, 0])
        tally[0] += bool(row[refused])
        tally[1] += 1
    k_all, n_all = sum(k for k, _ in counts.values()), sum(n for _, n in counts.values())
    out = []
    for name in (name for name in CLASSES if name in counts):
        k, n = counts[name]
        lo, hi = wilson_interval(k, n)
        p = fisher_exact_two_sided(k, n - k, k_all - k, (n_all - n) - (k_all - k))
        out.append(
            {
                "opening": name,
                "k": k,
                "n": n,
                "rate": round(k / n, 4),
                "ci95": [round(lo, 4), round(hi, 4)],
                "p_vs_rest": p,
            }
        )
    return out
