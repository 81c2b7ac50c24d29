"""Where the transformers engine puts the model: --device / --dtype resolution (no model is loaded)."""

from __future__ import annotations

import pytest
import torch

from cat_serve.config import ServerConfig
from cat_serve.engine.hf_engine import resolve_device, resolve_dtype


def test_auto_follows_cuda_availability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda:1") == "cuda:1"


def test_cuda_without_a_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("cpu") == "cpu"


def test_dtype_defaults_to_float32_for_exact_entropies():
    assert resolve_dtype("auto") is torch.float32
    assert resolve_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError):
        resolve_dtype("int8")


def test_device_flag_reaches_the_config():
    assert ServerConfig.from_args([]).device == "auto"
    assert ServerConfig.from_args(["--device", "cpu", "--engine", "transformers"]).device == "cpu"
