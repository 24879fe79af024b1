"""Generation engines behind one interface: ``generate(texts, spec, on_batch, desc) -> responses``
plus ``.model`` (the transformers model, for suites that score log-probabilities).

``EngineFactory`` is what the pipeline holds: it knows the request-cache tag of an engine before
building it, so a warm run never loads a model.
"""

from __future__ import annotations

from collections.abc import Callable

from qresafe_exp.registry import Registry

# each engine class: check(engine_cfg, device) before any model loads, cache_tag(engine_cfg, spec, dtype),
# from_factory(factory) -> the engine
ENGINES = Registry(
    "engine",
    {
        "hf": "qresafe_exp.engines.hf:HFEngine",
        "vllm": "qresafe_exp.engines.vllm:VLLMEngine",
        "llamacpp": "qresafe_exp.engines.llamacpp:LlamaCppEngine",
    },
)


def check_engine(engine_cfg, device) -> None:
    """Fail before any model loads: an unknown engine or decode mode, vLLM absent or without a GPU,
    llama-cpp-python absent."""
    if engine_cfg.name not in ENGINES:
        raise ValueError(f"engine={engine_cfg.name} is unknown. Allowed: {', '.join(ENGINES.names())}")
    ENGINES.get(engine_cfg.name).check(engine_cfg, device)


class EngineFactory:
    """``factory()`` builds the engine once (lazily); ``cache_tag(spec)`` names its outputs in the cache.

    Greedy transformers output keeps the untagged keys it always had (batching is a speed setting);
    sampled output of the compact loop draws from its own generator, so it is tagged; vLLM's output
    is tagged whatever the decoding (another kernel stack, other numerics), and so is llama.cpp's (with the
    GGUF dtype a full-precision checkpoint is converted to, when not f32); so is output computed in
    another dtype than the device's default (``engine.dtype``). ``artifacts`` and ``model_key`` let
    llama.cpp cache the GGUF conversion of a full-precision checkpoint.
    """

    def __init__(
        self,
        engine_cfg,
        path: str,
        device,
        tokenizer,
        load_model: Callable,
        seed: int = 0,
        artifacts=None,
        model_key: str | None = None,
    ):
        self.cfg, self.path, self.device, self.tokenizer = engine_cfg, path, device, tokenizer
        self.load_model, self.seed = load_model, seed
        self.artifacts, self.model_key = artifacts, model_key
        self._engine = None
        self.dtype = generation_dtype(engine_cfg, device)

    def cache_tag(self, spec) -> str | None:
        return ENGINES.get(self.cfg.name).cache_tag(self.cfg, spec, self.dtype)

    def __call__(self):
        if self._engine is None:
            self._engine = ENGINES.get(self.cfg.name).from_factory(self)
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
