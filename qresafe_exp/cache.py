"""Content-addressed artifact cache and a request-level cache.

Artifacts live in ``<root>/<stage>/<key>/``. The key is a hash of the canonical JSON of everything
that determines the artifact (its resolved config subtree, the upstream artifact keys and a
per-stage code version), never of what does not (device, logging). An artifact is built in a
temporary sibling directory and published with one ``os.rename``, so a reader sees either nothing or
a complete artifact; a process killed mid-build leaves only a temp dir that the next build removes.
A per-key file lock makes concurrent sweep workers (submitit, joblib) build each artifact once.

Every published artifact carries ``manifest.json`` (each file's relative path, size, mtime and
sha256), checked on every cache hit: sizes always, hashes of the files whose mtime changed
(``verify="stat"``, the default) or of every file (``verify="hash"``, or ``QRESAFE_CACHE_VERIFY=hash``).
A corrupt artifact is never served: it is moved aside to ``<stage>/.corrupt-<key>-<time>`` (kept as
evidence) and rebuilt. Artifacts published before manifests existed are served unverified.

Generations and judge verdicts are cached per request in SQLite, so a killed evaluation resumes
from the last finished batch. A stored value that does not decode is treated as missing (and
recomputed); a corrupt database file stops the run with an error that names it and the fix.
A full disk during a build or a cache write raises DiskFullError (an OSError, errno ENOSPC) that
names the stage and the path; the half-written build is removed and published artifacts are intact.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SUCCESS_MARKER = "_SUCCESS"
SPEC_FILE = "spec.json"
MANIFEST_FILE = "manifest.json"
VERIFY_MODES = ("stat", "hash")
VERIFY_ENV = "QRESAFE_CACHE_VERIFY"
_HASH_CHUNK = 8 << 20
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class CacheError(RuntimeError):
    """A cache that cannot be used as it is; the message names the file and the fix."""


class RequestCacheCorruptError(CacheError):
    pass


class DiskFullError(OSError):
    """No space (or quota) left while writing the cache; ``str()`` names the stage, the path and the fix."""

    def __init__(self, message: str, path: Path | None = None, code: int = errno.ENOSPC):
        super().__init__(code, message, str(path) if path is not None else None)
        self.message = message

    def __str__(self) -> str:
        return self.message


def is_disk_full(err: BaseException) -> bool:
    """True for ENOSPC/EDQUOT however it arrives: an OSError, safetensors' or SQLite's own errors."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            return True
        if isinstance(err, sqlite3.Error) and (getattr(err, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_FULL:
            return True
        text = str(err)
        if any(
            s in text
            for s in (
                "No space left on device",
                "os error 28",
                "Disk quota exceeded",
                "os error 122",
                "database or disk is full",
            )
        ):
            return True
        err = err.__cause__ or err.__context__
    return False


def _disk_full_code(err: BaseException) -> int:
    quota = isinstance(err, OSError) and err.errno == errno.EDQUOT or "quota" in str(err).lower()
    return errno.EDQUOT if quota else errno.ENOSPC


DISK_FULL_WORDS = {errno.EDQUOT: "disk quota exceeded (EDQUOT)", errno.ENOSPC: "no space left on device (ENOSPC)"}


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def without_later_defaults(settings: dict, later: dict) -> dict:
    """``settings`` minus the keys in ``later`` (settings added after artifacts were built, with the
    value they implicitly had) while they hold that value: the artifacts built before keep their keys."""
    return {k: v for k, v in settings.items() if not (k in later and v == later[k])}


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
    """Write a temp file next to ``path``, fsync it, then ``os.replace``: a reader (or a crash, or a
    full disk mid-write) sees the old file or the new one, never a torn one; a failed write leaves no temp."""
    _write_atomic(path, text, "w")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """``write_text_atomic`` for bytes (a downloaded file kept byte for byte, e.g. a .gz)."""
    _write_atomic(path, data, "wb")


def _write_atomic(path: Path, content: str | bytes, mode: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, mode) as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError) and not err.filename:
            err.filename = str(path)  # a failed write() names no file; the message should
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    buf = bytearray(_HASH_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as handle:
        while n := handle.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def build_manifest(root: Path) -> dict:
    """{'algorithm', 'files': {relative path: {'size', 'mtime_ns', 'sha256'}}} of every file under ``root``
    except the manifest itself and the success marker."""
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(root).as_posix()
        if rel in (MANIFEST_FILE, SUCCESS_MARKER):
            continue
        st = path.stat()
        files[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_sha256(path)}
    return {"format": 1, "algorithm": "sha256", "files": files}


# (path, size, mtime_ns, inode) -> sha256, so a process hashes an unchanged file once however many
# cells of a sweep read it
_HASH_MEMO: dict[tuple, str] = {}
_UNVERIFIED_LOGGED: set[tuple[str, str]] = set()


def _memo_sha256(path: Path, st: os.stat_result) -> str:
    memo_key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if memo_key not in _HASH_MEMO:
        _HASH_MEMO[memo_key] = file_sha256(path)
    return _HASH_MEMO[memo_key]


def verify_artifact(path: Path, mode: str = "stat") -> list[str] | None:
    """The problems of the published artifact at ``path`` ([] = intact), or None if it has no manifest
    (published before manifests existed: unverifiable)."""
    marker = path / SUCCESS_MARKER
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.exists():
        try:
            promised = marker.read_text().strip()
        except OSError:
            promised = ""
        if promised:  # a marker written with a manifest: the manifest went missing
            return [f"{MANIFEST_FILE} is missing"]
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return [f"{MANIFEST_FILE} is unreadable ({type(err).__name__}: {err})"]
    problems = []
    for rel, want in files.items():
        file = path / rel
        try:
            st = file.stat()
        except FileNotFoundError:
            problems.append(f"{rel} is missing")
            continue
        if st.st_size != want["size"]:
            problems.append(f"{rel} has {st.st_size} bytes, the manifest says {want['size']}")
            continue
        if mode == "hash" or st.st_mtime_ns != want.get("mtime_ns"):
            if _memo_sha256(file, st) != want["sha256"]:
                problems.append(f"{rel} does not match its sha256 in the manifest (same size, content changed)")
    return problems


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
    """``verify``: how a cache hit is checked against its manifest. ``stat`` (default): every file's
    presence and size, and the sha256 of any file whose mtime changed since it was published (any
    write through the file system); ``hash``: the sha256 of every file (also catches bit rot that
    keeps the mtime; ~0.4 s per 500 MB here). Default: $QRESAFE_CACHE_VERIFY, else ``stat``."""

    def __init__(self, root: str | os.PathLike, verify: str | None = None):
        self.root = Path(root)
        self.verify = verify or os.environ.get(VERIFY_ENV) or "stat"
        if self.verify not in VERIFY_MODES:
            raise ValueError(
                f"cache verify mode '{self.verify}' is unknown (from {VERIFY_ENV} or the verify "
                f"argument). Allowed: {', '.join(VERIFY_MODES)}"
            )

    def key(self, stage: str, spec: dict, upstream: list[str] = (), version: int = 1) -> str:
        return content_key(stage, version, spec, list(upstream))

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def exists(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / SUCCESS_MARKER).exists()

    def mark_incomplete(self, stage: str, key: str) -> None:
        """Keep the files (this run still reads them) but have the next run rebuild the artifact."""
        (self.path(stage, key) / SUCCESS_MARKER).unlink(missing_ok=True)

    def _intact(self, stage: str, key: str) -> list[str] | None:
        """[] or None (no manifest, served unverified) when the published artifact may be served."""
        problems = verify_artifact(self.path(stage, key), self.verify)
        if problems is None and (stage, key) not in _UNVERIFIED_LOGGED:
            _UNVERIFIED_LOGGED.add((stage, key))
            log.debug("[cache] %s/%s predates manifests: served unverified", stage, key)
        return problems

    def _move_aside(self, stage: str, key: str, problems: list[str]) -> Path:
        final = self.path(stage, key)
        aside = final.parent / f".corrupt-{key}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        os.rename(final, aside)  # one atomic step: readers see the corrupt artifact or nothing
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        log.warning(
            "[cache] artifact %s/%s at %s is corrupt (%s): moved aside to %s (kept as evidence; delete it "
            "when done) and rebuilding",
            stage,
            key,
            final,
            shown,
            aside,
        )
        return aside

    def get_or_build(
        self,
        stage: str,
        spec: dict,
        build: Callable[[Path], None],
        *,
        upstream: list[str] = (),
        version: int = 1,
    ) -> Artifact:
        """Return the artifact for ``spec``; if missing or corrupt, run ``build(tmp_dir)`` and publish it."""
        key = self.key(stage, spec, upstream, version)
        final = self.path(stage, key)
        if (final / SUCCESS_MARKER).exists() and not self._intact(stage, key):
            log.info("[cache hit] %s/%s", stage, key)
            return Artifact(stage, key, final, built=False)
        with file_lock(self.root / stage / f".{key}.lock"):
            if (final / SUCCESS_MARKER).exists():
                problems = self._intact(stage, key)
                if not problems:  # another worker built it while we waited
                    log.info("[cache hit] %s/%s (built by another worker)", stage, key)
                    return Artifact(stage, key, final, built=False)
                self._move_aside(stage, key, problems)
            for stale in final.parent.glob(f".tmp-{key}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            if final.exists():  # incomplete leftover without the success marker
                shutil.rmtree(final)
            tmp = final.parent / f".tmp-{key}-{os.getpid()}"
            log.info("[cache miss] building %s/%s", stage, key)
            started = time.time()
            try:
                tmp.mkdir(parents=True)
                build(tmp)
                write_json_atomic(
                    tmp / SPEC_FILE,
                    {
                        "stage": stage,
                        "version": version,
                        "upstream": list(upstream),
                        "spec": spec,
                        "build_seconds": round(time.time() - started, 2),
                    },
                )
                write_json_atomic(tmp / MANIFEST_FILE, build_manifest(tmp))
                (tmp / SUCCESS_MARKER).write_text(json.dumps({"manifest": MANIFEST_FILE}) + "\n")
                os.rename(tmp, final)
            except BaseException as err:
                shutil.rmtree(tmp, ignore_errors=True)
                if is_disk_full(err) and not isinstance(err, DiskFullError):
                    code = _disk_full_code(err)
                    raise DiskFullError(
                        f"{DISK_FULL_WORDS[code]} while building the {stage} artifact {key} in {tmp} "
                        f"({type(err).__name__}: {err}). The half-written build was removed; artifacts and "
                        f"results already published are intact. Free space on that file system (or point "
                        f"paths.cache_dir at a larger one) and rerun: finished stages are served from the cache.",
                        tmp,
                        code,
                    ) from err
                raise
            log.info("[cache] published %s/%s in %.1fs", stage, key, time.time() - started)
            return Artifact(stage, key, final, built=True)


_CORRUPT_DB = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


class RequestCache:
    """SQLite map (namespace, request key) -> JSON value, safe across processes (WAL mode).

    A value that does not decode is treated as missing (and recomputed, then overwritten). A database
    file that SQLite reports corrupt raises RequestCacheCorruptError naming the file and the fix; it is
    not replaced automatically: sweep workers may have it open, and a corrupt file usually means a disk
    or a copy went wrong, which deserves a look before rerunning."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._errors("opening"):
            self._conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS requests (ns TEXT, key TEXT, value TEXT, PRIMARY KEY (ns, key))"
            )

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as err:
            code = getattr(err, "sqlite_errorcode", 0) & 0xFF
            if code in _CORRUPT_DB:
                raise RequestCacheCorruptError(
                    f"the request cache {self.path} is corrupt ({err}; while {doing}). Fix: with no run using it, "
                    f"move it aside (`mv {self.path} {self.path}.corrupt`; likewise {self.path.name}-wal to "
                    f"{self.path.name}.corrupt-wal if present; delete {self.path.name}-shm) and rerun: the generations "
                    f"and judge verdicts it held are recomputed (nothing else is kept there)."
                ) from err
            if code == sqlite3.SQLITE_FULL:
                raise DiskFullError(
                    f"no space left on device (ENOSPC) while {doing} the request cache {self.path} ({err}). "
                    f"Nothing stored before is lost (SQLite rolled the write back). Free space on that file system "
                    f"(or point paths.cache_dir at a larger one) and rerun.",
                    self.path,
                ) from err
            raise

    def get_many(self, ns: str, keys: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        bad: list[str] = []
        with self._errors("reading"):
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT key, value FROM requests WHERE ns=? AND key IN ({marks})", [ns, *chunk]
                ).fetchall()
                for k, v in rows:
                    try:
                        found[k] = json.loads(v)
                    except (TypeError, ValueError):
                        bad.append(k)
        if bad:
            log.warning(
                "request cache %s: %d stored value(s) in namespace %s do not decode as JSON (e.g. key %s): "
                "treated as missing, recomputed and overwritten",
                self.path,
                len(bad),
                ns,
                bad[0],
            )
        return found

    def put_many(self, ns: str, items: dict[str, Any]) -> None:
        with self._errors("writing"):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO requests (ns, key, value) VALUES (?, ?, ?)",
                    [(ns, k, json.dumps(v)) for k, v in items.items()],
                )
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
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
        with self._errors("reading"):
            return self._conn.execute("SELECT COUNT(*) FROM requests WHERE ns=?", [ns]).fetchone()[0]

    def close(self) -> None:
        self._conn.close()
