"""Pinned sources: every registry download is checked against its sha256 and a mismatch is refused and
never kept; the pins are the checksums of the byte-for-byte copies in ../shared/data. Downloads come from
a real HTTP server on loopback (tests/hub_server.FileServer)."""

import gzip
import hashlib
import logging
from pathlib import Path

import pytest

from qresafe_exp.data.pinned import ChecksumMismatchError, fetch_pinned
from qresafe_exp.data.registry import DATASETS, DatasetNotFoundError, DatasetSpec, load_records
from tests.hub_server import FileServer

ROWS = b'{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: hello", "rejected": "\\n\\nHuman: hi\\n\\nAssistant: no"}\n'
GZ = gzip.compress(ROWS, mtime=0)  # a binary file: the old text download could not keep it
GOOD = hashlib.sha256(GZ).hexdigest()


@pytest.fixture
def server():
    srv = FileServer({"test.jsonl.gz": GZ})
    yield srv
    srv.close()


def _spec(server, sha256):
    return DatasetSpec(
        "pinned_probe",
        "probe/test.jsonl.gz",
        f"{server.url}/test.jsonl.gz",
        DATASETS["hh_rlhf_harmless"].parse,
        sha256=sha256,
    )


def test_a_matching_download_is_kept_byte_for_byte(server, tmp_path):
    out = fetch_pinned("probe", f"{server.url}/test.jsonl.gz", tmp_path / "test.jsonl.gz", GOOD)
    assert out.read_bytes() == GZ


def test_a_mismatching_download_is_refused_and_not_kept(server, tmp_path):
    dest = tmp_path / "d" / "test.jsonl.gz"
    with pytest.raises(ChecksumMismatchError) as err:
        fetch_pinned("probe", f"{server.url}/test.jsonl.gz", dest, "0" * 64)
    message = str(err.value)
    assert "'probe'" in message and "0" * 64 in message and GOOD in message  # name, expected, got
    assert "nothing was kept" in message and "QRESAFE_DATA_DIR" in message  # and the fix
    assert not dest.exists() and not any(dest.parent.glob("*"))  # no file, no temp file


def test_registry_download_is_verified_then_loaded_and_a_bad_one_never_cached(server, tmp_path, monkeypatch):
    monkeypatch.setitem(DATASETS, "pinned_probe", _spec(server, GOOD))
    records = load_records("pinned_probe", None, str(tmp_path))
    assert [r["prompt"] for r in records] == ["hi"]
    cached = tmp_path / "datasets" / "probe" / "test.jsonl.gz"
    assert cached.read_bytes() == GZ

    monkeypatch.setitem(DATASETS, "pinned_probe", _spec(server, "f" * 64))
    other = tmp_path / "other"
    with pytest.raises(DatasetNotFoundError, match="has sha256 .* the registry pins f{64}"):
        load_records("pinned_probe", None, str(other))
    assert not (other / "datasets" / "probe" / "test.jsonl.gz").exists()


def test_a_cached_copy_that_differs_from_the_pin_is_fetched_again(server, tmp_path, monkeypatch):
    monkeypatch.setitem(DATASETS, "pinned_probe", _spec(server, GOOD))
    cached = tmp_path / "datasets" / "probe" / "test.jsonl.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"cached before pinning, or edited")
    load_records("pinned_probe", None, str(tmp_path))
    assert cached.read_bytes() == GZ and server.requests == 1


def test_a_local_copy_that_differs_is_used_with_one_warning(server, tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(DATASETS, "pinned_probe", _spec(server, GOOD))
    local = tmp_path / "data" / "probe" / "test.jsonl.gz"
    local.parent.mkdir(parents=True)
    local.write_bytes(gzip.compress(ROWS + ROWS.replace(b"hi", b"hey"), mtime=0))
    with caplog.at_level(logging.WARNING, logger="qresafe_exp.data.pinned"):
        assert len(load_records("pinned_probe", str(tmp_path / "data"))) == 2
        load_records("pinned_probe", str(tmp_path / "data"))
    warnings = [r.getMessage() for r in caplog.records if "differs from the pinned public file" in r.getMessage()]
    assert len(warnings) == 1 and str(local) in warnings[0]
    assert server.requests == 0  # a local copy is never replaced by a download


def test_every_pin_is_the_checksum_of_the_shared_copy(data_dir):
    """The pins were taken from ../shared/data (byte-for-byte copies of the public files): each still matches."""
    from qresafe_exp.cache import file_sha256

    pinned = {name: spec for name, spec in DATASETS.items() if spec.sha256}
    assert len(pinned) == 14
    for name, spec in pinned.items():
        assert file_sha256(Path(data_dir) / spec.local_file) == spec.sha256, name


def test_every_url_with_a_local_copy_is_pinned(data_dir):
    """A URL whose file has a byte-for-byte local copy carries its sha256 (the judge-prompt sources, whose
    copies are extracts, and HarmBench's eval_utils.py, which has no copy, are the documented exceptions)."""
    for name, spec in DATASETS.items():
        if spec.url and (Path(data_dir) / spec.local_file).is_file() and not spec.local_file.endswith(".txt"):
            assert spec.sha256, name


def test_urls_name_a_commit_except_the_documented_branch_ones():
    on_branch = {name for name, spec in DATASETS.items() if spec.url and "/main/" in spec.url}
    assert on_branch == {
        "alpaca_en_demo",
        "harmbench_val",
        "harmbench_test",
        "mt_bench_references",
        "mt_bench_judge_prompts",
        "alpaca_eval2",
        "harmbench_cls_prompt",
    }
    assert all(DATASETS[n].sha256 for n in on_branch - {"harmbench_cls_prompt"})  # pinned by content instead


def test_a_download_reads_the_proxy_settings_of_now_not_of_the_first_download(server, tmp_path, monkeypatch):
    """urlopen's shared opener keeps the proxies of its first call: a download made once under a refusing
    proxy (a machine without network) then failed every later one in the process, proxy gone or not."""
    from tests.judge_servers import free_port

    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(OSError):
        fetch_pinned("probe", f"{server.url}/test.jsonl.gz", tmp_path / "a.gz", GOOD)
    monkeypatch.delenv("http_proxy")
    assert fetch_pinned("probe", f"{server.url}/test.jsonl.gz", tmp_path / "b.gz", GOOD).read_bytes() == GZ
