"""GPTQ (Frantar et al. 2023) through llm-compressor's GPTQModifier, calibrated on `calib`."""

from qresafe_exp.quant.base import Quantizer
from qresafe_exp.quant.llmcompressor_backend import run_oneshot, weight_scheme


class GptqQuantizer(Quantizer):
    name = "gptq"
    supported_bits = (4, 8)
    requires_calibration = True

    def quantize(self, model_path, out, cfg, calib, calib_records, seed):
        from llmcompressor.modifiers.gptq import GPTQModifier

        recipe = [GPTQModifier(config_groups=weight_scheme(cfg), ignore=list(cfg.ignore),
                               dampening_frac=cfg.dampening_frac, block_size=cfg.block_size,
                               actorder=cfg.actorder)]
        return run_oneshot(model_path, out, recipe, calib, calib_records, seed)
