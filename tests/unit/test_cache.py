import multiprocessing as mp
import os
from pathlib import Path

import pytest

from qresafe_exp.cache import ArtifactCache, RequestCache, content_key


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
