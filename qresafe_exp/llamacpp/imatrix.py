"""The importance matrix llama.cpp's quantizer can weigh its rounding error by, computed here in torch.

For every Linear of the transformers model: the mean over calibration tokens of each input column's squared
activation (what llama.cpp's imatrix tool accumulates, sum of x^2 / count), keyed by the GGUF tensor name.
The q/k row permutation of the converter (convert._interleave) moves output rows only, so the per-input-
column values need none. The calibration texts are the ones GPTQ / AWQ read (calib.activation).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


@torch.inference_mode()
def compute_imatrix(
    model_path: str, records: list[dict], num_samples: int, max_seq_length: int, seed: int
) -> dict[str, np.ndarray]:
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qresafe_exp.quant.llmcompressor_backend import calibration_dataset

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, model.config.num_hidden_layers)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name):
        def accumulate(_module, inputs, _output):
            x = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])
            sums[name] = sums.get(name, 0) + x.pow(2).sum(0)
            counts[name] = counts.get(name, 0) + x.shape[0]

        return accumulate

    handles = []
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear) and not module_name.endswith("lm_head"):
            gguf_name = names.get_name(f"{module_name}.weight", try_suffixes=(".weight",))
            if gguf_name is None:
                raise ValueError(f"{model_path}: layer {module_name} has no GGUF name for the importance matrix")
            handles.append(module.register_forward_hook(hook(gguf_name)))
    data = calibration_dataset(tokenizer, records, num_samples, max_seq_length, seed)
    for ids in data["input_ids"]:  # one record at a time: no padding tokens in the statistics
        model(input_ids=torch.tensor([ids]))
    for handle in handles:
        handle.remove()
    log.info("importance matrix: %d tensors from %d calibration records", len(sums), num_samples)
    return {name: (sums[name] / counts[name]).numpy() for name in sums}
