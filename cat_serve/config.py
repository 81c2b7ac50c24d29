"""Server configuration: one frozen dataclass, filled from the command line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from cat_serve.engine import ENGINES


@dataclass(frozen=True)
class ServerConfig:
    model: str = "embedded"  # "embedded", a local HF checkpoint dir, or a hub id (online only)
    engine: str = "auto"  # auto | vllm | transformers
    host: str = "127.0.0.1"
    port: int = 8000
    max_model_len: int | None = 4096  # None: the model's own context length
    default_max_tokens: int = 512  # when a request sets neither max_tokens nor max_completion_tokens
    dtype: str = "auto"  # vLLM: auto = the checkpoint's on GPU; on CPU bfloat16 only with native bf16. transformers: float32
    device: str = "auto"  # transformers engine: auto (CUDA when available) | cpu | cuda | cuda:N
    kv_cache_gib: int = 2  # vllm-cpu KV cache size (VLLM_CPU_KVCACHE_SPACE) unless already set
    gpu_memory_utilization: float | None = None  # vLLM on CUDA (default 0.85); on CPU 0.5
    calibration: str = "auto"  # profile JSON | none | auto (<model dir>/cat_calibration.json, shipped)

    @classmethod
    def from_args(cls, argv: list[str] | None = None) -> ServerConfig:
        p = argparse.ArgumentParser(prog="cat-serve", description=__doc__)
        d = cls()
        p.add_argument("--model", default=d.model, help="embedded | HF checkpoint dir | hub id")
        p.add_argument("--engine", default=d.engine, choices=ENGINES)
        p.add_argument("--host", default=d.host)
        p.add_argument("--port", type=int, default=d.port)
        p.add_argument("--max-model-len", type=int, default=d.max_model_len)
        p.add_argument("--default-max-tokens", type=int, default=d.default_max_tokens)
        p.add_argument("--dtype", default=d.dtype)
        p.add_argument("--device", default=d.device,
                       help="transformers engine: auto (CUDA when torch sees a GPU) | cpu | cuda | cuda:N")
        p.add_argument("--kv-cache-gib", type=int, default=d.kv_cache_gib)
        p.add_argument("--gpu-memory-utilization", type=float, default=d.gpu_memory_utilization)
        p.add_argument("--calibration", default=d.calibration,
                       help="calibration profile JSON (cat-eval calibrate), 'none', or 'auto': "
                            "<model dir>/cat_calibration.json, else the profile shipped for the embedded model")
        a = p.parse_args(argv)
        return cls(**{k: v for k, v in vars(a).items()})
