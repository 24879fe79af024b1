"""No patch: the quantized model is evaluated as it is."""


class NoPatch:
    name = "none"

    @classmethod
    def validate(cls, cfg, quant_cfg) -> None:
        return None

    def apply(self, model_ref, cfg, artifacts):
        return model_ref, {}
