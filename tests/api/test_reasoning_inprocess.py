"""Reasoning output and chat_template_kwargs at the HTTP edge, in process (FakeEngine, vLLM's real ``qwen3`` parser).

The fake vocabulary is word pieces, so a scripted completion ``<think> \\n 1+2=3 \\n </think> \\n\\n The answer
is 3.`` is seven tokens. Expected values are written by hand from vLLM's split: reasoning ``"\\n1+2=3\\n"``
(the tokens between the markers: 3), content ``"\\n\\nThe answer is 3."``.
"""

from __future__ import annotations

import httpx
import pytest

from cat_serve.api.app import create_app
from cat_serve.api.serving import ABSTAIN_TEXT
from cat_serve.config import ServerConfig
from tests.fakes import FakeEngine, cont

pytest.importorskip("vllm")

MODEL = "fake-model"
USER = [{"role": "user", "content": "1+2?"}]
PIECES = ("<think>", "\n", "1+2=3", "\n", "</think>", "\n\n", "The answer is 3.")
REASONING, CONTENT = "\n1+2=3\n", "\n\nThe answer is 3."


@pytest.fixture
async def api():
    engine = FakeEngine(model_name=MODEL, max_model_len=64)
    for piece in ("<think>", "</think>"):  # in the vocabulary before the server checks it for the markers
        engine.gen.token_id(piece)
    app = create_app(ServerConfig(default_max_tokens=16, reasoning_parser="qwen3"), engine=engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://cat") as client:
            yield engine, client


def prompt(engine, suffix: str = "") -> tuple[int, ...]:
    """The prompt the server builds for USER: the fake template's text is one token."""
    return (engine.gen.token_id(f"<user>1+2?<assistant>{suffix}"),)


async def chat(client, **body):
    return await client.post("/v1/chat/completions", json={"model": MODEL, "messages": USER, **body})


def sse_events(text: str) -> list:
    import json

    return [b[6:] if b[6:] == "[DONE]" else json.loads(b[6:]) for b in text.split("\n\n") if b.startswith("data: ")]


async def test_message_reasoning_and_usage(api):
    engine, client = api
    engine.gen.script(prompt(engine), cont(*PIECES))
    body = (await chat(client)).json()
    assert body["choices"][0]["message"] == {"role": "assistant", "content": CONTENT, "reasoning": REASONING,
                                             "reasoning_content": REASONING}
    assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 7, "total_tokens": 8,
                             "completion_tokens_details": {"reasoning_tokens": 3}}


async def test_stream_sends_reasoning_deltas_then_content(api):
    engine, client = api
    engine.gen.script(prompt(engine), cont(*PIECES))
    events = sse_events((await chat(client, stream=True, stream_options={"include_usage": True})).text)
    assert events[-1] == "[DONE]"
    deltas = [c["choices"][0]["delta"] for c in events[1:-1] if c["choices"]]
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    thought = [d["reasoning"] for d in deltas if "reasoning" in d]
    assert thought == ["\n", "1+2=3", "\n"]  # one delta per thinking token, markers not sent
    assert all(d["reasoning_content"] == d["reasoning"] for d in deltas if "reasoning" in d)
    assert "".join(d.get("content", "") for d in deltas) == CONTENT
    assert events[-2]["usage"]["completion_tokens_details"] == {"reasoning_tokens": 3}


async def test_include_reasoning_false_drops_it(api):
    engine, client = api
    engine.gen.script(prompt(engine), cont(*PIECES))
    message = (await chat(client, include_reasoning=False)).json()["choices"][0]["message"]
    assert message == {"role": "assistant", "content": CONTENT, "reasoning": None, "reasoning_content": None}


async def test_chat_template_kwargs_reach_the_template(api):
    engine, client = api
    # the fake template renders extra variables as <k=v> after the generation prompt: the prompt is that text
    engine.gen.script(prompt(engine, "<enable_thinking=False>"), cont("The answer is 3."))
    body = (await chat(client, chat_template_kwargs={"enable_thinking": False})).json()
    assert engine.gen.decode(engine.gen.requested()[-1]) == "<user>1+2?<assistant><enable_thinking=False>"
    # qwen3 with thinking off: the whole text is content
    assert body["choices"][0]["message"]["content"] == "The answer is 3."
    assert body["choices"][0]["message"]["reasoning"] is None


@pytest.mark.parametrize("key", ["chat_template", "tokenize"])
async def test_chat_template_kwargs_may_not_replace_the_template(api, key):
    _, client = api
    r = await chat(client, chat_template_kwargs={key: "x"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "chat_template_kwargs"
    r = await chat(client, chat_template_kwargs="enable_thinking")
    assert r.status_code == 400 and r.json()["error"]["param"] == "chat_template_kwargs"


async def test_search_splits_the_chosen_path(api):
    engine, client = api
    other = ("<think>", "\n", "1+2=4", "\n", "</think>", "\n\n", "The answer is 4.")
    engine.gen.script(prompt(engine), cont(*PIECES), cont(*other), cont(*PIECES))
    body = (await chat(client, search="self_consistency", search_params={"n": 3})).json()
    message = body["choices"][0]["message"]
    assert message["content"] == CONTENT and message["reasoning"] == REASONING
    assert body["search"]["answer"] == "3"  # 2 of 3 votes
    assert body["usage"]["completion_tokens"] == 21  # every path's tokens, thinking included
    events = sse_events((await chat(client, stream=True, search="self_consistency",
                                    search_params={"n": 3})).text)
    deltas = [c["choices"][0]["delta"] for c in events[1:-1] if c["choices"]]
    assert "".join(d.get("reasoning", "") for d in deltas) == REASONING
    assert "".join(d.get("content", "") for d in deltas) == CONTENT


async def test_search_abstention_is_content(api):
    engine, client = api
    other = ("<think>", "\n", "1+2=4", "\n", "</think>", "\n\n", "The answer is 4.")
    engine.gen.script(prompt(engine), cont(*PIECES), cont(*other))
    body = (await chat(client, search="self_consistency", search_params={"n": 2, "min_confidence": 0.9})).json()
    assert body["choices"][0]["message"]["content"] == ABSTAIN_TEXT
    assert body["choices"][0]["message"]["reasoning"] is None


async def test_unknown_parser_stops_the_server():
    engine = FakeEngine(model_name=MODEL)
    engine.gen.token_id("<think>")
    app = create_app(ServerConfig(reasoning_parser="nope"), engine=engine)
    with pytest.raises(ValueError, match="unknown --reasoning-parser 'nope'"):
        async with app.router.lifespan_context(app):
            pass
