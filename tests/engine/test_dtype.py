"""--dtype auto on CPUs: float32 unless the CPU has native bf16 (flags injected, no hardware needed)."""

from __future__ import annotations

import pytest

from cat_serve.engine.dtype import cpu_flags, resolve_dtype


@pytest.mark.parametrize(("flags", "expected"), [
    ({"avx2", "fma"}, "float32"),  # AVX2-only EPYC of issue #9
    ({"avx2", "avx512f", "avx512_vnni"}, "float32"),  # AVX-512 without its bf16 extension
    ({"avx512f", "avx512_bf16"}, "bfloat16"),
    ({"amx_tile", "amx_bf16"}, "bfloat16"),
    (set(), "float32"),  # unknown CPU: the safe choice
])
def test_auto_on_cpu(flags, expected):
    assert resolve_dtype("auto", on_cuda=False, flags=flags) == expected


def test_explicit_dtype_and_cuda_are_left_alone():
    assert resolve_dtype("bfloat16", on_cuda=False, flags={"avx2"}) == "bfloat16"
    assert resolve_dtype("float32", on_cuda=False, flags={"avx512_bf16"}) == "float32"
    assert resolve_dtype("auto", on_cuda=True, flags=()) == "auto"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 avx512_bf16\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == frozenset({"fpu", "sse2", "avx2", "avx512_bf16"})
    assert cpu_flags(tmp_path / "missing") == frozenset()
