"""``--dtype auto`` on CPUs: bfloat16 only where the CPU computes it natively.

vLLM's own ``auto`` picks bfloat16 on every CPU. Without AVX512-BF16 or AMX, bfloat16 matmuls are
emulated and oneDNN falls back ("Failed to create oneDNN linear"); float32 is then faster (issue #9
measured 24 tok/s bf16 vs 42-48 tok/s fp32 on an AVX2-only EPYC). The CPU flags are an argument, so
the rule is testable without the hardware.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The ``flags`` of the first CPU in ``/proc/cpuinfo``; empty where it cannot be read."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):  # x86 / arm
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def resolve_dtype(requested: str, *, on_cuda: bool, flags: Iterable[str] = ()) -> str:
    """The dtype handed to vLLM: an explicit choice stays; ``auto`` stays ``auto`` on CUDA (the
    checkpoint's dtype), and on a CPU becomes bfloat16 with native bf16 support, else float32."""
    if requested != "auto" or on_cuda:
        return requested
    return "bfloat16" if NATIVE_BF16_FLAGS & set(flags) else "float32"


_ALIASES = {"half": "float16", "float": "float32"}


def weights_dtype(kind: str, requested: str, *, on_cuda: bool, flags: Iterable[str] = (),
                  cuda_capability: tuple[int, int] | None = None) -> str:
    """The dtype engine ``kind`` will hold the weights in for ``--dtype requested``, so the embedded
    checkpoint can be cached in it (``cat_serve.models.embedded_checkpoint``): loading float32
    weights into bfloat16 parameters makes vLLM warn once per weight.

    vLLM: :func:`resolve_dtype`; where that leaves ``auto`` (CUDA), vLLM downcasts a float32
    checkpoint to the GPU's preferred half type, bfloat16 from compute capability 8.0, else
    float16. transformers: float32 unless a half type is asked for (``hf_engine.resolve_dtype``)."""
    requested = _ALIASES.get(requested, requested)
    if kind != "vllm":
        return requested if requested in ("bfloat16", "float16") else "float32"
    dtype = resolve_dtype(requested, on_cuda=on_cuda, flags=flags)
    if dtype == "auto":
        dtype = "bfloat16" if (cuda_capability or (0, 0)) >= (8, 0) else "float16"
    return dtype


def machine_weights_dtype(kind: str, requested: str) -> str:
    """:func:`weights_dtype` on this machine (torch says whether and which CUDA device there is)."""
    import torch

    on_cuda = torch.cuda.is_available()
    return weights_dtype(kind, requested, on_cuda=on_cuda, flags=() if on_cuda else cpu_flags(),
                         cuda_capability=torch.cuda.get_device_capability() if on_cuda else None)
