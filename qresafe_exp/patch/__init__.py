"""Safety patches by name: none, qresafe (masked-LoRA DPO) with its baselines dpo and sft (the same
trainer, no mask), qresafe_qa (trained through the re-quantizer), qresafe_awq (the paper's AWQ variant:
safety-critical weights kept 16-bit), and safepatching
(SafePatching: a gradient-ascent safety patch and a fine-tuned over-safety patch, merged under control)."""

from qresafe_exp.registry import Registry

PATCHES = Registry(
    "patch",
    {
        "none": "qresafe_exp.patch.none:NoPatch",
        # one trainer; the five differ only in their YAML (conf/patch/<name>.yaml: objective, tau, quant_aware)
        "qresafe": "qresafe_exp.patch.trained:TrainedPatch",
        "qresafe_qa": "qresafe_exp.patch.trained:TrainedPatch",
        "dpo": "qresafe_exp.patch.trained:TrainedPatch",
        "dpo_full": "qresafe_exp.patch.trained:TrainedPatch",  # its own name: the report's cost baseline
        "sft": "qresafe_exp.patch.trained:TrainedPatch",
        "qresafe_awq": "qresafe_exp.patch.awq_safety:AwqSafetyPatch",
        "safepatching": "qresafe_exp.patch.safepatching:SafePatching",
    },
)
