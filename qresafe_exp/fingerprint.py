"""A checkpoint's fingerprint: one sha256 over what the model computes with, so two machines (or two
builds) can tell whether they hold the same weights without shipping them.

What is hashed, per *part* of the checkpoint directory:
- the model weights (``model*.safetensors`` shards, ``pytorch_model*.bin``, or the files a
  ``*.index.json`` names), merged into one part ``model``: sharding and file names do not matter;
- every other tensor file (the sidecars of formats/sidecars.py, a qlora adapter, any ``.pt``) is its own
  part, named by its path, so a sidecar can never be mistaken for a base weight;
- ``fake_quant.json`` (llm_qat's activation / KV quantizers, which change what the model computes) as
  canonical JSON: key order does not matter;
- a GGUF file: its bytes (tensor count read from its header).
Inside a part, tensors are hashed sorted by name: name, dtype, shape, byte count, raw bytes. The result
is independent of file layout, shard count, file order and JSON key order; tokenizer files, config.json
(it carries the transformers version) and the cache's own files are not part of it.

``cached_fingerprint`` stores the result beside the artifact directory (``<stage>/.<key>.fingerprint.json``,
next to the artifact's lock file), not inside it: patches hard-link every file of the quantized
artifact into theirs (formats/rewrite.link_checkpoint), so a file inside would travel into the patched
artifact's manifest and rewriting it there would make the cache flag that artifact as corrupt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import struct
from pathlib import Path

from qresafe_exp.cache import SUCCESS_MARKER, canonical_json, file_sha256, write_json_atomic

log = logging.getLogger(__name__)

ALGORITHM = "sha256/tensors-v1"  # change when what is hashed changes: cached fingerprints are then redone
JSON_SIDECARS = ("fake_quant.json",)
MODEL_PART = "model"
_MODEL_FILE = re.compile(r"^(model|pytorch_model)([-.].*)?\.(safetensors|bin)$")
_TENSOR_SUFFIXES = (".safetensors", ".pt", ".bin")


def _is_tensor_file(path: Path) -> bool:
    if path.suffix == ".bin":  # other .bin files (training_args.bin) are pickles, not weights
        return path.name.startswith(("pytorch_model", "adapter_model"))
    return path.suffix in _TENSOR_SUFFIXES


def _files(root: Path) -> list[Path]:
    """The files that make up the fingerprint, sorted (hidden files and dirs skipped)."""
    if root.is_file():
        return [root]
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if _is_tensor_file(path) or path.suffix == ".gguf" or path.name in JSON_SIDECARS:
            found.append(path)
    return found


def _index_files(root: Path) -> set[str]:
    """Shards named by a sharded checkpoint's index (``model.safetensors.index.json``), as relative paths."""
    named = set()
    for index in root.glob("*.index.json"):
        weight_map = json.loads(index.read_text()).get("weight_map") or {}
        named.update(weight_map.values())
    return named


def _part_of(root: Path, path: Path, indexed: set[str]) -> str:
    rel = path.relative_to(root).as_posix()
    if path.suffix != ".gguf" and (rel in indexed or ("/" not in rel and _MODEL_FILE.match(path.name))):
        return MODEL_PART
    return rel


def _tensors_of(path: Path, stack: contextlib.ExitStack) -> dict:
    """{name: loader()} for one tensor file; loaders read one tensor at a time (memory stays small)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        handle = stack.enter_context(safe_open(str(path), framework="pt"))
        return {name: (lambda n=name: handle.get_tensor(n)) for name in handle.keys()}
    import torch

    try:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # files in the legacy (non-zip) format cannot be memory-mapped
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - the message names the file and what it should hold
        raise ValueError(
            f"cannot fingerprint {path}: not a loadable tensor file ({type(err).__name__}: {err}). "
            f"Tensor files beside a checkpoint must be safetensors or a torch state dict"
        ) from err
    if not isinstance(state, dict) or not all(hasattr(v, "dtype") for v in state.values()):
        raise ValueError(f"cannot fingerprint {path}: it holds {type(state).__name__}, not a {{name: tensor}} dict")
    return {name: (lambda t=tensor: t) for name, tensor in state.items()}


def _hash_tensor_part(files: list[Path]) -> dict:
    import torch

    digest, count, nbytes = hashlib.sha256(), 0, 0
    with contextlib.ExitStack() as stack:
        loaders: dict = {}
        for path in files:
            for name, load in _tensors_of(path, stack).items():
                if name in loaders:
                    raise ValueError(f"tensor '{name}' appears twice in one checkpoint ({[str(f) for f in files]})")
                loaders[name] = load
        for name in sorted(loaders):
            tensor = loaders[name]().detach().cpu().contiguous()
            raw = tensor.reshape(-1).view(torch.uint8)  # the stored bytes, whatever the dtype
            shape = ",".join(str(d) for d in tensor.shape)
            digest.update(f"{name}\0{tensor.dtype}\0{shape}\0{raw.numel()}\0".encode())
            digest.update(raw.numpy())
            count += 1
            nbytes += raw.numel()
    return {"sha256": digest.hexdigest(), "tensors": count, "bytes": nbytes}


def _gguf_tensor_count(path: Path) -> int | None:
    # header: magic "GGUF", uint32 version, uint64 tensor count (versions 2 and 3, little-endian)
    with open(path, "rb") as handle:
        head = handle.read(16)
    if len(head) < 16 or head[:4] != b"GGUF" or struct.unpack("<I", head[4:8])[0] < 2:
        return None
    return struct.unpack("<Q", head[8:16])[0]


def checkpoint_fingerprint(path: str | os.PathLike) -> dict:
    """{'algorithm', 'sha256', 'tensors', 'tensor_bytes', 'parts': {part: {'sha256', 'tensors', 'bytes'}}}
    of a checkpoint directory (or a single .gguf / .safetensors file)."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"cannot fingerprint {root}: no such file or directory")
    files = _files(root)
    if not files:
        raise ValueError(f"cannot fingerprint {root}: it holds no weight files (*.safetensors, *.bin, *.pt, *.gguf)")
    base = root.parent if root.is_file() else root
    indexed = _index_files(base) if root.is_dir() else set()
    grouped: dict[str, list[Path]] = {}
    for file in files:
        grouped.setdefault(_part_of(base, file, indexed), []).append(file)
    model = grouped.get(MODEL_PART, [])
    if any(f.suffix == ".safetensors" for f in model):  # a hub snapshot may hold both forms; transformers loads these
        grouped[MODEL_PART] = [f for f in model if f.suffix == ".safetensors"]
    parts = {}
    for name, group in sorted(grouped.items()):
        first = group[0]
        if first.suffix == ".gguf":
            parts[name] = {
                "sha256": file_sha256(first),
                "tensors": _gguf_tensor_count(first),
                "bytes": first.stat().st_size,
            }
        elif first.suffix == ".json":
            text = canonical_json(json.loads(first.read_text()))
            parts[name] = {"sha256": hashlib.sha256(text.encode()).hexdigest(), "tensors": 0, "bytes": 0}
        else:
            parts[name] = _hash_tensor_part(group)
    top = hashlib.sha256()
    for name, part in parts.items():  # sorted by part name
        top.update(f"{name}\0{part['sha256']}\0".encode())
    counts = [p["tensors"] for p in parts.values()]
    return {
        "algorithm": ALGORITHM,
        "sha256": top.hexdigest(),
        "tensors": None if None in counts else sum(counts),
        "tensor_bytes": sum(p["bytes"] for p in parts.values()),
        "parts": parts,
    }


def _signature(root: Path) -> str:
    """Cheap identity of the files a fingerprint was computed from (path, size, mtime): a cached
    fingerprint is reused only while it matches."""
    base = root.parent if root.is_file() else root
    stats = [(f.relative_to(base).as_posix(), f.stat().st_size, f.stat().st_mtime_ns) for f in _files(root)]
    return hashlib.sha256(canonical_json([ALGORITHM, stats]).encode()).hexdigest()


def cache_file_for(path: Path, fallback_dir: Path | None = None) -> Path | None:
    """Where the fingerprint of ``path`` is kept: beside its artifact directory when ``path`` is (inside)
    a published artifact, else under ``fallback_dir`` keyed by the absolute path, else nowhere."""
    path = Path(path).resolve()
    for art in [path, *path.parents][:3]:
        if (art / SUCCESS_MARKER).exists():
            rel = path.relative_to(art).as_posix()
            inner = "" if rel == "." else "." + rel.replace("/", "_")
            return art.parent / f".{art.name}{inner}.fingerprint.json"
    if fallback_dir is not None:
        return Path(fallback_dir) / f"{hashlib.sha256(str(path).encode()).hexdigest()[:16]}.fingerprint.json"
    return None


def cached_fingerprint(path: str | os.PathLike, fallback_dir: str | os.PathLike | None = None) -> dict:
    """checkpoint_fingerprint(path), computed once per artifact and reused while its files are unchanged."""
    root = Path(path)
    cache = cache_file_for(root, Path(fallback_dir) if fallback_dir is not None else None)
    signature = _signature(root) if root.exists() else None
    if cache is not None and cache.exists():
        try:
            stored = json.loads(cache.read_text())
            if stored.get("signature") == signature and stored["fingerprint"].get("algorithm") == ALGORITHM:
                return stored["fingerprint"]
        except (OSError, ValueError, KeyError, AttributeError):
            pass  # unreadable: recompute and overwrite
    fingerprint = checkpoint_fingerprint(root)
    if cache is not None:
        try:
            write_json_atomic(cache, {"path": str(root.resolve()), "signature": signature, "fingerprint": fingerprint})
        except OSError as err:  # a read-only cache still gets its fingerprint, just not stored
            log.warning(
                "could not store the fingerprint of %s in %s (%s); it is recomputed next time", root, cache, err
            )
    return fingerprint
