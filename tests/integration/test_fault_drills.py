"""Fault drills (docs/fault_drills.md): the real CLI on the tiny smoke model, hit by the faults a long sweep
meets -- a SIGKILL mid-stage, a corrupt cached checkpoint, a judge endpoint that is slow and then dies, a
read-only or full output disk (real tmpfs mounts in a private mount namespace). Each drill checks that
nothing already computed is lost or rebuilt, that nothing corrupt or half-written is served, and that
the rerun ends complete.

Every drill starts from a copy of one finished smoke cell (``seed``: rtn w4 and its FP reference), copied
with mtimes kept, so the drills pay for the model, tokenizer and FP evaluation once."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from tests.judge_servers import ScriptedEndpoint, completion

BASE = ["debug=smoke", "model=tiny-random-llama", "quant=rtn"]
SEED_ARGS = [*BASE, "bits=4"]
W4_CELL = "tiny-random-llama.rtn-w4g64.none"
W8_CELL = "tiny-random-llama.rtn-w8g64.none"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def published(cache: Path) -> dict[str, dict[str, tuple[int, str]]]:
    """{stage/key: {file: (mtime_ns, sha256)}} of every published artifact."""
    out = {}
    for marker in sorted(cache.glob("*/*/_SUCCESS")):
        art = marker.parent
        out[f"{art.parent.name}/{art.name}"] = {
            p.relative_to(art).as_posix(): (p.stat().st_mtime_ns, sha256(p)) for p in art.rglob("*") if p.is_file()
        }
    return out


def temp_leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.startswith(".tmp-") or ".tmp-" in p.name]


def metrics_of(out: Path, cell: str, study: str = "smoke") -> dict:
    return json.loads((out / "studies" / study / cell / "metrics.json").read_text())


def assert_complete(metrics: dict, n: int) -> None:
    """Every suite of the smoke eval scored on all ``n`` prompts, no verdict missing."""
    scores = metrics["scores"]
    assert set(scores) == {"advbench", "xstest_safe", "alpaca_eval_ppl"}
    assert scores["advbench"]["asr"]["n"] == n and scores["advbench"]["judge_failures"]["n"] == 0
    assert scores["xstest_safe"]["refusal_rate"]["n"] == n and scores["xstest_safe"]["judge_failures"]["n"] == 0
    assert scores["alpaca_eval_ppl"]["reference_perplexity"]["n"] == n


@pytest.fixture(scope="module")
def seed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seed") / "out"
    result = run_cli(*SEED_ARGS, f"paths.output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def copy_seed(seed: Path, dest: Path) -> Path:
    shutil.copytree(seed, dest, symlinks=True)  # copy2: mtimes kept, as the manifest check expects of a copy
    return dest


def popen_cli(args: list[str], log: Path) -> subprocess.Popen:
    handle = open(log, "w")
    return subprocess.Popen(
        [sys.executable, "-m", "qresafe_exp", *args],
        cwd=ROOT,
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "R"
    except (OSError, IndexError):
        return False


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the run has already ended: proc.poll() says how
        os.killpg(proc.pid, sig)


def step_until(condition, proc: subprocess.Popen, what: str, log: Path, slice_s: float = 0.02, timeout: float = 240):
    """Let the run go on in slices of ``slice_s`` and test ``condition`` only while it is stopped (SIGSTOP),
    so the run cannot pass the awaited state unseen however starved this process is on a loaded machine
    (a free-running poll once saw a whole eval finish between two of its looks). On success the run is
    left stopped, for the caller to kill."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        _signal_group(proc, signal.SIGSTOP)
        # a thread on another core stops within microseconds; one blocked in the kernel (D, e.g. a vfork
        # parent whose child was stopped before its exec) runs no code of its own until it is continued
        settle = time.time() + 0.05
        while _running(proc.pid) and time.time() < settle:
            time.sleep(0.001)
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        _signal_group(proc, signal.SIGCONT)
        time.sleep(slice_s)
    _signal_group(proc, signal.SIGKILL)
    raise AssertionError(f"{what} did not happen in {timeout} s:\n{log.read_text()[-3000:]}")


def sigkill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error")]


def generation_rows(db: Path, model_key: str) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db, timeout=5) as conn:
        return conn.execute("SELECT COUNT(*) FROM requests WHERE ns=?", [f"generation/{model_key}"]).fetchone()[0]


# ---------------------------------------------------------------- drill 1: SIGKILL mid-stage
def test_cell_killed_mid_stage_redoes_only_that_stage(seed, tmp_path):
    out = copy_seed(seed, tmp_path / "out")
    cache, db = out / "cache", out / "cache" / "requests.sqlite"
    # one prompt per generation batch (one request-cache write each), 64 new tokens: a batch takes longer
    # than one 20 ms slice of step_until (the engine's batch size is not part of any cache key)
    args = [*BASE, "bits=8", "engine.batch_size=1", "eval.max_new_tokens=64", f"paths.output_dir={out}"]
    seeded = set(published(cache))

    # A: killed while the quantize stage builds (its temp dir exists, nothing published)
    proc = popen_cli(args, tmp_path / "a.log")
    step_until(
        lambda: list((cache / "quantize").glob(".tmp-*")), proc, "the quantize build started", tmp_path / "a.log"
    )
    sigkill(proc)
    after_a = published(cache)
    assert not [k for k in after_a if k.startswith("quantize/") and k not in seeded], "quantize ended before the kill"
    assert list((cache / "quantize").glob(".tmp-*"))  # the torn build the rerun must clear

    # B: killed in the eval stage's generation, after the quantize artifact was published
    proc = popen_cli(args, tmp_path / "b.log")
    new_quant = step_until(
        lambda: [
            p.parent.name for p in (cache / "quantize").glob("*/_SUCCESS") if f"quantize/{p.parent.name}" not in seeded
        ],
        proc,
        "quantize published",
        tmp_path / "b.log",
    )
    qkey = new_quant[0]
    step_until(lambda: generation_rows(db, qkey) >= 1, proc, "a first generation batch cached", tmp_path / "b.log")
    sigkill(proc)
    done = generation_rows(db, qkey)
    total = 2 * 4  # advbench + xstest_safe, 4 prompts each
    assert 1 <= done < total, f"the kill landed after all {total} generations: make the batches slower"
    assert list((cache / "eval").glob(".tmp-*"))  # the eval stage was mid-build
    before = published(cache)

    # C: the rerun redoes only the eval stage of the cell, generating only what the kill lost
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    after = published(cache)
    for art, files in before.items():  # every artifact published before the rerun: untouched (mtime, bytes)
        assert after[art] == files, f"{art} was rebuilt"
    assert f"[cache hit] quantize/{qkey}" in log and log.count("[cache miss] building") == 1
    assert f"advbench: {min(done, 4)}/4 responses cached" in log
    metrics = metrics_of(out, W8_CELL)
    assert metrics["cost"]["generated_now"] == total - done
    assert metrics["artifacts"]["quantize"] == qkey and metrics["quantization"]["cached"] is True
    assert_complete(metrics, 4)
    assert not temp_leftovers(out)


# ---------------------------------------------------------------- drill 2: a corrupt cached checkpoint
def test_corrupt_quantized_checkpoint_is_moved_aside_and_rebuilt(seed, tmp_path):
    out = copy_seed(seed, tmp_path / "out")
    qdir = next((out / "cache" / "quantize").glob("*/_SUCCESS")).parent
    weights = qdir / "model.safetensors"
    good = sha256(weights)
    model_before = {k: v for k, v in published(out / "cache").items() if k.startswith("model/")}
    with open(weights, "r+b") as handle:  # one byte in the middle of the tensor data: same size, wrong content
        handle.seek(weights.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0x55]))

    result = run_cli(*SEED_ARGS, f"paths.output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert f"artifact quantize/{qdir.name}" in log and "is corrupt" in log
    assert "model.safetensors does not match its sha256" in log
    aside = list(qdir.parent.glob(f".corrupt-{qdir.name}-*"))
    assert len(aside) == 1 and sha256(aside[0] / "model.safetensors") != good  # the evidence, kept
    assert sha256(weights) == good  # rebuilt (RTN is deterministic): the same bytes as before the damage
    assert f"[cache miss] building quantize/{qdir.name}" in log
    assert {k: v for k, v in published(out / "cache").items() if k.startswith("model/")} == model_before
    metrics = metrics_of(out, W4_CELL)
    assert metrics["quantization"]["cached"] is False
    assert_complete(metrics, 4)


def test_corrupt_request_cache_stops_the_run_with_the_fix_and_the_fix_works(seed, tmp_path):
    out = copy_seed(seed, tmp_path / "out")
    db = out / "cache" / "requests.sqlite"
    raw = bytearray(db.read_bytes())
    raw[:16] = b"overwritten!!!!!"  # the SQLite header
    db.write_bytes(bytes(raw))
    result = run_cli(*SEED_ARGS, f"paths.output_dir={out}")
    assert result.returncode == 1
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert errors[0].startswith(f"Error: the request cache {db} is corrupt (file is not a database")
    assert f"`mv {db} {db}.corrupt`" in errors[0] and "recomputed" in errors[0]
    assert db.read_bytes() == bytes(raw)  # left for the user to look at

    db.rename(db.with_name("requests.sqlite.corrupt"))  # the fix the message gives
    again = run_cli(*SEED_ARGS, f"paths.output_dir={out}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert_complete(metrics_of(out, W4_CELL), 4)


# ---------------------------------------------------------------- drill 3: a judge endpoint slow, then down
def reopen(endpoint: ScriptedEndpoint) -> None:
    """Serve again on the same port (the judge's base_url is part of its identity), same script and counter."""
    port = endpoint.server.server_address[1]
    endpoint.server = ThreadingHTTPServer(("127.0.0.1", port), endpoint.server.RequestHandlerClass)
    threading.Thread(target=endpoint.server.serve_forever, daemon=True).start()


def test_judge_slow_then_down_keeps_its_verdicts_and_the_rerun_asks_only_the_rest(seed, tmp_path):
    out = copy_seed(seed, tmp_path / "out")
    n_items, answered = 6, 3

    def script(n, body):
        if n == 1:  # slower than judge.timeout_s: the client times out and retries
            return 200, completion("#thereason: slow\n#thescore: 1"), 2.5
        if n == answered + 1:  # the 3rd verdict is answered, then the port closes: the rest get "connect"
            endpoint.server.shutdown()
            endpoint.server.server_close()
        return 200, completion("#thereason: ok\n#thescore: 1"), 0

    endpoint = ScriptedEndpoint(script)
    try:
        args = [
            *BASE,
            "quant=none",
            "eval.suites=[advbench]",
            f"eval.limit={n_items}",
            "judge=openai",
            f"judge.base_url={endpoint.base_url}",
            "judge.model=m",
            "judge.api_key_env=null",
            "judge.timeout_s=1",
            "judge.max_retries=1",
            "judge.backoff_s=0.01",
            "judge.concurrency=1",
            "study=judge",
            f"paths.output_dir={out}",
        ]
        first = run_cli(*args)
        assert first.returncode == 0, first.stderr[-3000:]
        assert endpoint.count == answered + 1  # the timed-out attempt and the answered ones
        block = metrics_of(out, "tiny-random-llama.fp.none", "judge")["scores"]["advbench"]
        failed = n_items - answered
        assert block["judge_failures"]["n"] == failed and block["judge_failures"]["kinds"] == {"connect": failed}
        assert block["asr"]["n"] == answered  # the verdicts obtained count; the failed ones are not zeros
        samples = [
            json.loads(line)
            for line in (out / "studies" / "judge" / "tiny-random-llama.fp.none" / "samples.jsonl")
            .read_text()
            .splitlines()
        ]
        assert sorted(s.get("attempts") for s in samples if not s.get("error")) == [1, 1, 2]  # one via the retry

        reopen(endpoint)
        asked_before = endpoint.count
        second = run_cli(*args)
        assert second.returncode == 0, second.stderr[-3000:]
        assert endpoint.count - asked_before == failed  # only the missing verdicts are asked again
        log = second.stdout + second.stderr
        assert f"advbench: {n_items}/{n_items} responses cached" in log  # and nothing is regenerated
        block = metrics_of(out, "tiny-random-llama.fp.none", "judge")["scores"]["advbench"]
        assert block["asr"]["n"] == n_items and not block["judge_failures"]["n"]
    finally:
        endpoint.close()


# ---------------------------------------------------------------- drill 4: read-only and full disks (tmpfs)
def _mount_namespace_problem() -> str | None:
    if shutil.which("unshare") is None:
        return "`unshare` (util-linux) is not installed"
    probe = tempfile.mkdtemp()
    try:
        result = subprocess.run(
            ["unshare", "-m", "bash", "-c", f"mount -t tmpfs -o size=1m tmpfs {probe} && mount -o remount,ro {probe}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        os.rmdir(probe)
    if result.returncode:
        return (
            f"cannot mount a tmpfs in a private mount namespace here (needs root or CAP_SYS_ADMIN): "
            f"{result.stderr.strip()}"
        )
    return None


@pytest.fixture(scope="module")
def mount_namespace() -> None:
    problem = _mount_namespace_problem()
    if problem:
        pytest.skip(problem)


def in_namespace(tmp_path: Path, script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``script`` (bash; $MNT is an empty dir to mount on, $PY the interpreter) in a private mount namespace:
    its mounts vanish with it. Evidence must be written outside $MNT."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    path = tmp_path / "drill.sh"
    path.write_text("set -u\n" + script)
    env = {**os.environ, "MNT": str(mnt), "PY": sys.executable, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        ["unshare", "-m", "bash", str(path), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_read_only_output_dir_fails_fast_with_one_clear_message(tmp_path, mount_namespace):
    result = in_namespace(
        tmp_path,
        r"""
mount -t tmpfs -o size=4m tmpfs "$MNT" && mkdir "$MNT/out" && mount -o remount,ro "$MNT" || exit 90
E="$1"
run() { name=$1; shift; s=$EPOCHREALTIME; "$@" > "$E/$name.out" 2> "$E/$name.err"; echo $? > "$E/$name.rc"
        echo "$s $EPOCHREALTIME" > "$E/$name.seconds"; }
run single "$PY" -m qresafe_exp debug=smoke model=tiny-random-llama quant=rtn bits=4 "paths.output_dir=$MNT/out"
run sweep "$PY" -m qresafe_exp -m debug=smoke model=tiny-random-llama quant=rtn bits=4,8 "paths.output_dir=$MNT/out/new"
QRESAFE_OUTPUT_DIR="$MNT/out" run env "$PY" -m qresafe_exp debug=smoke model=tiny-random-llama
run cache "$PY" -m qresafe_exp debug=smoke model=tiny-random-llama "paths.output_dir=$E/writable" \
    "paths.cache_dir=$MNT/out/cache"
""",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    fix = "point paths.output_dir (or QRESAFE_OUTPUT_DIR) at a writable directory"
    for name, _path, what in [
        ("single", "out", f"output dir {tmp_path}/mnt/out is not writable"),
        ("sweep", "out/new", f"output dir {tmp_path}/mnt/out/new is not writable"),
        ("env", "out", f"output dir {tmp_path}/mnt/out is not writable"),
        ("cache", "out/cache", f"cache dir {tmp_path}/mnt/out/cache is not writable"),
    ]:
        stderr = (tmp_path / f"{name}.err").read_text()
        assert (tmp_path / f"{name}.rc").read_text().strip() == "1", stderr
        assert len(error_lines(stderr)) == 1 and what in stderr and "Read-only file system, EROFS" in stderr
        assert (fix if name != "cache" else "point paths.cache_dir at a writable directory") in stderr
        assert "Traceback" not in stderr and len(stderr.splitlines()) <= 2, stderr
        started, ended = map(float, (tmp_path / f"{name}.seconds").read_text().split())
        assert ended - started < 20  # fails fast: before any model is loaded
    assert not (tmp_path / "writable" / "studies").exists()  # nothing ran in the writable output dir either


def test_disk_full_in_a_build_or_a_results_write_is_clear_and_leaves_nothing_torn(tmp_path, mount_namespace):
    """The cache layer and the atomic results write alone on a 1 MB tmpfs: writing 2 MB gets a real ENOSPC."""
    result = in_namespace(
        tmp_path,
        r"""
mount -t tmpfs -o size=1m tmpfs "$MNT" || exit 90
"$PY" - "$MNT" <<'EOF'
import json, sys
from pathlib import Path
from qresafe_exp.cache import ArtifactCache, DiskFullError, write_json_atomic
from qresafe_exp.cli import describe_write_error
root = Path(sys.argv[1])
cache = ArtifactCache(root / "cache")
small = cache.get_or_build("model", {"m": 1}, lambda out: (out / "w.bin").write_bytes(b"w" * 1000))
report = {}
try:
    cache.get_or_build("quantize", {"bits": 4}, lambda out: (out / "w.bin").write_bytes(b"q" * 2_000_000),
                       upstream=[small.key])
except DiskFullError as err:
    report.update(raised=type(err).__name__, errno=err.errno, message=str(err),
                  key=cache.key("quantize", {"bits": 4}, [small.key]),
                  left=sorted(p.name for p in (root / "cache" / "quantize").iterdir()),
                  model_intact=(small.path / "w.bin").read_bytes() == b"w" * 1000,
                  model_served=not cache.get_or_build("model", {"m": 1}, None).built)
metrics = root / "studies" / "smoke" / "cell" / "metrics.json"
write_json_atomic(metrics, {"old": True})
try:
    write_json_atomic(metrics, {"new": "x" * 2_000_000})
except OSError as err:
    report.update(results_error=describe_write_error(err, str(root), str(root / "cache")),
                  results_old=json.loads(metrics.read_text()),
                  results_dir=sorted(p.name for p in metrics.parent.iterdir()))
print(json.dumps(report))
EOF
""",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["raised"] == "DiskFullError" and report["errno"] == 28
    message = report["message"]
    assert message.startswith("no space left on device (ENOSPC) while building the quantize artifact")
    assert report["key"] in message and f"{tmp_path}/mnt/cache/quantize/.tmp-{report['key']}-" in message
    assert "half-written build was removed" in message and "rerun" in message
    assert report["left"] == [f".{report['key']}.lock"]  # no temp dir, nothing published
    assert report["model_intact"] and report["model_served"]
    # a results file: the old one stays whole, no temp file is left, the message names the file and the fix
    assert report["results_old"] == {"old": True} and report["results_dir"] == ["metrics.json"]
    assert report["results_error"].startswith(
        f"no space left on device (ENOSPC) writing {tmp_path}/mnt/studies/smoke/cell/metrics.json (the cell's"
    )
    assert "already published are intact" in report["results_error"] and "Free space" in report["results_error"]


def test_disk_full_mid_sweep_keeps_what_was_published_and_resumes_after_space_is_freed(seed, tmp_path, mount_namespace):
    """The seed cell on a tmpfs with 8 MB to spare; the next cell's quantized checkpoint needs ~16 MB."""
    result = in_namespace(
        tmp_path,
        r"""
E="$1"; SEED="$2"; shift 2
mount -t tmpfs -o size=$(( $(du -sk "$SEED" | cut -f1) + 8192 ))k tmpfs "$MNT" || exit 90
cp -a "$SEED" "$MNT/out"
snap() { (cd "$MNT/out" && find . -type f ! -name 'requests.sqlite*' -print0 | sort -z | xargs -0 sha256sum) \
           > "$E/$1.sha"
         (cd "$MNT/out" && find . -name '*.tmp-*' -o -name '.tmp-*') > "$E/$1.tmp"
         (cd "$MNT/out/cache" && ls -d */*/_SUCCESS) > "$E/$1.published"; }
snap before
"$PY" -m qresafe_exp "$@" "paths.output_dir=$MNT/out" > "$E/full.out" 2> "$E/full.err"; echo $? > "$E/full.rc"
snap full
mount -o remount,size=256m "$MNT"   # space freed
"$PY" -m qresafe_exp "$@" "paths.output_dir=$MNT/out" > "$E/rerun.out" 2> "$E/rerun.err"; echo $? > "$E/rerun.rc"
snap rerun
cp "$MNT/out/studies/smoke/"""
        + W8_CELL
        + r"""/metrics.json" "$E/metrics.json"
""",
        str(tmp_path),
        str(seed),
        *BASE,
        "bits=8",
    )
    assert result.returncode == 0, result.stderr
    evidence = {
        name: (tmp_path / name).read_text() for name in ("full.rc", "full.err", "rerun.rc", "rerun.err", "rerun.out")
    }
    lines = {step: set((tmp_path / f"{step}.sha").read_text().splitlines()) for step in ("before", "full", "rerun")}
    assert sum(line.endswith("/metrics.json") for line in lines["before"]) == 2  # the cell and its FP reference
    assert sum(line.endswith("/model.safetensors") for line in lines["before"]) == 2  # FP model, w4 checkpoint

    assert evidence["full.rc"].strip() == "1"
    errors = error_lines(evidence["full.err"])
    assert len(errors) == 1 and "Traceback" not in evidence["full.err"], evidence["full.err"][-3000:]
    assert errors[0].startswith("Error: no space left on device (ENOSPC) while building the quantize artifact")
    assert f"{tmp_path}/mnt/out/cache/quantize/.tmp-" in errors[0]
    assert lines["before"] <= lines["full"]  # every published artifact and metrics.json: the same bytes
    assert not (tmp_path / "full.tmp").read_text().strip()  # no temp file or build dir left
    assert (tmp_path / "full.published").read_text() == (tmp_path / "before.published").read_text()

    assert evidence["rerun.rc"].strip() == "0", evidence["rerun.err"][-3000:]
    assert lines["before"] <= lines["rerun"]  # nothing published was rebuilt or rewritten
    log = evidence["rerun.err"] + evidence["rerun.out"]
    assert "[cache hit] model/" in log and log.count("[cache miss] building") == 2  # the cell's quantize + eval
    assert not (tmp_path / "rerun.tmp").read_text().strip()
    assert (
        len((tmp_path / "rerun.published").read_text().split())
        == len((tmp_path / "before.published").read_text().split()) + 2
    )
    assert_complete(json.loads((tmp_path / "metrics.json").read_text()), 4)
