"""What an offline W&B run wrote, read from its run file (run-*.wandb) with wandb's own protobuf
records: the tests check history rows, step metrics, artifacts and the exit code with no server."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path


def records(run_dir: Path, timeout_s: float = 15.0) -> list:
    """The protobuf records of a closed run's file. wandb's service process writes the file on its own
    and may still be writing after run.finish() returns: wait for the run's exit record."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = list(_read(next(Path(run_dir).glob("*.wandb")).read_bytes()))
        if any(r.WhichOneof("record_type") == "exit" for r in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _read(data: bytes) -> Iterator:
    """Records of a run file: a LevelDB-style log of 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2

    pos, pending = 7, b""  # a 7-byte file header, then chunks: crc (4), length (2), type (1: full, 4: last)
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if pos + 7 + length > len(data):
            return  # a chunk still being written
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _items(items) -> dict:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def history(run_dir: Path) -> list[dict]:
    """Every logged row, in order (each run.log call is one row)."""
    return [_items(r.history.item) for r in records(run_dir) if r.WhichOneof("record_type") == "history"]


def series(run_dir: Path, prefix: str) -> list[dict]:
    """The rows of one step-indexed series (e.g. patch/train/history), its prefix taken off the keys."""
    return [
        {k.removeprefix(prefix + "/"): v for k, v in row.items() if k.startswith(prefix + "/")}
        for row in history(run_dir)
        if f"{prefix}/step" in row
    ]


def step_metrics(run_dir: Path) -> dict[str, str]:
    """{metric name or glob: its step metric} from define_metric."""
    return {
        r.metric.name or r.metric.glob_name: r.metric.step_metric
        for r in records(run_dir)
        if r.WhichOneof("record_type") == "metric"
    }


def summary(run_dir: Path) -> dict:
    out: dict = {}
    for r in records(run_dir):
        if r.WhichOneof("record_type") == "summary":
            out.update(_items(r.summary.update))
    return out


def artifacts(run_dir: Path) -> list:
    """The run's logged artifacts (name, type, metadata, manifest entries)."""
    return [r.artifact for r in records(run_dir) if r.WhichOneof("record_type") == "artifact"]


def exit_code(run_dir: Path) -> int | None:
    codes = [r.exit.exit_code for r in records(run_dir) if r.WhichOneof("record_type") == "exit"]
    return codes[-1] if codes else None
