"""Round-to-nearest: per-group min-max scales, no calibration data (llm-compressor)."""

from qresafe_exp.quant.base import Quantizer
from qresafe_exp.quant.llmcompressor_backend import run_oneshot, weight_scheme


class RtnQuantizer(Quantizer):
    name = "rtn"
    supported_bits = (2, 3, 4, 5, 6, 7, 8)
    backends = ("llmcompressor",)

    def quantize(self, model_path, out, cfg, calib, calib_records, seed):
        from llmcompressor.modifiers.quantization import QuantizationModifier

        recipe = [QuantizationModifier(config_groups=weight_scheme(cfg), ignore=list(cfg.ignore))]
        return run_oneshot(model_path, out, recipe, None, None, seed)
