"""Generation engines behind one interface: ``generate(texts, spec, on_batch, desc) -> responses``
plus ``.model`` (the transformers model, for suites that score log-probabilities).

``EngineFactory`` is what the pipeline holds: it knows the request-cache tag of an engine before
building it, so a warm run never loads a model.
"""

from __future__ import annotations

from typing import Callable, Optional

ENGINES = ("hf", "vllm", "llamacpp")


def check_engine(engine_cfg, device) -> None:
    """Fail before any model loads: an unknown engine or decode mode, vLLM absent or without a GPU,
    llama-cpp-python absent."""
    if engine_cfg.name not in ENGINES:
        raise ValueError(f"engine={engine_cfg.name} is unknown. Allowed: {', '.join(ENGINES)}")
    if engine_cfg.name == "llamacpp":
        check_llamacpp(engine_cfg)
        return
    if engine_cfg.name == "hf":
        from qresafe_exp.devices import engine_dtype
        from qresafe_exp.engines.hf import check_decode

        engine_dtype(engine_cfg.get("dtype"), device)

        check_decode(engine_cfg.decode, engine_cfg.cache_implementation, engine_cfg.compile)
        return
    from qresafe_exp.engines.vllm import INSTALL_HINT, vllm_available

    if device.type != "cuda":
        raise ValueError(f"engine=vllm needs a CUDA device (this run is on {device}); use engine=hf")
    if not vllm_available():
        raise ValueError(INSTALL_HINT)


def check_llamacpp(engine_cfg) -> None:
    from qresafe_exp.llamacpp import llama_cpp_missing
    from qresafe_exp.llamacpp.convert import DTYPES
    from qresafe_exp.preflight import check_count

    if missing := llama_cpp_missing():
        raise ValueError(f"engine=llamacpp: {missing}, or use engine=hf")
    for key, what in (("threads", "CPU threads (null = all cores)"), ("parallel", "model instances side by side"),
                      ("n_ctx", "tokens of context per instance"), ("n_batch", "prompt tokens per llama.cpp batch")):
        check_count(f"engine.{key}", engine_cfg.get(key), 1, what)
    if engine_cfg.gguf_dtype not in DTYPES:
        raise ValueError(f"engine.gguf_dtype={engine_cfg.gguf_dtype}: the GGUF a full-precision checkpoint is "
                         f"converted to for llama.cpp. Allowed: {', '.join(DTYPES)}")


class EngineFactory:
    """``factory()`` builds the engine once (lazily); ``cache_tag(spec)`` names its outputs in the cache.

    Greedy transformers output keeps the untagged keys it always had (batching is a speed setting);
    sampled output of the compact loop draws from its own generator, so it is tagged; vLLM's output
    is tagged whatever the decoding (another kernel stack, other numerics), and so is llama.cpp's (with the
    GGUF dtype a full-precision checkpoint is converted to, when not f32); so is output computed in
    another dtype than the device's default (``engine.dtype``). ``artifacts`` and ``model_key`` let
    llama.cpp cache the GGUF conversion of a full-precision checkpoint.
    """

    def __init__(self, engine_cfg, path: str, device, tokenizer, load_model: Callable, seed: int = 0,
                 artifacts=None, model_key: Optional[str] = None):
        self.cfg, self.path, self.device, self.tokenizer = engine_cfg, path, device, tokenizer
        self._load_model, self.seed = load_model, seed
        self.artifacts, self.model_key = artifacts, model_key
        self._engine = None
        self.dtype = generation_dtype(engine_cfg, device)

    def cache_tag(self, spec) -> Optional[str]:
        if self.cfg.name == "vllm":
            return "vllm"
        if self.cfg.name == "llamacpp":
            return "llamacpp" if self.cfg.gguf_dtype == "f32" else f"llamacpp-{self.cfg.gguf_dtype}"
        tag = "hf-compact" if spec.do_sample and self.cfg.decode == "compact" else None
        if self.dtype is not None:
            tag = f"{tag or 'hf'}-{str(self.dtype).removeprefix('torch.')}"
        return tag

    def __call__(self):
        if self._engine is None:
            if self.cfg.name == "vllm":
                from qresafe_exp.engines.vllm import VLLMEngine

                self._engine = VLLMEngine(self.path, self.tokenizer, self.cfg, seed=self.seed,
                                          scoring_model=lambda: self._load_model(self.path, self.device))
            elif self.cfg.name == "llamacpp":
                from qresafe_exp.engines.llamacpp import LlamaCppEngine

                self._engine = LlamaCppEngine(self.path, self.tokenizer, self.cfg, seed=self.seed,
                                              scoring_model=lambda: self._load_model(self.path, self.device),
                                              artifacts=self.artifacts, model_key=self.model_key)
            else:
                from qresafe_exp.engines.hf import HFEngine

                model = (self._load_model(self.path, self.device) if self.dtype is None
                         else self._load_model(self.path, self.device, dtype=self.dtype))
                self._engine = HFEngine(model, self.tokenizer,
                                        batch_size=self.cfg.batch_size, decode=self.cfg.decode,
                                        cache_implementation=self.cfg.cache_implementation,
                                        compile=self.cfg.compile)
        return self._engine

    def close(self) -> None:
        """Free what the engine holds outside Python's reach (llama.cpp's model and context)."""
        if self._engine is not None and hasattr(self._engine, "close"):
            self._engine.close()


def generation_dtype(engine_cfg, device):
    """The hf engine's dtype when ``engine.dtype`` makes it differ from the device's default, else None
    (None keeps the request keys every earlier run wrote)."""
    if engine_cfg.name != "hf" or engine_cfg.get("dtype") is None:
        return None
    from qresafe_exp.devices import compute_dtype, engine_dtype

    dtype = engine_dtype(engine_cfg.dtype, device)
    return None if dtype == compute_dtype(device) else dtype
