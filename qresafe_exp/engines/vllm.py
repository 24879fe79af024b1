"""vLLM's offline API as a generation engine (GPU machines; its own environment, `make setup-vllm`).

Prompts go in as the same token ids the transformers engine uses (rendered chat text, no extra
special tokens), so the two engines see identical inputs and their greedy outputs can be compared.
Checkpoints are the directories the quantizers write: vLLM reads their quantization config itself
(compressed-tensors for rtn / gptq / awq, bitsandbytes). What vLLM cannot apply is refused up front.
"""

from __future__ import annotations

import logging

from qresafe_exp.formats import sidecars_in
from qresafe_exp.formats.base import trusts_remote_code
from qresafe_exp.generate import stop_token_ids

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "engine=vllm: vLLM is not installed in this environment. On a CUDA machine run `make setup-vllm` "
    "and use .venv-vllm/bin/python (vLLM's compressed-tensors pin clashes with llmcompressor's, so it "
    "lives in its own environment; see docs/scale.md), or use engine=hf (the default)"
)


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def check_servable(path: str) -> None:
    """Refuse a checkpoint vLLM would load without the parts transformers adds (a silent wrong model)."""
    from qresafe_exp.formats import format_of

    if format_of(path).name == "gguf":
        raise ValueError(
            f"engine=vllm cannot serve {path}: it is a llama.cpp GGUF cell (quant=gguf). Run it with "
            "engine=llamacpp, or engine=hf (transformers dequantizes the file)"
        )
    # sidecars the transformers loader applies on top of the weights (qresafe_exp.models.load_model)
    found = [f"{name} ({what})" for name, what in sidecars_in(path).items()]
    if found:
        raise ValueError(
            f"engine=vllm cannot serve {path}: it carries {', '.join(found)}, which only the "
            "transformers loader applies. Run this cell with engine=hf"
        )


def stop_ids_of(path: str, tokenizer) -> list[int]:
    """The ids that end a response for the checkpoint at ``path``: its generation_config.json's
    eos_token_id (int or list) and the tokenizer's eos, the same set the transformers engine stops on."""
    from transformers import GenerationConfig

    try:
        generation_config = GenerationConfig.from_pretrained(path)
    except OSError:  # no generation_config.json: the tokenizer's eos alone
        generation_config = None
    return stop_token_ids(tokenizer, generation_config)


def request_kwargs(spec, index: int, stop_ids: list[int]) -> dict:
    """SamplingParams of prompt ``index``; the stop ids are explicit, not left to vLLM's own reading."""
    kwargs = {"max_tokens": spec.max_new_tokens, "skip_special_tokens": True, "stop_token_ids": list(stop_ids)}
    if spec.do_sample:  # a seed per request: reproducible whatever the batch composition
        kwargs.update(temperature=spec.temperature, top_p=spec.top_p, seed=spec.seed + index)
        if spec.top_k:
            kwargs["top_k"] = spec.top_k
    else:
        kwargs["temperature"] = 0.0
    return kwargs


class VLLMEngine:
    name = "vllm"

    @classmethod
    def check(cls, engine_cfg, device) -> None:
        if device.type != "cuda":
            raise ValueError(f"engine=vllm needs a CUDA device (this run is on {device}); use engine=hf")
        if not vllm_available():
            raise ValueError(INSTALL_HINT)

    @classmethod
    def cache_tag(cls, engine_cfg, spec, dtype) -> str:
        return "vllm"

    @classmethod
    def from_factory(cls, factory) -> VLLMEngine:
        return cls(
            factory.path,
            factory.tokenizer,
            factory.cfg,
            seed=factory.seed,
            scoring_model=lambda: factory.load_model(factory.path, factory.device),
        )

    def __init__(self, path: str, tokenizer, engine_cfg, seed: int = 0, scoring_model=None):
        check_servable(path)
        try:
            from vllm import LLM
        except ImportError as err:
            raise ImportError(INSTALL_HINT) from err
        self.path, self.tokenizer = path, tokenizer
        self.stop_ids = stop_ids_of(path, tokenizer)
        self._scoring_model = scoring_model
        self._model = None
        self.llm = LLM(
            model=path,
            tokenizer=path,
            seed=seed,
            trust_remote_code=trusts_remote_code(path),
            gpu_memory_utilization=engine_cfg.gpu_memory_utilization,
            max_model_len=engine_cfg.max_model_len,
            tensor_parallel_size=engine_cfg.tensor_parallel_size,
            enforce_eager=engine_cfg.enforce_eager,
        )

    @property
    def model(self):
        """The transformers model, for suites that score log-probabilities (loaded on first use)."""
        if self._model is None:
            log.info("loading the transformers model beside vLLM for log-probability scoring")
            self._model = self._scoring_model()
        return self._model

    def generate(self, texts: list[str], spec, on_batch=None, desc: str = "generate") -> list[str]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        params = [SamplingParams(**request_kwargs(spec, i, self.stop_ids)) for i in range(len(texts))]
        log.info("%s: %d prompts through vLLM", desc, len(texts))
        results = self.llm.generate([TokensPrompt(prompt_token_ids=t) for t in ids], params, use_tqdm=True)
        outputs = [r.outputs[0].text.strip() for r in results]
        if on_batch is not None:
            on_batch(list(range(len(texts))), outputs)
        return outputs
