"""Content-addressed artifact cache and a request-level cache.

Artifacts live in ``<root>/<stage>/<key>/``. The key is a hash of the canonical JSON of everything
that determines the artifact (its resolved config subtree, the upstream artifact keys and a
per-stage code version), never of what does not (device, logging). An artifact is built in a
temporary sibling directory and published with one ``os.rename``, so a reader sees either nothing or
a complete artifact; a process killed mid-build leaves only a temp dir that the next build removes.
A per-key file lock makes concurrent sweep workers (submitit, joblib) build each artifact once.

Generations and judge verdicts are cached per request in SQLite, so a killed evaluation resumes
from the last finished batch.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)

SUCCESS_MARKER = "_SUCCESS"
SPEC_FILE = "spec.json"


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_key(*parts: Any, length: int = 16) -> str:
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()[:length]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@dataclass(frozen=True)
class Artifact:
    stage: str
    key: str
    path: Path
    built: bool  # True if this call built it, False if it was served from the cache

    @property
    def spec(self) -> dict:
        return json.loads((self.path / SPEC_FILE).read_text())


class ArtifactCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def key(self, stage: str, spec: dict, upstream: list[str] = (), version: int = 1) -> str:
        return content_key(stage, version, spec, list(upstream))

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def exists(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / SUCCESS_MARKER).exists()

    def mark_incomplete(self, stage: str, key: str) -> None:
        """Keep the files (this run still reads them) but have the next run rebuild the artifact."""
        (self.path(stage, key) / SUCCESS_MARKER).unlink(missing_ok=True)

    def get_or_build(
        self,
        stage: str,
        spec: dict,
        build: Callable[[Path], None],
        *,
        upstream: list[str] = (),
        version: int = 1,
    ) -> Artifact:
        """Return the artifact for ``spec``; if missing, run ``build(tmp_dir)`` and publish it."""
        key = self.key(stage, spec, upstream, version)
        final = self.path(stage, key)
        if (final / SUCCESS_MARKER).exists():
            log.info("[cache hit] %s/%s", stage, key)
            return Artifact(stage, key, final, built=False)
        with file_lock(self.root / stage / f".{key}.lock"):
            if (final / SUCCESS_MARKER).exists():  # another worker built it while we waited
                log.info("[cache hit] %s/%s (built by another worker)", stage, key)
                return Artifact(stage, key, final, built=False)
            for stale in final.parent.glob(f".tmp-{key}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            if final.exists():  # incomplete leftover without the success marker
                shutil.rmtree(final)
            tmp = final.parent / f".tmp-{key}-{os.getpid()}"
            tmp.mkdir(parents=True)
            log.info("[cache miss] building %s/%s", stage, key)
            started = time.time()
            try:
                build(tmp)
                write_json_atomic(
                    tmp / SPEC_FILE,
                    {"stage": stage, "version": version, "upstream": list(upstream), "spec": spec,
                     "build_seconds": round(time.time() - started, 2)},
                )
                (tmp / SUCCESS_MARKER).touch()
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            log.info("[cache] published %s/%s in %.1fs", stage, key, time.time() - started)
            return Artifact(stage, key, final, built=True)


class RequestCache:
    """SQLite map (namespace, request key) -> JSON value, safe across processes (WAL mode)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS requests (ns TEXT, key TEXT, value TEXT, PRIMARY KEY (ns, key))"
        )

    def get_many(self, ns: str, keys: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT key, value FROM requests WHERE ns=? AND key IN ({marks})", [ns, *chunk]
            )
            found.update((k, json.loads(v)) for k, v in rows)
        return found

    def put_many(self, ns: str, items: dict[str, Any]) -> None:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(
                "INSERT OR REPLACE INTO requests (ns, key, value) VALUES (?, ?, ?)",
                [(ns, k, json.dumps(v)) for k, v in items.items()],
            )
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def fill(self, ns: str, keys: list[str], compute: Callable[[list[int]], list[Any]]) -> list[Any]:
        """The values for ``keys``; ``compute(indices)`` makes the missing ones, which are stored."""
        found = self.get_many(ns, keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        if missing:
            new = {keys[i]: value for i, value in zip(missing, compute(missing))}
            self.put_many(ns, new)
            found.update(new)
        return [found[k] for k in keys]

    def count(self, ns: str) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM requests WHERE ns=?", [ns]).fetchone()[0]

    def close(self) -> None:
        self._conn.close()
