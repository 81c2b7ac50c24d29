"""Shared fixtures: the embedded tokenizer (loaded from the GGUF once per session) and tiny data."""

from __future__ import annotations

import pytest

from training.data import parse_example


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    """The embedded SmolLM2 tokenizer saved as a plain HF tokenizer directory (fast to reload)."""
    from training.models import load_tokenizer

    try:
        tok = load_tokenizer(None)
    except FileNotFoundError as exc:
        pytest.skip(f"embedded model not available: {exc}")
    path = tmp_path_factory.mktemp("tokenizer")
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_examples():
    return [
        parse_example("Natalia sold 48 clips in April and half as many in May. How many in May?",
                      "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 24"),
        parse_example("Weng earns $12 an hour. How much for 3 hours?",
                      "She earns 12*3 = <<12*3=36>>36 dollars.\nSo she earns 36 dollars.\n#### 36"),
    ]
