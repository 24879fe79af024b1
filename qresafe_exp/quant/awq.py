"""AWQ (Lin et al. 2024) through llm-compressor: activation-aware scaling, then group quantization
(calibrated on `calib.activation`)."""

from qresafe_exp.quant.base import Quantizer
from qresafe_exp.quant.gptqmodel_backend import quantize_with_gptqmodel
from qresafe_exp.quant.llmcompressor_backend import run_oneshot, weight_scheme


class AwqQuantizer(Quantizer):
    name = "awq"
    supported_bits = (2, 3, 4, 5, 6, 7, 8)  # all pack into compressed-tensors int32 words
    calibration = "activation"
    backends = ("llmcompressor", "gptqmodel")

    def quantize(self, model_path, out, cfg, calib, calib_records, seed, on_calibrated=None):
        """``on_calibrated``: see run_oneshot (Q-resafe's AWQ variant reads the smoothed fp weights)."""
        if cfg.backend == "gptqmodel":
            return quantize_with_gptqmodel(model_path, out, cfg, calib, calib_records, seed, method="awq")
        from llmcompressor.modifiers.quantization import QuantizationModifier
        from llmcompressor.modifiers.transform.awq import AWQModifier

        recipe = [
            AWQModifier(duo_scaling=cfg.duo_scaling, n_grid=cfg.n_grid),
            QuantizationModifier(config_groups=weight_scheme(cfg), ignore=list(cfg.ignore)),
        ]
        return run_oneshot(model_path, out, recipe, calib, calib_records, seed, on_calibrated)
