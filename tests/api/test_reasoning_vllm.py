"""A real reasoning-format model behind ``cat-serve --reasoning-parser qwen3``, through the official openai SDK.

The model is the embedded SmolLM2 fine-tuned to think in ``<think>…</think>`` (``make lab-reasoning-sft``,
lab/reasoning.py). Its training takes longer than a test fixture should (tens of minutes on two CPU cores), so
these tests skip, naming the make target, when the checkpoint is not cached.
"""

from __future__ import annotations

import dataclasses
import re

import httpx
import pytest

from tests.conftest import start_server, stop_server

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

QUESTION = [{"role": "user", "content": "Ava has 4 beads. Ava buys 3 more beads. Ava sells 2 beads. "
                                        "How many beads does Ava have now?"}]
STEP = re.compile(r"^\s*\d+\s*[-+*/]\s*\d+\s*=\s*\d+\s*$", re.M)
ANSWER = re.compile(r"The answer is (-?\d+)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from lab.reasoning import REASONING_PARSER, is_built, reasoning_dir

    path = reasoning_dir()
    if not is_built(path):
        pytest.skip(f"the reasoning-format checkpoint is not built: run `make lab-reasoning-sft` (caches {path})")
    srv = start_server("vllm", tmp_path_factory.mktemp("reasoning"), "--model", str(path),
                       "--reasoning-parser", REASONING_PARSER, "--dtype", "float32")
    srv = dataclasses.replace(srv, model=httpx.get(f"{srv.root}/v1/models").json()["data"][0]["id"])
    yield srv
    stop_server(srv)


def reasoning_of(message_or_delta) -> str | None:
    extra = message_or_delta.model_extra or {}
    assert extra.get("reasoning") == extra.get("reasoning_content")  # the same text under both names
    return extra.get("reasoning")


def test_reasoning_and_content(server):
    r = server.client().chat.completions.create(model=server.model, messages=QUESTION, temperature=0,
                                                max_tokens=128)
    message = r.choices[0].message
    thought = reasoning_of(message)
    assert thought and STEP.search(thought), thought  # the thinking holds the steps, one per line
    assert "<think>" not in thought and "</think>" not in thought
    assert ANSWER.search(message.content) and "</think>" not in message.content, message.content
    # completion_tokens counts the thinking; reasoning_tokens says how much of it was thinking
    thinking = r.usage.completion_tokens_details.reasoning_tokens
    assert 0 < thinking < r.usage.completion_tokens


def test_stream_matches_non_stream(server):
    client = server.client()
    body = dict(model=server.model, messages=QUESTION, temperature=0, max_tokens=128, seed=3)
    full = client.chat.completions.create(**body).choices[0].message
    thought, content = [], []
    for chunk in client.chat.completions.create(**body, stream=True):
        if chunk.choices:
            delta = chunk.choices[0].delta
            thought.append(reasoning_of(delta) or "")
            content.append(delta.content or "")
    assert sum(bool(t) for t in thought) > 1  # thinking arrives as several deltas, not one block at the end
    assert "".join(thought) == reasoning_of(full) and "".join(content) == full.content


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("strategy,params", [
    ("self_consistency", {"n": 4, "max_tokens": 128}),
    ("cat", {"branches": 2, "max_steps": 8, "max_step_tokens": 24, "max_tokens": 160}),
])
def test_search_over_the_thinking(server, strategy, params, stream):
    """The chosen path is split like a plain answer: thinking in reasoning, the answer in content; the
    search's answer is the content's."""
    body = dict(model=server.model, messages=QUESTION,
                extra_body={"search": strategy, "search_params": {**params, "seed": 1}})
    if not stream:
        r = server.client().chat.completions.create(**body)
        message, search = r.choices[0].message, r.model_extra["search"]
        thought, content = reasoning_of(message), message.content
        assert r.usage.completion_tokens == search["tokens_generated"]  # every path, thinking included
    else:
        thought, content, search = "", "", None
        for chunk in server.client().chat.completions.create(**body, stream=True):
            if chunk.choices:
                thought += reasoning_of(chunk.choices[0].delta) or ""
                content += chunk.choices[0].delta.content or ""
            search = (chunk.model_extra or {}).get("search") or search
    assert not search["abstained"]
    assert thought and STEP.search(thought), thought
    match = ANSWER.search(content or "")
    assert match, content
    assert search["answer"] == match.group(1)  # the answer voted on is the one in the content
    if strategy == "cat":
        assert search["steps"] >= 2  # CaT stepped through the thinking line by line


def test_enable_thinking_false_reaches_the_template(server):
    r = server.client().chat.completions.create(model=server.model, messages=QUESTION, temperature=0,
                                                max_tokens=32,
                                                extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    message = r.choices[0].message
    assert reasoning_of(message) is None  # the template closed the thinking: qwen3 reads it all as content
    assert r.usage.completion_tokens_details.reasoning_tokens == 0
    assert isinstance(message.content, str)
    # the prompt holds the pre-filled empty thinking block: the same messages cost more prompt tokens
    on = server.client().chat.completions.create(model=server.model, messages=QUESTION, temperature=0, max_tokens=1)
    assert r.usage.prompt_tokens > on.usage.prompt_tokens
