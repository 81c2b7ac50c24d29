"""lab.reasoning: the reasoning-format SFT's data, tokens, chat template and cache path (no training here)."""

from __future__ import annotations

import pytest

from lab import reasoning
from lab.reasoning import REASONING_RECIPE, THINK_TEMPLATE, completion_text, recipe_hash, reasoning_dir


def render(messages, **kwargs) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    return render_jinja_template([messages], chat_template=THINK_TEMPLATE, **kwargs)[0][0]


def test_completion_is_steps_inside_think_then_the_short_answer():
    # written by hand: one step per line inside <think>, a blank line, the answer sentence
    assert completion_text(["12 + 5 = 17", "17 * 3 = 51"], "51") == (
        "<think>\n12 + 5 = 17\n17 * 3 = 51\n</think>\n\nThe answer is 51.")


def test_training_rows_rotate_three_prompt_styles():
    rows = reasoning.training_rows({**REASONING_RECIPE, "limit": 3})
    assert len(rows) == 3
    users = [r["prompt"][0]["content"] for r in rows]
    assert users[0].endswith("?")  # the bare question
    assert users[1].endswith("end with '#### <answer>'.") and users[2].endswith("within \\boxed{}.")
    for r in rows:
        text = r["completion"][0]["content"]
        assert text.startswith("<think>\n") and "\n</think>\n\nThe answer is " in text


def test_template_generation_prompt_and_enable_thinking():
    user = [{"role": "user", "content": "2+2?"}]
    head = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n")
    # thinking on: the prompt opens <think>, the model thinks and closes it
    assert render(user, add_generation_prompt=True) == head + "<think>\n"
    assert render(user, add_generation_prompt=True, enable_thinking=True) == head + "<think>\n"
    assert render(user, add_generation_prompt=True, enable_thinking=False) == head + "<think>\n\n</think>\n\n"


def test_template_renders_an_assistant_turns_reasoning_before_its_content():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "A", "reasoning_content": "\nthought\n"}]
    assert render(msgs) == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n"
                            "<|im_start|>assistant\n<think>\nthought\n</think>\n\nA<|im_end|>\n")
    msgs[-1] = {"role": "assistant", "content": "A", "reasoning": "r"}  # vLLM's name for the field
    assert render(msgs).endswith("<|im_start|>assistant\n<think>\nr\n</think>\n\nA<|im_end|>\n")
    msgs[-1] = {"role": "assistant", "content": "A"}
    assert render(msgs).endswith("<|im_start|>assistant\nA<|im_end|>\n")


def test_think_tokens_are_single_unsplit_tokens_kept_by_decode(tokenizer_dir):
    import torch

    from training.models import build_tiny_model, load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    model = build_tiny_model(tok)
    n = len(tok)
    pieces = tok.encode("</think>", add_special_tokens=False)
    reasoning.add_think_tokens(model, tok)
    emb, head = model.get_input_embeddings().weight, model.lm_head.weight
    assert len(tok) == n + 2 and emb.shape[0] == head.shape[0] == n + 2
    assert not model.config.tie_word_embeddings and emb.data_ptr() != head.data_ptr()
    # </think>: input row = mean of its text pieces' rows, output row = <|im_end|>'s (the module doc's init)
    assert torch.allclose(emb[n + 1], emb[pieces].mean(0))
    assert torch.equal(head[n + 1], head[tok.eos_token_id]) and torch.equal(head[:n], emb[:n])
    ids = tok.encode("<think>\n1 + 2 = 3\n</think>\n\nThe answer is 3.", add_special_tokens=False)
    assert ids[0] == n and n + 1 in ids  # each marker is one new token
    # not special: decoding with skip_special_tokens (what vLLM does) keeps them for the reasoning parser
    assert tok.decode(ids, skip_special_tokens=True).startswith("<think>\n1 + 2 = 3\n</think>")
    assert tok.chat_template == THINK_TEMPLATE


def test_cache_path_is_keyed_on_the_recipe(monkeypatch, tmp_path):
    monkeypatch.setenv("CAT_SERVE_CACHE", str(tmp_path))
    path = reasoning_dir()
    assert path == tmp_path / "lab" / f"reasoning-{recipe_hash()}"
    assert reasoning_dir({**REASONING_RECIPE, "max_steps": 41}) != path  # any change trains a new checkpoint
    assert not reasoning.is_built(path)
    assert reasoning.main(["path"]) == 1  # not built: says so, names the make target


@pytest.mark.parametrize("key", ["template", "answer", "data"])
def test_recipe_hash_covers_format_fields(key):
    assert recipe_hash({**REASONING_RECIPE, key: REASONING_RECIPE[key] + "x"}) != recipe_hash()
