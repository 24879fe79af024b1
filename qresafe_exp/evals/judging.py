"""Ask the judge, with verdicts cached per (judge identity, task, item) and failures kept out.

A failed verdict (``error`` set) is returned to be recorded in the samples and counted, but it is
not stored: the next run asks again. ``judge_failures`` summarises them for metrics.json.
"""

from __future__ import annotations

from collections import Counter

from qresafe_exp.cache import RequestCache, content_key
from qresafe_exp.judges.base import is_failure


def cached_verdicts(judge, task: str, items: list, requests: RequestCache) -> list[dict]:
    judge.require(task, f"the {task} evaluation")
    if not judge.cache_verdicts:
        return judge.run(task, items)
    ns = f"verdict/{task}/{content_key(judge.identity)}"
    keys = [content_key(item, length=32) for item in items]
    found = requests.get_many(ns, keys)
    missing = [i for i, k in enumerate(keys) if k not in found]
    if missing:
        fresh = judge.run(task, [items[i] for i in missing])
        requests.put_many(ns, {keys[i]: v for i, v in zip(missing, fresh) if not is_failure(v)})
        for i, verdict in zip(missing, fresh):
            found[keys[i]] = verdict
    return [found[k] for k in keys]


def judge_failures(verdicts: list[dict]) -> dict:
    """{'n', 'of', 'kinds': {kind: count}, 'example'}: how many verdicts could not be obtained."""
    bad = [v for v in verdicts if is_failure(v)]
    return {
        "n": len(bad),
        "of": len(verdicts),
        "kinds": dict(Counter(v.get("error_kind", "error") for v in bad)),
        "example": bad[0]["error"][:300] if bad else None,
    }
