"""Pinned sources: a registry download is checked against the sha256 the registry records before it is kept.

A download that does not match is never written (the bytes are hashed in memory, then written atomically),
so a changed upstream file or a corrupted transfer cannot enter the cache and be read by a later run. A
local data-dir copy that differs is only warned about: it may be a user's own, deliberately edited copy,
and refusing it would break runs that worked before pinning.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from functools import lru_cache
from pathlib import Path

from qresafe_exp.cache import file_sha256, write_bytes_atomic

log = logging.getLogger(__name__)


class ChecksumMismatchError(OSError):
    """A downloaded file is not the one the registry pins; nothing was kept."""


def fetch_pinned(name: str, url: str, dest: Path, sha256: str | None, timeout: float = 30) -> Path:
    """Download ``url`` to ``dest`` when its sha256 is ``sha256`` (None: unpinned, kept with a warning)."""
    # an opener per call reads the proxy settings of now; urlopen's shared opener keeps those of its first call
    with urllib.request.build_opener().open(url, timeout=timeout) as response:
        data = response.read()
    got = hashlib.sha256(data).hexdigest()
    if sha256 is None:
        log.warning("dataset %s: %s has no pinned sha256 (got %s); kept unverified", name, url, got)
    elif got != sha256:
        raise ChecksumMismatchError(
            f"dataset '{name}': the download from {url} has sha256 {got}, the registry pins {sha256}; nothing "
            "was kept. The upstream file changed or the transfer was corrupted: retry, or put a verified copy "
            "in a data directory (QRESAFE_DATA_DIR / paths.data_dir), or, after checking the new file, update "
            f"its sha256 in qresafe_exp/data/registry.py"
        )
    write_bytes_atomic(dest, data)
    return dest


def matches(path: Path, sha256: str) -> bool:
    st = os.stat(path)
    return _sha256_of(str(path), st.st_size, st.st_mtime_ns) == sha256


@lru_cache(maxsize=256)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a rewritten file is hashed again
    return file_sha256(Path(path))


_WARNED: set[str] = set()


def warn_if_different(name: str, path: Path, sha256: str | None) -> None:
    """Warn once per file when a local copy is not byte-for-byte the pinned public file."""
    if sha256 is None or str(path) in _WARNED or matches(path, sha256):
        return
    _WARNED.add(str(path))
    log.warning(
        "dataset %s: local copy %s differs from the pinned public file (sha256 %s expected); using it "
        "as it is, but its scores are not comparable with runs on the public file",
        name,
        path,
        sha256,
    )
