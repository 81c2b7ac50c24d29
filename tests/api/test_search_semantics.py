"""What the OpenAI request fields mean when a search is on (L item 5), streaming and not.

max_tokens, temperature, top_p and seed are per path (search_params win over them); usage counts
every path; n, stop and logprobs are 400s naming the field. Expected values are written by hand
from the FakeGenerator scripts (one token per piece; the rendered prompt is one token).
"""

from __future__ import annotations

import json

import httpx
import pytest

from cat_serve.api.app import create_app
from cat_serve.config import ServerConfig
from cat_serve.engine.output import sample_seed
from tests.fakes import FakeEngine, cont

MODEL = "fake-model"
USER = [{"role": "user", "content": "2+2?"}]
SERVER_DEFAULT_MAX_TOKENS = 16


@pytest.fixture
async def api():
    engine = FakeEngine(model_name=MODEL, max_model_len=64)
    app = create_app(ServerConfig(default_max_tokens=SERVER_DEFAULT_MAX_TOKENS), engine=engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://cat") as client:
            yield engine, client


def prompt(engine):
    return engine.chat_prompt(("user", "2+2?"))


async def chat(client, **body):
    return await client.post("/v1/chat/completions", json={"model": MODEL, "messages": USER, **body})


def sse_events(text: str) -> list:
    return [b[6:] if b[6:] == "[DONE]" else json.loads(b[6:]) for b in text.split("\n\n") if b.startswith("data: ")]


def streamed(events: list) -> dict:
    """The non-streamed response's fields, rebuilt from a search stream's chunks."""
    chunks = events[:-1]
    final = next(c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"] is not None)
    return {"content": "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]),
            "finish_reason": final["choices"][0]["finish_reason"], "confidence": final["choices"][0]["confidence"],
            "answer": final["search"]["answer"], "usage": chunks[-1]["usage"]}


@pytest.mark.parametrize("stream", [False, True])
async def test_max_tokens_is_per_path_and_usage_counts_every_path(api, stream):
    engine, client = api
    # 3 paths of 3 tokens, each cut at max_tokens=2: "\\boxed{4} x", "\\boxed{4} y", "\\boxed{5} z"
    engine.gen.script(prompt(engine), cont("\\boxed{4}", " x", " a"), cont("\\boxed{4}", " y", " b"),
                      cont("\\boxed{5}", " z", " c"))
    body = dict(max_tokens=2, search="self_consistency", search_params={"n": 3}, stream=stream)
    r = await chat(client, **body, **({"stream_options": {"include_usage": True}} if stream else {}))
    [call] = engine.gen.calls
    assert (call.n, call.params.max_tokens) == (3, 2)  # one engine call of 3 paths, 2 tokens each
    got = streamed(sse_events(r.text)) if stream else {
        "content": r.json()["choices"][0]["message"]["content"], "usage": r.json()["usage"],
        "finish_reason": r.json()["choices"][0]["finish_reason"]}
    assert got["usage"] == {"prompt_tokens": 1, "completion_tokens": 6, "total_tokens": 7}  # 3 paths x 2
    assert got["content"] == "\\boxed{4} x" and got["finish_reason"] == "length"  # the winner was cut


async def test_without_max_tokens_each_path_gets_the_servers_default(api):
    engine, client = api
    engine.gen.script(prompt(engine), cont("\\boxed{4}"))
    await chat(client, search="self_consistency", search_params={"n": 1})
    assert engine.gen.calls[-1].params.max_tokens == SERVER_DEFAULT_MAX_TOKENS  # --default-max-tokens
    await chat(client, max_tokens=7, search="self_consistency", search_params={"n": 1})
    assert engine.gen.calls[-1].params.max_tokens == 7
    await chat(client, max_completion_tokens=6, search="self_consistency", search_params={"n": 1})
    assert engine.gen.calls[-1].params.max_tokens == 6
    await chat(client, max_tokens=7, search="self_consistency", search_params={"n": 1, "max_tokens": 5})
    assert engine.gen.calls[-1].params.max_tokens == 5  # search_params win


async def test_sampling_fields_are_per_path_and_search_params_win(api):
    engine, client = api
    engine.gen.script(prompt(engine), cont("\\boxed{4}"))
    await chat(client, temperature=0.3, top_p=0.9, seed=7, search="self_consistency", search_params={"n": 2})
    p = engine.gen.calls[-1].params
    assert (p.temperature, p.top_p, p.seed) == (0.3, 0.9, 7)
    assert [sample_seed(p.seed, j) for j in range(2)] == [7, 8]  # path j is sampled with seed + j
    await chat(client, temperature=0.3, search="self_consistency", search_params={"n": 1, "temperature": 1.1})
    assert engine.gen.calls[-1].params.temperature == 1.1
    await chat(client, search="self_consistency", search_params={"n": 1})
    p = engine.gen.calls[-1].params
    assert (p.temperature, p.top_p, p.seed) == (0.7, 1.0, None)  # the search default, not OpenAI's 1.0


async def test_streaming_and_not_give_the_same_answer(api):
    engine, client = api
    # two paths per request; the script cycles, so both requests see the same two paths
    engine.gen.script(prompt(engine), cont("so \\boxed{4}", logprob=-0.2), cont("thus \\boxed{4}", logprob=-0.4))
    body = dict(max_tokens=8, seed=3, search="ppl_consistency", search_params={"n": 2})
    plain = (await chat(client, **body)).json()
    events = sse_events((await chat(client, **body, stream=True, stream_options={"include_usage": True})).text)
    c = plain["choices"][0]
    assert streamed(events) == {"content": c["message"]["content"], "finish_reason": c["finish_reason"],
                                "confidence": c["confidence"], "answer": plain["search"]["answer"],
                                "usage": plain["usage"]}
    assert plain["search"]["answer"] == "4" and plain["usage"]["completion_tokens"] == 2  # 2 paths x 1 token


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("endpoint,body,param,message", [
    ("chat", {"n": 2}, None, "n must be 1 when search is used; size the search with search_params"),
    ("chat", {"stop": ["\n"]}, "stop", "stop is not supported with search 'self_consistency'"),
    ("chat", {"stop": "END"}, "stop", "stop is not supported with search 'self_consistency'"),
    ("chat", {"logprobs": True}, "logprobs", "logprobs is not supported with search 'self_consistency'"),
    ("chat", {"logprobs": True, "top_logprobs": 2}, "logprobs", "logprobs is not supported with search"),
    ("completions", {"logprobs": 0}, "logprobs", "logprobs is not supported with search 'self_consistency'"),
])
async def test_fields_without_meaning_under_search_are_400s(api, stream, endpoint, body, param, message):
    engine, client = api
    base = {"model": MODEL, "search": "self_consistency", "stream": stream}
    if endpoint == "chat":
        r = await client.post("/v1/chat/completions", json={**base, "messages": USER, **body})
    else:
        r = await client.post("/v1/completions", json={**base, "prompt": "Q", **body})
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["message"].startswith(message) and err["param"] == param
    assert engine.gen.calls == []


async def test_the_same_fields_are_fine_without_search(api):
    engine, client = api
    engine.gen.script(prompt(engine), cont("4", "END", " more", logprob=-0.5))
    body = (await chat(client, stop=["END"], logprobs=True, n=1)).json()
    assert body["choices"][0]["message"]["content"] == "4" and body["choices"][0]["logprobs"]["content"]
    assert body["choices"][0]["finish_reason"] == "stop" and engine.gen.calls[0].params.stop == ("END",)
