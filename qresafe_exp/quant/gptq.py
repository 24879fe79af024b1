"""GPTQ (Frantar et al. 2023) through llm-compressor's GPTQModifier, calibrated on `calib.activation`."""

from qresafe_exp.quant.base import Quantizer
from qresafe_exp.quant.gptqmodel_backend import quantize_with_gptqmodel
from qresafe_exp.quant.llmcompressor_backend import run_oneshot, weight_scheme


class GptqQuantizer(Quantizer):
    name = "gptq"
    supported_bits = (2, 3, 4, 5, 6, 7, 8)  # all pack into compressed-tensors int32 words
    calibration = "activation"
    backends = ("llmcompressor", "gptqmodel")

    def quantize(self, model_path, out, cfg, calib, calib_records, seed):
        if cfg.backend == "gptqmodel":
            return quantize_with_gptqmodel(model_path, out, cfg, calib, calib_records, seed, method="gptq")
        from llmcompressor.modifiers.gptq import GPTQModifier

        recipe = [
            GPTQModifier(
                config_groups=weight_scheme(cfg),
                ignore=list(cfg.ignore),
                dampening_frac=cfg.dampening_frac,
                block_size=cfg.block_size,
                actorder=cfg.actorder,
            )
        ]
        return run_oneshot(model_path, out, recipe, calib, calib_records, seed)
