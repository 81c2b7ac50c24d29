"""Engine adapters implementing the search core's StepGenerator (plus what the HTTP layer needs)."""

from __future__ import annotations

import importlib.util

from cat_serve.engine.base import Engine, PromptTooLongError

ENGINES = ("auto", "vllm", "transformers")


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def create_engine(kind: str, model_path: str, model_name: str, **options) -> Engine:
    """Build the adapter named by ``kind`` (auto = vLLM whenever it imports, else transformers)."""
    if kind not in ENGINES:
        raise ValueError(f"unknown engine {kind!r}; choose one of {', '.join(ENGINES)}")
    if kind == "auto":
        kind = "vllm" if vllm_available() else "transformers"
    if kind == "vllm":
        from cat_serve.engine.vllm_engine import VLLMEngine

        return VLLMEngine.create(model_path, model_name, **options)
    from cat_serve.engine.hf_engine import HFEngine

    return HFEngine.create(model_path, model_name, max_model_len=options.get("max_model_len"),
                           device=options.get("device", "auto"), dtype=options.get("dtype", "auto"))


__all__ = ["ENGINES", "Engine", "PromptTooLongError", "create_engine", "vllm_available"]
