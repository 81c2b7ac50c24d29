"""The HTTP edge in process: ``create_app(config, engine=FakeEngine)`` driven through httpx's ASGI transport.

No server process and no model: every expected value below is computed by hand from the script.
The real-server tests (test_openai_*.py, test_search_vllm.py) check the same API on real engines.
"""

from __future__ import annotations

import json
import math

import httpx
import pytest

from cat_serve.api.app import create_app
from cat_serve.api.serving import ABSTAIN_TEXT
from cat_serve.config import ServerConfig
from cat_serve.search.types import LENGTH, STOP
from tests.fakes import FakeEngine, cont

MODEL = "fake-model"
USER = [{"role": "user", "content": "2+2?"}]


@pytest.fixture
async def api_app():
    """The app on a FakeEngine, its lifespan entered, and an httpx client on it (also used by test_structured_inprocess)."""
    engine = FakeEngine(model_name=MODEL, max_model_len=64)
    app = create_app(ServerConfig(default_max_tokens=16), engine=engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://cat") as client:
            yield app, engine, client


@pytest.fixture
async def api(api_app):
    _, engine, client = api_app
    yield engine, client


def user_prompt(engine: FakeEngine, content: str = "2+2?") -> tuple[int, ...]:
    return engine.chat_prompt(("user", content))


def sse_events(text: str) -> list:
    """The ``data:`` payloads of an SSE body, in order (JSON decoded, ``[DONE]`` kept as a string)."""
    out = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            payload = block[len("data: "):]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


async def chat(client, **body):
    return await client.post("/v1/chat/completions", json={"model": MODEL, "messages": USER, **body})


# ---------------------------------------------------------------------------------------------- plain
async def test_models_and_health(api):
    engine, client = api
    models = (await client.get("/v1/models")).json()
    assert [m["id"] for m in models["data"]] == [MODEL]
    assert models["data"][0]["max_model_len"] == 64
    health = (await client.get("/health")).json()
    assert health == {"status": "ok", "engine": "fake", "model": MODEL, "inflight_requests": 0}


async def test_plain_chat_text_usage_and_confidence(api):
    engine, client = api
    engine.gen.script(user_prompt(engine), cont("The", " answer", " is", " 4.", logprob=[-0.1, -0.2, -0.3, -0.4]))
    r = await chat(client, max_tokens=10)
    assert r.status_code == 200
    body = r.json()
    choice = body["choices"][0]
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    assert choice["message"] == {"role": "assistant", "content": "The answer is 4."}
    assert choice["finish_reason"] == "stop"  # EOS
    assert choice["confidence"] == pytest.approx(math.exp(-0.25))  # exp(mean(-0.1, -0.2, -0.3, -0.4))
    assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5}


async def test_plain_max_tokens_gives_length(api):
    engine, client = api
    engine.gen.script(user_prompt(engine), cont("a", "b", "c", "d"))
    choice = (await chat(client, max_tokens=2)).json()["choices"][0]
    assert choice["message"]["content"] == "ab" and choice["finish_reason"] == "length"


async def test_plain_stop_string_is_cut_from_the_text(api):
    engine, client = api
    engine.gen.script(user_prompt(engine), cont("x", " = 1", "END", " more"))
    choice = (await chat(client, stop=["END"])).json()["choices"][0]
    assert choice["message"]["content"] == "x = 1" and choice["finish_reason"] == "stop"
    assert engine.gen.calls[0].params.stop == ("END",)


async def test_completion_logprobs_and_n(api):
    engine, client = api
    prompt = tuple(engine.tokenizer.encode("Q"))
    engine.gen.script(prompt, cont("a", "b", logprob=[-1.0, -2.0]), cont("c", logprob=-0.5))
    r = await client.post("/v1/completions", json={"model": MODEL, "prompt": "Q", "n": 2, "logprobs": 0})
    body = r.json()
    assert body["object"] == "text_completion"
    first, second = body["choices"]
    assert first["text"] == "ab" and second["text"] == "c" and [first["index"], second["index"]] == [0, 1]
    assert first["logprobs"] == {"tokens": ["a", "b"], "token_logprobs": [-1.0, -2.0], "top_logprobs": [{}, {}],
                                 "text_offset": [0, 1]}
    assert first["confidence"] == pytest.approx(math.exp(-1.5))
    assert body["usage"]["completion_tokens"] == 3


async def test_chat_logprobs_with_top(api):
    engine, client = api
    engine.gen.script(user_prompt(engine), cont("4", logprob=-0.2, top=[-0.2, -2.0]))
    choice = (await chat(client, logprobs=True, top_logprobs=2)).json()["choices"][0]
    [entry] = choice["logprobs"]["content"]
    assert entry["token"] == "4" and entry["logprob"] == -0.2 and entry["bytes"] == [52]
    assert [(t["token"], t["logprob"]) for t in entry["top_logprobs"]] == [("4", -0.2), ("<100001>", -2.0)]


# ---------------------------------------------------------------------------------------------- streaming
async def test_stream_order_role_deltas_finish_usage_done(api):
    engine, client = api
    engine.gen.script(user_prompt(engine), cont("Hel", "lo", "!", logprob=-0.5))
    r = await chat(client, stream=True, stream_options={"include_usage": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"] is not None]
    assert len(finish) == 1 and finish[0]["choices"][0]["finish_reason"] == "stop"
    assert finish[0]["choices"][0]["confidence"] == pytest.approx(math.exp(-0.5))
    deltas = [c["choices"][0]["delta"].get("content", "") for c in chunks[1:] if c["choices"]]
    assert "".join(deltas) == "Hello!"
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 3
    assert chunks.index(finish[0]) == len(chunks) - 2  # finish, then usage, then [DONE]


async def test_stream_holds_back_a_partial_stop_string(api):
    engine, client = api
    engine.gen.script(user_prompt(engine), cont("Hello", " wor", "ld", "EN", "D", " tail"))
    events = sse_events((await chat(client, stream=True, stop=["END"])).text)
    deltas = [c["choices"][0]["delta"].get("content", "") for c in events[1:-1] if c["choices"]]
    assert "".join(deltas) == "Hello world"
    assert not any("E" in d for d in deltas)  # "EN" was held back and never sent
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


async def test_stream_n_two_prompts_every_index_finishes(api):
    engine, client = api
    p = tuple(engine.tokenizer.encode("Q"))
    engine.gen.script(p, cont("a"), cont("b", "c"))
    r = await client.post("/v1/completions", json={"model": MODEL, "prompt": "Q", "n": 2, "stream": True})
    events = sse_events(r.text)
    texts: dict[int, str] = {}
    finished = []
    for c in events[:-1]:
        for ch in c["choices"]:
            texts[ch["index"]] = texts.get(ch["index"], "") + ch["text"]
            if ch["finish_reason"] is not None:
                finished.append(ch["index"])
    assert texts == {0: "a", 1: "bc"} and sorted(finished) == [0, 1]


async def test_stream_engine_failure_becomes_an_error_event(api):
    engine, client = api
    engine.error = RuntimeError("boom")
    events = sse_events((await chat(client, stream=True)).text)
    assert events[-1] == "[DONE]"
    assert events[-2] == {"error": {"message": "internal error: RuntimeError: boom", "type": "server_error", "param": None,
                                    "code": None}}


# ---------------------------------------------------------------------------------------------- errors
CONTEXT = {"type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}


def error_of(r) -> dict:
    return r.json()["error"]


async def test_error_unknown_model(api):
    _, client = api
    r = await client.post("/v1/chat/completions", json={"model": "nope", "messages": USER})
    assert r.status_code == 404
    assert error_of(r) == {"message": "The model `nope` does not exist.", "type": "NotFoundError",
                           "param": "model", "code": "model_not_found"}


async def test_error_validation_and_bad_json(api):
    _, client = api
    r = await chat(client, n=0)
    assert r.status_code == 400 and error_of(r)["param"] == "n" and error_of(r)["type"] == "invalid_request_error"
    r = await client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert error_of(r) == {"message": "We could not parse the JSON body of your request.",
                           "type": "invalid_request_error", "param": None, "code": None}


async def test_error_chat_template_rejects(api):
    _, client = api
    r = await client.post("/v1/chat/completions", json={"model": MODEL, "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
    assert r.status_code == 400 and error_of(r)["param"] == "messages"
    assert error_of(r)["message"].startswith("chat template failed:")


async def test_error_empty_and_out_of_vocab_prompts(api):
    _, client = api
    r = await client.post("/v1/completions", json={"model": MODEL, "prompt": ""})
    assert r.status_code == 400 and error_of(r) == {"message": "prompt is empty", "type": "invalid_request_error",
                                                    "param": "prompt", "code": None}
    r = await client.post("/v1/completions", json={"model": MODEL, "prompt": [5, 99999]})
    assert r.status_code == 400 and error_of(r)["param"] == "prompt"


@pytest.mark.parametrize("search", ["none", "self_consistency"])
@pytest.mark.parametrize("stream", [False, True])
async def test_error_context_too_long_is_one_body_everywhere(api, search, stream):
    _, client = api
    r = await client.post("/v1/completions", json={"model": MODEL, "prompt": list(range(64)), "search": search,
                                                   "stream": stream})
    assert r.status_code == 400
    assert error_of(r) == {**CONTEXT, "message": "This model's maximum context length is 64 tokens, "
                                                 "but the prompt has 64 tokens."}


async def test_error_search_params(api):
    _, client = api
    r = await chat(client, search="cat", search_params={"branches": 0})
    assert r.status_code == 400 and error_of(r)["param"] == "search_params"
    assert error_of(r)["message"] == "search_params.branches must be >= 1, got 0"
    r = await chat(client, search="nope")
    assert r.status_code == 400 and error_of(r)["param"] == "search"
    r = await chat(client, search_params={"n": 2})
    assert r.status_code == 400 and error_of(r)["message"] == "search_params given but search is 'none'"


async def test_engine_failure_is_a_500_in_openai_shape(api):
    engine, client = api
    engine.error = RuntimeError("boom")
    r = await chat(client)
    assert r.status_code == 500
    assert error_of(r) == {"message": "internal error: RuntimeError: boom", "type": "server_error", "param": None, "code": None}


# ---------------------------------------------------------------------------------------------- search
def script_votes(engine, *conts):
    engine.gen.script(user_prompt(engine), *conts)


async def test_search_fields_and_vote_share(api):
    engine, client = api
    script_votes(engine, cont("so \\boxed{4}"), cont("so \\boxed{5}"), cont("thus \\boxed{4}"))
    body = (await chat(client, search="self_consistency", search_params={"n": 3, "return_candidates": True})).json()
    choice, search = body["choices"][0], body["search"]
    assert choice["message"]["content"] == "so \\boxed{4}" and choice["finish_reason"] == "stop"
    assert choice["confidence"] == pytest.approx(2 / 3)
    assert search["strategy"] == "self_consistency" and search["answer"] == "4" and search["abstained"] is False
    assert search["expanded"] == 3 and search["tokens_generated"] == 3 and search["engine_calls"] == 1
    assert [c["answer"] for c in search["candidates"]] == ["4", "5", "4"]
    assert search["params"]["n"] == 3 and search["wall_time_s"] >= 0
    # 4 has 2 of 3 votes, 2 answers in all, and its 2 paths differ ("so ..." and "thus ...")
    assert search["features"] == pytest.approx({"vote_share": 2 / 3, "distinct_answers": 2, "distinct_paths": 2})
    assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}


async def test_search_abstains_below_min_confidence(api):
    engine, client = api
    script_votes(engine, cont("\\boxed{4}"), cont("\\boxed{5}"))
    body = (await chat(client, search="self_consistency", search_params={"n": 2, "min_confidence": 0.9})).json()
    assert body["choices"][0]["message"]["content"] == ABSTAIN_TEXT
    assert body["choices"][0]["confidence"] == pytest.approx(0.5)
    assert body["search"]["abstained"] is True and body["search"]["answer"] == "4"


async def test_search_winner_cut_at_max_tokens_reports_length(api):
    """A self-consistency winner that hit max_tokens is finish_reason "length", not "stop"."""
    engine, client = api
    script_votes(engine, cont("\\boxed{4}", " and", finish=LENGTH))
    choice = (await chat(client, search="self_consistency", search_params={"n": 1})).json()["choices"][0]
    assert choice["message"]["content"] == "\\boxed{4} and"
    assert choice["finish_reason"] == "length"


async def test_search_stream_winner_cut_at_max_tokens_reports_length(api):
    engine, client = api
    script_votes(engine, cont("\\boxed{4}", " and", finish=LENGTH))
    events = sse_events((await chat(client, stream=True, search="self_consistency",
                                    search_params={"n": 1})).text)
    finish = [c for c in events[:-1] if c["choices"] and c["choices"][0]["finish_reason"] is not None]
    assert [c["choices"][0]["finish_reason"] for c in finish] == ["length"]


async def test_search_stream_events_then_text_then_finish(api):
    engine, client = api
    script_votes(engine, cont("\\boxed{4}"), cont("\\boxed{4}"))
    r = await chat(client, stream=True, search="self_consistency", search_params={"n": 2},
                   stream_options={"include_usage": True})
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["search_event"] == {"type": "samples", "n": 2, "answered": 2}
    assert chunks[1]["choices"][0]["delta"] == {"content": ""}
    assert chunks[2]["choices"][0]["delta"] == {"content": "\\boxed{4}"} and "search" not in chunks[2]
    final = chunks[3]
    assert final["choices"][0]["finish_reason"] == "stop" and final["choices"][0]["confidence"] == 1.0
    assert final["search"]["answer"] == "4" and final["search"]["abstained"] is False
    assert chunks[4]["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


async def test_search_finds_no_answer(api):
    engine, client = api
    script_votes(engine, cont("no idea"))
    body = (await chat(client, search="self_consistency", search_params={"n": 1})).json()
    # issue 23: no answer -> the path with the best path score, never empty content; its confidence
    # is that path's probability exp(mean logprob) = exp(-0.1) (one token, logprob -0.1)
    assert body["choices"][0]["message"]["content"] == "no idea"
    assert body["choices"][0]["confidence"] == pytest.approx(0.904837418) and body["search"]["answer"] is None
    assert body["search"]["selection"] == "no_answer:best_path_score"


async def test_search_reads_the_user_question_not_the_system_prompt(api):
    """``answer_format: auto`` takes its cues from the last user message: a system prompt that asks
    "how many" must not let the number fallback vote on prose. Hand-worked: the user asks for a capital,
    the path ends in "... 17 million people." (no number at its end, no marker), so there is no answer
    and the path is returned as the best path by score, selection ``no_answer:best_path_score``."""
    engine, client = api
    messages = [{"role": "system", "content": "Say how many people live there."},
                {"role": "user", "content": "What is the capital of France?"}]
    prompt = engine.chat_prompt(*((m["role"], m["content"]) for m in messages))
    engine.gen.script(prompt, cont("Paris has 17 million people."))
    body = (await client.post("/v1/chat/completions", json={
        "model": MODEL, "messages": messages, "search": "self_consistency", "search_params": {"n": 1}})).json()
    assert body["choices"][0]["message"]["content"] == "Paris has 17 million people."
    assert body["search"]["answer"] is None and body["search"]["selection"] == "no_answer:best_path_score"
    # the same path under a user question that asks for a number votes on 17
    messages[1]["content"] = "How many people live in Paris, in millions?"
    prompt = engine.chat_prompt(*((m["role"], m["content"]) for m in messages))
    engine.gen.script(prompt, cont("Paris has 17 million people."))
    body = (await client.post("/v1/chat/completions", json={
        "model": MODEL, "messages": messages, "search": "self_consistency", "search_params": {"n": 1}})).json()
    assert body["search"]["answer"] == "17" and body["search"]["selection"] == "vote"


@pytest.mark.parametrize("finish", [STOP])
async def test_cat_search_through_the_api(api, finish):
    engine, client = api
    first, = engine.gen.script(user_prompt(engine), cont("Step 1.", "\n\n", entropy=0.0, finish=finish))
    engine.gen.script(first, cont("\\boxed{7}", entropy=0.0))
    body = (await chat(client, search="cat", search_params={"branches": 1, "mode": "faithful"})).json()
    assert body["choices"][0]["message"]["content"] == "Step 1.\n\n\\boxed{7}"
    assert body["search"]["answer"] == "7" and body["search"]["steps"] == 2
    assert body["choices"][0]["confidence"] == 1.0  # every token certain: C = exp(-0) * exp(-0)


# ---------------------------------------------------------------------------------------------- disconnect
async def test_disconnect_cancels_the_work_at_once():
    """The handler races ``request.receive()``: the disconnect message cancels the work immediately."""
    import asyncio
    import time

    from cat_serve.api.protocol import APIError
    from cat_serve.api.aio import until_disconnect

    cancelled, gone = asyncio.Event(), asyncio.Event()

    async def work():
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    class Request:
        async def receive(self):
            await gone.wait()
            return {"type": "http.disconnect"}

    task = asyncio.create_task(until_disconnect(Request(), work()))
    await asyncio.sleep(0.01)
    t0 = time.perf_counter()
    gone.set()
    with pytest.raises(APIError) as err:
        await task
    assert err.value.status == 499 and cancelled.is_set()
    assert time.perf_counter() - t0 < 0.05  # no polling interval to wait out


# ---------------------------------------------------------------------------------------------- the record
def metric(app, name: str, **labels) -> float:
    return app.state.metrics.registry.get_sample_value(name, labels) or 0.0




@pytest.mark.parametrize("stream", [False, True])
async def test_metrics_and_log_read_the_record_serving_wrote(api_app, caplog, stream):
    """Serving writes strategy, stream, prompt tokens and the search statistics onto the request's
    record; the middleware reads no response body. Expected values by hand from the script: 3 paths
    of one token each, answers 4, 5, 4 (expanded 3, pruned 0), the 1-token prompt."""
    app, engine, client = api_app
    script_votes(engine, cont("\\boxed{4}"), cont("\\boxed{5}"), cont("\\boxed{4}"))
    with caplog.at_level("INFO", logger="cat_serve.requests"):
        r = await chat(client, stream=stream, search="self_consistency",
                       search_params={"n": 3, "min_confidence": 0.9})
    assert r.status_code == 200
    line = json.loads([rec.message for rec in caplog.records if rec.name == "cat_serve.requests"][-1])
    assert line["request_id"] == r.headers["x-request-id"]
    assert (line["strategy"], line["stream"], line["prompt_tokens"], line["completion_tokens"]) == \
        ("self_consistency", stream, 1, 3)
    assert (line["expanded"], line["pruned"], line["abstained"]) == (3, 0, True)  # 2/3 < 0.9
    s = {"strategy": "self_consistency"}
    assert metric(app, "cat_serve_requests_total", endpoint="chat", status="200", **s) == 1
    assert metric(app, "cat_serve_search_branches_expanded_total", **s) == 3
    assert metric(app, "cat_serve_abstentions_total", **s) == 1
    assert metric(app, "cat_serve_tokens_generated_total", **s) == 3


async def test_refusals_are_labelled_with_the_strategy_asked_for(api_app, caplog):
    app, _, client = api_app
    with caplog.at_level("INFO", logger="cat_serve.requests"):
        assert (await chat(client, search="cat", search_params={"branches": 0})).status_code == 400
        assert (await chat(client, search="nope")).status_code == 400
        assert (await chat(client, n=0)).status_code == 400  # refused before the body parsed
    lines = [json.loads(rec.message) for rec in caplog.records if rec.name == "cat_serve.requests"]
    assert [(x["strategy"], x["status"], x["error"]) for x in lines] == [
        ("cat", 400, "invalid_request_error"), ("invalid", 400, "invalid_request_error"),
        ("-", 400, "invalid_request_error")]
    assert metric(app, "cat_serve_requests_total", endpoint="chat", strategy="cat", status="400") == 1
    assert metric(app, "cat_serve_requests_total", endpoint="chat", strategy="invalid", status="400") == 1


async def test_a_stream_error_is_recorded(api_app, caplog):
    app, engine, client = api_app
    engine.error = RuntimeError("boom")
    with caplog.at_level("INFO", logger="cat_serve.requests"):
        events = sse_events((await chat(client, stream=True)).text)
    assert events[-2]["error"]["type"] == "server_error"
    line = json.loads([rec.message for rec in caplog.records if rec.name == "cat_serve.requests"][-1])
    assert line["status"] == 200 and line["error"] == "server_error" and line["stream"] is True


def test_every_exception_maps_in_one_place():
    from fastapi.exceptions import RequestValidationError

    from cat_serve.api.errors import to_api_error
    from cat_serve.api.protocol import APIError
    from cat_serve.engine.base import PromptTooLongError
    from cat_serve.search.limits import Limits, check_plain, check_search
    from cat_serve.search.params import SearchParamsError
    from cat_serve.search.registry import parse_params

    own = APIError(404, "x")
    assert to_api_error(own) is own
    e = to_api_error(PromptTooLongError("too long"))
    assert (e.status, e.param, e.code) == (400, "messages", "context_length_exceeded")
    assert to_api_error(SearchParamsError("bad", "branches")).param == "search_params"
    assert to_api_error(SearchParamsError("unknown strategy", "search")).param == "search"
    with pytest.raises(SearchParamsError) as over:
        check_search(parse_params("self_consistency", {"n": 5}), Limits(max_n=4))
    e = to_api_error(over.value)
    assert (e.status, e.param, e.code) == (400, "search_params.n", "max_n_exceeded")
    with pytest.raises(SearchParamsError) as over:
        check_plain(5, 1, 1, Limits(max_n=4))
    assert to_api_error(over.value).param == "n"
    with pytest.raises(SearchParamsError) as over:
        check_search(parse_params("self_consistency", {"n": 2, "max_tokens": 10}), Limits(max_tokens_paths=10))
    assert to_api_error(over.value).param == "max_tokens"
    e = to_api_error(RequestValidationError([{"type": "json_invalid", "loc": ("body", 0), "msg": "x"}]))
    assert (e.status, e.message) == (400, "We could not parse the JSON body of your request.")
    e = to_api_error(KeyError("k"))
    assert (e.status, e.type, e.message) == (500, "server_error", "internal error: KeyError: 'k'")
