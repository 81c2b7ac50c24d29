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
