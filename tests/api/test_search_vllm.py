"""Every `search` strategy through the official openai SDK against the real vLLM-backed server."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from cat_serve.api.serving import ABSTAIN_TEXT
from cat_serve.search.registry import available
from cat_serve.search.types import SELECT_NO_ANSWER, SELECT_NO_TEXT, SELECTIONS

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

Q = [{"role": "user", "content": "Tom has 3 apples and buys 4 more. How many apples does he have? "
                                 "End with: The answer is <number>."}]
SMALL = {
    "cat": {"branches": 2, "max_steps": 3, "max_step_tokens": 24, "max_tokens": 72},
    "self_consistency": {"n": 2, "max_tokens": 48},
    "ppl_consistency": {"n": 2, "max_tokens": 48},
    "rpc": {"n": 4, "max_tokens": 32},
    "deepconf": {"n": 4, "max_tokens": 32, "window": 8},
}
SEARCH_KEYS = {"strategy", "params", "steps", "expanded", "pruned", "tokens_generated", "engine_calls",
               "wall_time_s", "abstained", "answer"}


@pytest.fixture
def server(vllm_server):
    """The server under test; tests/gpu/test_search_cuda.py runs these same tests on the transformers
    engine on CUDA by overriding this fixture."""
    return vllm_server


def test_every_strategy_is_tested():
    assert sorted(SMALL) == sorted(available())


CASES = [(name, params) for name, params in sorted(SMALL.items())] + [
    ("cat", {**SMALL["cat"], "mode": "stream", "confident_threshold": 0.3}),
    ("cat", {**SMALL["cat"], "mode": "faithful"}),
]


@pytest.mark.parametrize("strategy,search_params", CASES)
def test_search_response_contract(server, strategy, search_params):
    r = server.client().chat.completions.create(
        model=server.model, messages=Q,
        extra_body={"search": strategy, "search_params": {**search_params, "seed": 1}})
    choice = r.choices[0]
    search = r.model_extra["search"]
    assert SEARCH_KEYS <= set(search)
    assert search["strategy"] == strategy and search["params"]["seed"] == 1
    assert all(search["params"][k] == v for k, v in search_params.items() if k != "step_delimiters")
    assert 0.0 <= choice.model_extra["confidence"] <= 1.0
    assert search["tokens_generated"] > 0 and search["engine_calls"] >= 1 and search["expanded"] >= 1
    # usage counts every token the search generated, not only the chosen path's
    assert r.usage.completion_tokens == search["tokens_generated"]
    assert isinstance(choice.message.content, str)
    if search["abstained"]:
        assert choice.message.content == ABSTAIN_TEXT
    else:
        assert search["answer"] is not None and choice.message.content


def test_completions_endpoint_search_with_candidates(server):
    r = server.client().completions.create(
        model=server.model, prompt="Q: What is 2 plus 2?\nA: The answer is", max_tokens=16,
        extra_body={"search": "self_consistency", "search_params": {"n": 3, "return_candidates": True}})
    search = r.model_extra["search"]
    assert len(search["candidates"]) == 3
    assert all({"text", "answer", "score"} <= set(c) for c in search["candidates"])
    assert search["params"]["max_tokens"] == 16  # the request's max_tokens is the search default


def test_min_confidence_abstains(server):
    r = server.client().chat.completions.create(
        model=server.model, messages=Q, max_tokens=40,
        extra_body={"search": "self_consistency", "search_params": {"n": 2, "min_confidence": 1.0,
                                                                    "temperature": 1.2, "seed": 3}})
    search = r.model_extra["search"]
    if search["answer"] is not None and r.choices[0].model_extra["confidence"] < 1.0:
        assert search["abstained"] and r.choices[0].message.content == ABSTAIN_TEXT


@pytest.mark.parametrize("params", [
    {"tau": 2.0}, {"branches": 0}, {"no_such_param": 1}, {"aggregation": "max"},
    {"mode": "greedy"}, {"step_delimiters": [""]}, {"max_steps": "ten"}, {"min_confidence": -0.1},
])
def test_bad_search_params_are_400(server, params):
    r = httpx.post(f"{server.base_url}/chat/completions", timeout=30,
                   json={"model": server.model, "messages": Q, "search": "cat", "search_params": params})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] in ("search_params", "search")


def test_streaming_search_is_parseable_by_sdk(server):
    chunks = list(server.client().chat.completions.create(
        model=server.model, messages=Q, stream=True, stream_options={"include_usage": True},
        extra_body={"search": "cat", "search_params": SMALL["cat"]}))
    events = [c.model_extra["search_event"] for c in chunks if c.model_extra.get("search_event")]
    assert events and all("type" in e for e in events)
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(final) == 1 and "search" in final[0].model_extra
    assert 0.0 <= final[0].choices[0].model_extra["confidence"] <= 1.0
    usage = chunks[-1].usage
    assert usage.completion_tokens == final[0].model_extra["search"]["tokens_generated"]


def _wait_inflight(server, predicate, timeout: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate(server.health()["inflight_requests"]):
            return time.monotonic() - start
        time.sleep(0.02)
    return None


STORY = [{"role": "user", "content": "Write a very long story about a dragon, in many paragraphs."}]
LONG_CAT = {"search": "cat", "search_params": {"branches": 4, "max_steps": 64, "max_step_tokens": 256,
                                               "tau": 0.0, "mode": "faithful", "temperature": 1.0,
                                               "step_delimiters": ["\n\n\n\n"], "max_tokens": 4096}}


def test_disconnect_during_streaming_cat_aborts_within_1s(server):
    body = {"model": server.model, "messages": STORY, "stream": True, **LONG_CAT}
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        lines = r.iter_lines()  # keep a reference: a collected iterator closes the response
        next(lines)  # the role chunk: the search is running
        assert _wait_inflight(server, lambda n: n >= 4, 30) is not None  # 4 candidates in flight
    # leaving the block closed the connection
    elapsed = _wait_inflight(server, lambda n: n == 0, 5)
    assert elapsed is not None and elapsed <= 1.0, elapsed


def test_disconnect_during_blocking_cat_aborts_within_1s(server):
    body = {"model": server.model, "messages": STORY, **LONG_CAT}
    errors = []

    def post():
        try:
            httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=3)
        except httpx.TimeoutException as e:  # the client gives up and closes the connection
            errors.append(e)

    t = threading.Thread(target=post)
    t.start()
    assert _wait_inflight(server, lambda n: n >= 4, 30) is not None
    t.join()
    assert errors, "the search finished before the client disconnected"
    elapsed = _wait_inflight(server, lambda n: n == 0, 5)
    assert elapsed is not None and elapsed <= 1.0, elapsed


# ---------------------------------------------------------------------- what users send besides arithmetic (issue L)
POEM = [{"role": "user", "content": "Write a two-line poem about the sea."}]
CHOICE = [{"role": "user", "content": "Which of these is a vegetable?\nA) apple\nB) carrot\nC) banana\nD) cherry\n"
                                      "Answer with the letter of the correct option."}]


@pytest.mark.parametrize("strategy", sorted(SMALL))
def test_open_ended_prompt_returns_text_and_says_how_it_was_chosen(server, strategy):
    """No path of a poem holds an answer: the best-scoring path comes back (never empty content), with
    ``search.answer`` null and ``search.selection`` saying so; nothing abstains unless min_confidence asks."""
    r = server.client().chat.completions.create(
        model=server.model, messages=POEM, extra_body={"search": strategy, "search_params": {**SMALL[strategy], "seed": 1}})
    search, content = r.model_extra["search"], r.choices[0].message.content
    assert search["selection"] in SELECTIONS and search["selection"] != SELECT_NO_TEXT
    assert content and content.strip() and not search["abstained"]
    if search["answer"] is None:
        assert search["selection"] == SELECT_NO_ANSWER
    assert 0.0 <= r.choices[0].model_extra["confidence"] <= 1.0


@pytest.mark.parametrize("strategy", ["self_consistency", "cat"])
def test_multiple_choice_votes_on_letters(server, strategy):
    """Every path's answer is an option letter (or none), never the rest of a line; the voted answer too."""
    params = {**SMALL[strategy], "seed": 1, "return_candidates": True}
    if strategy == "self_consistency":
        params["n"] = 4
    r = server.client().chat.completions.create(
        model=server.model, messages=CHOICE, extra_body={"search": strategy, "search_params": params})
    search = r.model_extra["search"]
    answers = [c["answer"] for c in search["candidates"]]
    assert any(a is not None for a in answers), search["candidates"]
    assert {a for a in answers if a is not None} <= set("ABCD"), answers
    assert search["answer"] is None or search["answer"] in set("ABCD")
