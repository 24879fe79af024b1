"""Quantizers by name. Adding one = a module here, a line below, and qresafe_exp/conf/quant/<name>.yaml."""

from qresafe_exp.registry import Registry

QUANTIZERS = Registry(
    "quantizer",
    {
        "none": "qresafe_exp.quant.none:NoQuantizer",
        "rtn": "qresafe_exp.quant.rtn:RtnQuantizer",
        "gptq": "qresafe_exp.quant.gptq:GptqQuantizer",
        "awq": "qresafe_exp.quant.awq:AwqQuantizer",
        "bnb": "qresafe_exp.quant.bnb:BnbQuantizer",
        "qlora": "qresafe_exp.quant.qlora:QloraQuantizer",
        "llm_qat": "qresafe_exp.quant.llm_qat:LlmQatQuantizer",
        "aqlm": "qresafe_exp.quant.aqlm:AqlmQuantizer",
        "gguf": "qresafe_exp.quant.gguf:GgufQuantizer",
    },
)
