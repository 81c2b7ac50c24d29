"""cat_serve.api.reasoning on the real SmolLM2 tokenizer with <think>/</think> added (as lab.reasoning adds
them), through vLLM's own parser classes. Expected values are written by hand from the text: vLLM keeps
the newlines around the markers (reasoning ``"\\n1 + 2 = 3\\n"``, content ``"\\n\\nThe answer is 3."``)."""

from __future__ import annotations

import pytest

from tests.training.conftest import tokenizer_dir  # noqa: F401  (the embedded tokenizer, saved once)

pytest.importorskip("vllm")

TEXT = "<think>\n1 + 2 = 3\n</think>\n\nThe answer is 3."
REASONING, CONTENT = "\n1 + 2 = 3\n", "\n\nThe answer is 3."


@pytest.fixture(scope="module")
def think_tokenizer(tokenizer_dir):  # noqa: F811
    from tokenizers import AddedToken

    from lab.reasoning import THINK_TEMPLATE
    from training.models import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ("<think>", "</think>")])
    tok.chat_template = THINK_TEMPLATE
    return tok


def parser(tok, name="qwen3"):
    from cat_serve.api.reasoning import ReasoningParser

    return ReasoningParser(name, tok)


def prompt_ids(tok, **kw):
    text = tok.apply_chat_template([{"role": "user", "content": "1+2?"}], add_generation_prompt=True,
                                   tokenize=False, **kw)
    return tok.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("name", ["qwen3", "deepseek_r1"])
def test_split_and_count(think_tokenizer, name):
    tok = think_tokenizer
    req = parser(tok, name).for_request(prompt_ids(tok))
    ids = tok.encode(TEXT, add_special_tokens=False)
    assert req.split(TEXT, ids) == (REASONING, CONTENT)
    assert req.split(TEXT) == (REASONING, CONTENT)  # search paths: text only
    # the tokens between the markers: those of "\n1 + 2 = 3\n"
    assert req.count(ids) == len(tok.encode(REASONING, add_special_tokens=False))
    # the template opened <think> in the prompt (lab.reasoning's): the output starts inside the thinking
    assert req.split(TEXT.removeprefix("<think>")) == (REASONING, CONTENT)
    # cut before </think> (max_tokens): all of it is reasoning, no content
    assert req.split("<think>\n1 + 2") == ("\n1 + 2", None)


def test_enable_thinking_false_and_include_reasoning_false(think_tokenizer):
    tok = think_tokenizer
    off = parser(tok).for_request(prompt_ids(tok, enable_thinking=False), {"enable_thinking": False})
    assert off.split("The answer is 3.") == (None, "The answer is 3.")  # qwen3: no thinking to split off
    hidden = parser(tok).for_request(prompt_ids(tok), include_reasoning=False)
    assert hidden.split(TEXT) == (None, CONTENT)


@pytest.mark.parametrize("holdback", [0, 4])
def test_stream_deltas_add_up_to_the_split(think_tokenizer, holdback):
    tok = think_tokenizer
    req = parser(tok).for_request(prompt_ids(tok))
    ids = tok.encode(TEXT, add_special_tokens=False)
    stream = req.stream(holdback)
    reasoning, content = [], []
    for k in range(1, len(ids) + 1):  # one engine delta per token, as a streamed request
        r, c = stream.feed(tok.decode(ids[:k]), ids[:k])
        reasoning.append(r)
        content.append(c)
        assert len("".join(content)) <= max(0, len(tok.decode(ids[:k])) - holdback)
    assert "".join(reasoning) == REASONING  # every thinking token was sent while streaming
    r, c = stream.finish(TEXT, ids)
    assert r == "" and "".join(content) + c == CONTENT
    assert len(c) == holdback  # exactly the held-back tail comes with the finish


def test_stream_finish_settles_a_trimmed_stop_string(think_tokenizer):
    tok = think_tokenizer
    req = parser(tok).for_request(prompt_ids(tok))
    text = TEXT + " EN"  # partial texts end in " EN": the stop string "END" could still come
    ids = tok.encode(text, add_special_tokens=False)
    stream = req.stream(holdback=len("END") - 1)
    sent = "".join(stream.feed(tok.decode(ids[:k]), ids[:k])[1] for k in range(1, len(ids) + 1))
    assert sent == CONTENT + " "  # "EN" held back (holdback 2 of the content)
    # the stop string completed: the engine finishes with it trimmed
    assert sent + stream.finish(TEXT + " ", ids)[1] == CONTENT + " "


def test_unknown_parser_and_tokenizer_without_markers(think_tokenizer, tokenizer_dir):  # noqa: F811
    from training.models import load_tokenizer

    with pytest.raises(ValueError, match="unknown --reasoning-parser 'nope'.*deepseek_r1.*qwen3"):
        parser(think_tokenizer, "nope")
    with pytest.raises(Exception, match="think"):  # vLLM's own check: the tokenizer has no <think> token
        parser(load_tokenizer(tokenizer_dir), "deepseek_r1")
