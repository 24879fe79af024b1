"""The full-precision reference: no quantization, no artifact."""

from qresafe_exp.quant.base import Quantizer
from qresafe_exp.stages import QuantResult


class NoQuantizer(Quantizer):
    name = "none"

    @classmethod
    def validate(cls, cfg) -> None:  # bits do not apply to the FP reference
        return None

    @classmethod
    def plan(cls, fp, cell, ctx) -> QuantResult:
        return QuantResult(fp, {})
