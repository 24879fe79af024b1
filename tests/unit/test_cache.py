import hashlib
import json
import logging
import multiprocessing as mp
import os
import sqlite3
import time
from pathlib import Path

import pytest

from qresafe_exp.cache import (
    MANIFEST_FILE,
    ArtifactCache,
    DiskFullError,
    RequestCache,
    RequestCacheCorruptError,
    content_key,
    verify_artifact,
    write_json_atomic,
    write_text_atomic,
)


def test_key_is_stable_and_order_independent():
    a = content_key({"x": 1, "y": [1, 2]}, "up")
    b = content_key({"y": [1, 2], "x": 1}, "up")
    assert a == b
    assert a != content_key({"x": 2, "y": [1, 2]}, "up")
    assert a != content_key({"x": 1, "y": [1, 2]}, "other-upstream")


def test_build_once_then_serve_from_cache(tmp_path):
    cache = ArtifactCache(tmp_path)
    calls = []

    def build(out: Path):
        calls.append(out)
        (out / "weights.bin").write_text("w")

    first = cache.get_or_build("quantize", {"bits": 4}, build, upstream=["m1"])
    second = cache.get_or_build("quantize", {"bits": 4}, build, upstream=["m1"])
    assert first.built and not second.built
    assert len(calls) == 1 and first.path == second.path
    assert (second.path / "weights.bin").read_text() == "w"
    assert second.spec["spec"] == {"bits": 4} and second.spec["upstream"] == ["m1"]
    third = cache.get_or_build("quantize", {"bits": 4}, build, upstream=["m1"], version=2)
    assert third.built and third.key != first.key  # a code-version bump is a new artifact


def test_failed_build_publishes_nothing_and_is_retried(tmp_path):
    cache = ArtifactCache(tmp_path)

    def broken(out: Path):
        (out / "partial.bin").write_text("half")
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError):
        cache.get_or_build("eval", {"n": 1}, broken)
    key = cache.key("eval", {"n": 1})
    assert not cache.exists("eval", key)
    assert not list((tmp_path / "eval").glob(".tmp-*"))
    art = cache.get_or_build("eval", {"n": 1}, lambda out: (out / "ok").write_text("1"))
    assert art.built and (art.path / "ok").exists() and not (art.path / "partial.bin").exists()


def test_stale_temp_dir_of_a_killed_process_is_removed(tmp_path):
    cache = ArtifactCache(tmp_path)
    key = cache.key("eval", {"n": 2})
    stale = tmp_path / "eval" / f".tmp-{key}-99999"
    stale.mkdir(parents=True)
    (stale / "torn.bin").write_text("x")
    cache.get_or_build("eval", {"n": 2}, lambda out: (out / "ok").write_text("1"))
    assert not stale.exists()


def _build_in_process(root: str, counter: str) -> str:
    import time

    def build(out: Path):
        with open(counter, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        (out / "w").write_text("w")

    return ArtifactCache(root).get_or_build("quantize", {"shared": True}, build).key


def test_concurrent_workers_build_an_artifact_once(tmp_path):
    counter = tmp_path / "builds.txt"
    with mp.get_context("spawn").Pool(3) as pool:
        keys = pool.starmap(_build_in_process, [(str(tmp_path / "c"), str(counter))] * 3)
    assert len(set(keys)) == 1
    assert len(counter.read_text().splitlines()) == 1


def test_request_cache_round_trip_and_persistence(tmp_path):
    db = tmp_path / "r.sqlite"
    cache = RequestCache(db)
    cache.put_many("generation/m1", {"k1": "hello", "k2": "world"})
    assert cache.get_many("generation/m1", ["k1", "k2", "k3"]) == {"k1": "hello", "k2": "world"}
    assert cache.get_many("generation/m2", ["k1"]) == {}
    cache.close()
    reopened = RequestCache(db)
    assert reopened.count("generation/m1") == 2


def test_request_cache_fill_computes_only_what_is_missing(tmp_path):
    cache = RequestCache(tmp_path / "r.sqlite")
    cache.put_many("ns", {"a": 1})
    asked = []

    def compute(indices):
        asked.append(indices)
        return [10 * i for i in indices]

    assert cache.fill("ns", ["a", "b", "c"], compute) == [1, 10, 20]
    assert cache.fill("ns", ["c", "b"], compute) == [20, 10]
    assert asked == [[1, 2]]


# ---------------------------------------------------------------- corruption and disk-full (docs/fault_drills.md)
# A full disk under a build is drilled on a real tmpfs in tests/integration/test_fault_drills.py.
def _weights(out: Path):
    (out / "weights.bin").write_bytes(bytes(range(256)) * 64)
    (out / "sub").mkdir()
    (out / "sub" / "info.json").write_text('{"a": 1}')


def _counting(build, calls):
    def wrapped(out: Path):
        calls.append(out)
        build(out)

    return wrapped


def test_published_artifact_carries_a_manifest_of_every_file(tmp_path):
    art = ArtifactCache(tmp_path).get_or_build("quantize", {"bits": 4}, _weights)
    manifest = json.loads((art.path / MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == {"weights.bin", "sub/info.json", "spec.json"}
    for rel, entry in manifest["files"].items():
        data = (art.path / rel).read_bytes()
        assert entry["size"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert json.loads((art.path / "_SUCCESS").read_text()) == {"manifest": MANIFEST_FILE}
    assert verify_artifact(art.path, "hash") == []


def _flip_byte(path: Path, offset: int = 100) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_corrupt_byte_is_detected_moved_aside_and_rebuilt(tmp_path, caplog):
    cache, calls = ArtifactCache(tmp_path), []
    first = cache.get_or_build("quantize", {"bits": 4}, _counting(_weights, calls))
    good = (first.path / "weights.bin").read_bytes()
    time.sleep(0.01)  # a later write has a later mtime, even on a coarse clock
    _flip_byte(first.path / "weights.bin")
    with caplog.at_level(logging.WARNING, logger="qresafe_exp.cache"):
        again = cache.get_or_build("quantize", {"bits": 4}, _counting(_weights, calls))
    assert again.built and len(calls) == 2 and again.key == first.key
    assert (again.path / "weights.bin").read_bytes() == good  # rebuilt, not the corrupt copy
    aside = list((tmp_path / "quantize").glob(f".corrupt-{first.key}-*"))
    assert len(aside) == 1 and (aside[0] / "weights.bin").read_bytes() != good  # evidence kept, not deleted
    message = caplog.text
    assert f"quantize/{first.key}" in message and "weights.bin" in message and "sha256" in message
    assert str(aside[0]) in message


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda p: (p / "weights.bin").write_bytes(b"short"), "weights.bin has 5 bytes"),
        (lambda p: (p / "sub" / "info.json").unlink(), "sub/info.json is missing"),
        (lambda p: (p / MANIFEST_FILE).unlink(), "manifest.json is missing"),
        (lambda p: (p / MANIFEST_FILE).write_text("{not json"), "manifest.json is unreadable"),
    ],
    ids=["truncated", "file deleted", "manifest deleted", "manifest garbled"],
)
def test_truncated_missing_or_unreadable_files_are_detected(tmp_path, caplog, damage, expected):
    cache, calls = ArtifactCache(tmp_path), []
    art = cache.get_or_build("quantize", {"bits": 4}, _counting(_weights, calls))
    damage(art.path)
    assert expected in "; ".join(verify_artifact(art.path))
    with caplog.at_level(logging.WARNING, logger="qresafe_exp.cache"):
        again = cache.get_or_build("quantize", {"bits": 4}, _counting(_weights, calls))
    assert again.built and len(calls) == 2 and verify_artifact(again.path, "hash") == []
    assert expected in caplog.text


def test_hash_mode_catches_a_change_that_kept_the_mtime(tmp_path, monkeypatch):
    """The documented limit of the default mode: a same-size change whose mtime was put back (bit rot,
    a tool that restores times) passes `stat`; `hash` (QRESAFE_CACHE_VERIFY=hash) reads every byte."""
    calls = []
    art = ArtifactCache(tmp_path).get_or_build("quantize", {"bits": 4}, _counting(_weights, calls))
    st = (art.path / "weights.bin").stat()
    _flip_byte(art.path / "weights.bin")
    os.utime(art.path / "weights.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    served = ArtifactCache(tmp_path, verify="stat").get_or_build("quantize", {"bits": 4}, _counting(_weights, calls))
    assert not served.built and len(calls) == 1
    monkeypatch.setenv("QRESAFE_CACHE_VERIFY", "hash")
    rebuilt = ArtifactCache(tmp_path).get_or_build("quantize", {"bits": 4}, _counting(_weights, calls))
    assert rebuilt.built and len(calls) == 2


def test_artifact_from_before_manifests_is_served_unverified(tmp_path, caplog):
    cache, calls = ArtifactCache(tmp_path), []
    art = cache.get_or_build("model", {"old": True}, _counting(_weights, calls))
    (art.path / MANIFEST_FILE).unlink()
    (art.path / "_SUCCESS").write_text("")  # the empty marker older versions wrote
    with caplog.at_level(logging.DEBUG, logger="qresafe_exp.cache"):
        for _ in range(2):
            served = cache.get_or_build("model", {"old": True}, _counting(_weights, calls))
            assert not served.built
    assert len(calls) == 1
    assert caplog.text.count("predates manifests: served unverified") == 1  # logged once, at debug


def test_unknown_verify_mode_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="QRESAFE_CACHE_VERIFY.*Allowed: stat, hash"):
        ArtifactCache(tmp_path, verify="sha1")


def test_atomic_write_keeps_the_old_file_and_no_temp_when_the_write_fails(tmp_path):
    target = tmp_path / "metrics.json"
    write_json_atomic(target, {"ok": 1})
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(target, "torn \ud800")  # fails inside the write, after the temp file exists
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_request_cache_value_that_does_not_decode_is_recomputed(tmp_path, caplog):
    db = tmp_path / "r.sqlite"
    cache = RequestCache(db)
    cache.put_many("ns", {"a": "kept", "b": "lost"})
    raw = sqlite3.connect(db)
    raw.execute("UPDATE requests SET value='{\"truncated' WHERE key='b'")
    raw.commit()
    raw.close()
    asked = []

    def compute(indices):
        asked.append(indices)
        return ["again" for _ in indices]

    with caplog.at_level(logging.WARNING, logger="qresafe_exp.cache"):
        assert cache.fill("ns", ["a", "b"], compute) == ["kept", "again"]
    assert asked == [[1]]
    assert str(db) in caplog.text and "do not decode" in caplog.text and "namespace ns" in caplog.text
    assert cache.get_many("ns", ["b"]) == {"b": "again"}  # overwritten with the recomputed value


@pytest.mark.parametrize("where", ["header", "data page"])
def test_corrupt_request_cache_file_is_a_clear_error(tmp_path, where):
    db = tmp_path / "requests.sqlite"
    cache = RequestCache(db)
    cache.put_many("ns", {f"k{i}": "x" * 500 for i in range(200)})
    cache.close()
    raw = bytearray(db.read_bytes())
    if where == "header":
        raw[:16] = b"not a database!!"
    else:
        raw[3 * 4096 : 4 * 4096] = b"\xff" * 4096
    db.write_bytes(bytes(raw))
    with pytest.raises(RequestCacheCorruptError) as caught:
        RequestCache(db).get_many("ns", [f"k{i}" for i in range(200)])
    message = str(caught.value)
    assert f"the request cache {db} is corrupt" in message
    assert f"mv {db} {db}.corrupt" in message and "recomputed" in message
    assert db.read_bytes() == bytes(raw)  # left as it is: the user decides


def test_request_cache_on_a_full_disk_is_a_disk_full_error(tmp_path):
    """SQLite's own "database or disk is full", from a real size cap (max_page_count), not a mock."""
    cache = RequestCache(tmp_path / "r.sqlite")
    cache.put_many("ns", {"a": 1})
    page_count = cache._conn.execute("PRAGMA page_count").fetchone()[0]
    cache._conn.execute(f"PRAGMA max_page_count={page_count}")
    with pytest.raises(DiskFullError, match="ENOSPC.*request cache.*Nothing stored before is lost"):
        cache.put_many("ns", {f"k{i}": "x" * 5000 for i in range(50)})
    assert cache.get_many("ns", ["a"]) == {"a": 1}
