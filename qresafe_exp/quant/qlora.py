"""QLoRA: a bitsandbytes base (NF4 / LLM.int8()) + LoRA fine-tuned on the risk level's set.

merge=requantize (default) merges the adapter into the weights and quantizes them again: one bnb
checkpoint, what a merged QLoRA model is when deployed quantized. merge=adapter keeps the adapter
beside the quantized base (loaded together), which is how QLoRA models are usually served.
"""

from __future__ import annotations

from qresafe_exp.finetune import tokenize_example, train
from qresafe_exp.formats.sidecars import ADAPTER_DIR  # models.load_model attaches it when present
from qresafe_exp.provenance import seed_everything
from qresafe_exp.quant.base import Quantizer, UnsupportedCombinationError, checkpoint_bytes
from qresafe_exp.quant.bnb import check_format, load_quantized, resolved_format


class QloraQuantizer(Quantizer):
    name = "qlora"
    supported_bits = (4, 8)
    calibration = "finetune"
    backends = ("bitsandbytes",)

    @classmethod
    def validate(cls, cfg):
        super().validate(cfg)
        check_format(cls.name, cfg)
        if cfg.merge not in ("requantize", "adapter"):
            raise UnsupportedCombinationError(
                f"quant=qlora quant.merge={cfg.merge} is unknown. Allowed: requantize, adapter"
            )

    def quantize(self, model_path, out, cfg, calib, calib_records, seed):
        from peft import LoraConfig, get_peft_model
        from transformers import AutoTokenizer

        seed_everything(seed, deterministic=None)  # python, numpy, torch
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = get_peft_model(
            load_quantized(model_path, cfg),
            LoraConfig(
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules=list(cfg.target_modules),
                task_type="CAUSAL_LM",
            ),
        )
        items = [
            tokenize_example(tokenizer, r, calib.max_seq_length, cfg.train.max_response_tokens) for r in calib_records
        ]
        epochs = cfg.train.epochs or calib.epochs
        facts = train(
            model.get_base_model(),
            model.parameters(),
            items,
            epochs=epochs,
            batch_size=cfg.train.batch_size,
            lr=cfg.train.lr,
            pad_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            seed=seed,
            desc=f"qlora {resolved_format(cfg)} ({calib.name})",
        )
        if cfg.merge == "requantize":
            model.merge_and_unload().save_pretrained(out)
        else:
            model.save_pretrained(out / ADAPTER_DIR)
            load_quantized(model_path, cfg).save_pretrained(out)
        tokenizer.save_pretrained(out)
        return {
            "checkpoint_bytes": checkpoint_bytes(out),
            "format": f"bitsandbytes/{resolved_format(cfg)}"
            + (" + LoRA adapter" if cfg.merge == "adapter" else " (LoRA merged, requantized)"),
            "train": facts,
        }
