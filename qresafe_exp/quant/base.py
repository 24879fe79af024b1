"""What every quantizer declares, the checks that run before any model loads, and the quantize stage's
plan (qresafe_exp/stages.py): the quantizer's spec and its `quantize` as the build."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from omegaconf import DictConfig, OmegaConf

from qresafe_exp.cache import without_later_defaults, write_json_atomic
from qresafe_exp.models import ModelRef
from qresafe_exp.stages import Plan, QuantResult

if TYPE_CHECKING:
    from qresafe_exp.stages import StageContext


class UnsupportedCombinationError(ValueError):
    """A cell that this quantizer cannot run here (bits, format, backend, hardware)."""


class BitsNotSupportedError(UnsupportedCombinationError):
    pass


# Backends named by the original design card that are dead on this stack: name -> why + what instead.
RETIRED_BACKENDS = {
    "auto_gptq": (
        "auto-gptq is archived upstream; 0.7.1 does not import with transformers 5 (`cannot import name "
        "'no_init_weights'`) and refuses to quantize without CUDA. Use quant.backend=llmcompressor (the "
        "default, CPU and GPU) or quant.backend=gptqmodel, its maintained successor (optional extra for GPU "
        "machines: pip install -e '.[gptqmodel]'). See README, 'Quantization backends'."
    ),
    "autoawq": (
        "autoawq is archived upstream; on CPU it quantizes at ~1 min per layer, and transformers 5 loads AWQ "
        "checkpoints only through gptqmodel. Use quant.backend=llmcompressor (the default, CPU and GPU) or "
        "quant.backend=gptqmodel, its maintained successor (optional extra for GPU machines: "
        "pip install -e '.[gptqmodel]'). See README, 'Quantization backends'."
    ),
}


def quant_seed(cell: DictConfig) -> int:
    """The quantize stage's seed: ``quant.seed`` where set, else the cell's ``seed``."""
    seed = cell.quant.get("seed")
    return cell.seed if seed is None else seed


def checkpoint_bytes(out: Path) -> int:
    """The checkpoint's weight files on disk (what the tables report as size)."""
    return sum(f.stat().st_size for f in Path(out).glob("*.safetensors"))


class Quantizer:
    name: ClassVar[str]
    supported_bits: ClassVar[tuple[int, ...]] = ()
    # What data the method reads: None; "activation" (activation statistics only: gptq, awq; the
    # paper treats these as dataset-free, so the data is `calib.activation`, fixed across risk
    # levels); "finetune" (the quantization-assisting set of the risk level: qlora, llm_qat, aqlm).
    calibration: ClassVar[str | None] = None
    backends: ClassVar[tuple[str, ...]] = ()  # allowed quant.backend values (first = default)
    needs_gpu: ClassVar[bool] = False
    version: ClassVar[int] = 1  # bump when the produced checkpoint changes for the same config

    @classmethod
    def validate(cls, cfg: DictConfig) -> None:
        """Raise UnsupportedCombinationError naming the combination; runs before any model loads."""
        if cls.supported_bits and cfg.bits not in cls.supported_bits:
            allowed = ", ".join(str(b) for b in cls.supported_bits)
            raise BitsNotSupportedError(
                f"quant={cls.name} cannot do bits={cfg.bits}. Allowed bits for {cls.name}: {allowed}"
            )
        backend = cfg.get("backend", "none")
        if backend in RETIRED_BACKENDS:
            raise UnsupportedCombinationError(f"quant={cls.name} quant.backend={backend}: {RETIRED_BACKENDS[backend]}")
        if cls.backends and backend not in cls.backends:
            raise UnsupportedCombinationError(
                f"quant={cls.name} has no backend '{backend}'. Allowed: {', '.join(cls.backends)}"
            )
        if backend == "gptqmodel":  # an optional extra: refuse before any work when it is missing
            from qresafe_exp.quant.gptqmodel_backend import gptqmodel_available

            if missing := gptqmodel_available():
                raise UnsupportedCombinationError(f"quant={cls.name} {missing}")
        if cls.needs_gpu:
            import torch

            if not torch.cuda.is_available():
                raise UnsupportedCombinationError(
                    f"quant={cls.name} bits={cfg.bits} needs a CUDA GPU and this machine has none. Run it on a "
                    "GPU machine, or pick a CPU quantizer (rtn, gptq, awq, bnb, qlora, llm_qat)."
                )

    @classmethod
    def merge_refusal(cls, cfg: DictConfig) -> str | None:
        """Why a patch delta cannot be merged back into this cell's checkpoint (the text after
        'patch=<p> on quant=<name>'), None when it can (the checkpoint's format does the merge)."""
        return None

    @classmethod
    def calibration_of(cls, cfg: DictConfig) -> str | None:
        """What data this cell's config reads: ``calibration``, unless an option turns it on or off
        (gguf reads activations only with quant.imatrix=true)."""
        return cls.calibration

    @classmethod
    def data_config(cls, calib: DictConfig, cfg: DictConfig | None = None) -> DictConfig | None:
        """The part of the calib config this method (with quant config ``cfg``) reads (None: data-free)."""
        kind = cls.calibration if cfg is None else cls.calibration_of(cfg)
        if kind == "activation":
            return calib.activation
        if kind == "finetune":
            return calib
        return None

    @classmethod
    def spec(cls, cfg: DictConfig, calib: DictConfig | None) -> dict:
        """The resolved config that determines the checkpoint (the cache key's input)."""
        quant = OmegaConf.to_container(cfg, resolve=True)
        quant.pop("tag", None)  # a label, not a setting
        quant.pop("seed", None)  # keyed as spec["seed"] by plan, where the method reads data
        spec = {"quant": quant}
        data = cls.data_config(calib, cfg) if calib is not None else None
        if data is not None:
            data = OmegaConf.to_container(data, resolve=True)
            if cls.calibration == "finetune":
                data.pop("activation", None)
                data.pop("eval_protocol", None)  # how the result is evaluated, not how it is built
                data = without_later_defaults(data, {"keep_judge": None, "refused_field": None})
            spec["calib"] = data
        return spec

    @classmethod
    def plan(cls, fp: ModelRef, cell: DictConfig, ctx: StageContext) -> Plan[QuantResult] | QuantResult:
        """The quantized checkpoint of ``fp`` (kind ``quantize``): ``spec`` plus, for a method that reads
        data, the seed and (a fine-tuning one) the content of the records it trains on."""
        from qresafe_exp.calibration import build_calibration
        from qresafe_exp.data import load_records
        from qresafe_exp.provenance import seed_everything

        data_cfg = cls.data_config(cell.calib, cell.quant)
        spec = cls.spec(cell.quant, cell.calib)
        calib_facts, records = None, None
        kind = cls.calibration_of(cell.quant)
        if kind == "activation":
            records = load_records(data_cfg.dataset, cell.paths.data_dir, cell.paths.cache_dir)
        elif kind == "finetune":
            calibration = build_calibration(cell, ctx)
            records, calib_facts = calibration.records, calibration.facts
            spec["calib_records"] = calib_facts["content_key"]  # what was actually trained on
        seed = quant_seed(cell)
        if seed and kind:  # its calibration sample / training order depends on the seed;
            spec["seed"] = seed  # seed 0 keeps the keys it always had

        def build(out: Path) -> None:
            seed_everything(seed, deterministic=None)  # the same RNG state however the cell got here
            info = cls().quantize(fp.path, out, cell.quant, data_cfg, records, seed)
            write_json_atomic(out / "quant_info.json", info)

        def read(art) -> QuantResult:
            info = json.loads((art.path / "quant_info.json").read_text())
            info.setdefault("simulated", False)
            info.update(quantize_seconds=art.spec["build_seconds"], artifact=art.key, cached=not art.built)
            if calib_facts:
                info["calibration"] = calib_facts
            return QuantResult(ModelRef(f"{fp.name}.{cell.quant.tag}", str(art.path), art.key), info)

        return Plan("quantize", spec, build, read, [fp.key], cls.version)

    def quantize(
        self,
        model_path: str,
        out: Path,
        cfg: DictConfig,
        calib: DictConfig | None,
        calib_records: list[dict] | None,
        seed: int,
    ) -> dict:
        """Write a checkpoint (weights + tokenizer) to ``out``; return facts worth logging."""
        raise NotImplementedError
