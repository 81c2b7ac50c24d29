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


# ---------------------------------------------------------------------- the dtype the weights are cached in
@pytest.mark.parametrize("kind,requested,on_cuda,flags,cap,expected", [
    ("vllm", "auto", False, {"avx2"}, None, "float32"),  # no native bf16: auto -> float32
    ("vllm", "auto", False, {"avx512_bf16"}, None, "bfloat16"),
    ("vllm", "bfloat16", False, {"avx2"}, None, "bfloat16"),  # explicit stays
    ("vllm", "half", False, (), None, "float16"),  # vLLM's alias
    ("vllm", "auto", True, (), (9, 0), "bfloat16"),  # vLLM downcasts fp32 to the GPU's preferred type
    ("vllm", "auto", True, (), (7, 5), "float16"),  # no bf16 before compute capability 8.0
    ("transformers", "auto", True, (), (9, 0), "float32"),  # hf_engine: auto is float32
    ("transformers", "bfloat16", False, (), None, "bfloat16"),
])
def test_weights_dtype(kind, requested, on_cuda, flags, cap, expected):
    from cat_serve.engine.dtype import weights_dtype

    assert weights_dtype(kind, requested, on_cuda=on_cuda, flags=flags, cuda_capability=cap) == expected


def test_embedded_checkpoint_is_cast_once_per_dtype(tmp_path, monkeypatch):
    """A tiny fp32 'master' stands in for the converted GGUF; the bf16 copy holds the same values
    rounded to bfloat16 (what vLLM's own cast at load time gives), ints untouched, config saying so."""
    import json

    import torch
    from safetensors.torch import load_file, save_file

    from cat_serve import models

    monkeypatch.setenv("CAT_SERVE_CACHE", str(tmp_path))
    master = models.embedded_checkpoint_dir()
    master.mkdir(parents=True)
    w = torch.tensor([1.0, 1 / 3, -2.5e-3])
    save_file({"w": w, "ids": torch.tensor([1, 2])}, master / "model.safetensors")
    (master / "config.json").write_text(json.dumps({"dtype": "float32", "hidden_size": 4}))
    (master / "tokenizer.json").write_text("{}")
    (master / models._DONE_MARKER).write_text("test\n")

    assert models.embedded_checkpoint("float32") == master
    bf16 = models.embedded_checkpoint("bfloat16")
    assert bf16 != master and bf16.name.endswith("-bf16")
    t = load_file(bf16 / "model.safetensors")
    assert t["w"].dtype == torch.bfloat16 and torch.equal(t["w"], w.to(torch.bfloat16))
    assert t["ids"].dtype == torch.int64
    assert json.loads((bf16 / "config.json").read_text()) == {"dtype": "bfloat16", "hidden_size": 4}
    assert (bf16 / "tokenizer.json").read_text() == "{}"
    stamp = (bf16 / "model.safetensors").stat().st_mtime_ns
    assert models.embedded_checkpoint("bfloat16") == bf16  # cached: not cast again
    assert (bf16 / "model.safetensors").stat().st_mtime_ns == stamp
    assert models.embedded_checkpoint("float64") == master  # not ours to judge: the engine does
