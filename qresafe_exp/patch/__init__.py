"""Safety patches by name: none, qresafe (masked-LoRA DPO) with its baselines dpo and sft (the same
trainer, no mask), and qresafe_awq (the paper's AWQ variant: safety-critical weights kept 16-bit)."""

from qresafe_exp.registry import Registry

PATCHES = Registry("patch", {
    "none": "qresafe_exp.patch.none:NoPatch",
    "qresafe": "qresafe_exp.patch.trained:TrainedPatch",
    "dpo": "qresafe_exp.patch.trained:TrainedPatch",
    "sft": "qresafe_exp.patch.trained:TrainedPatch",
    "qresafe_awq": "qresafe_exp.patch.awq_safety:AwqSafetyPatch",
})
