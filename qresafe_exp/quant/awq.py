"""AWQ (Lin et al. 2024) through llm-compressor: activation-aware scaling, then group quantization."""

from qresafe_exp.quant.base import Quantizer
from qresafe_exp.quant.llmcompressor_backend import run_oneshot, weight_scheme


class AwqQuantizer(Quantizer):
    name = "awq"
    supported_bits = (4, 8)
    requires_calibration = True

    def quantize(self, model_path, out, cfg, calib, calib_records, seed):
        from llmcompressor.modifiers.quantization import QuantizationModifier
        from llmcompressor.modifiers.transform.awq import AWQModifier

        recipe = [AWQModifier(duo_scaling=cfg.duo_scaling, n_grid=cfg.n_grid),
                  QuantizationModifier(config_groups=weight_scheme(cfg), ignore=list(cfg.ignore))]
        return run_oneshot(model_path, out, recipe, calib, calib_records, seed)
