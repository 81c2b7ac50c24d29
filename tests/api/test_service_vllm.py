"""The service layer through the official `openai` SDK against a real vLLM server on the embedded model.

One server with an API key and small limits (1 running + 1 queued request, tiny caps); the SIGTERM
test stops it, so it runs last in this file.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MODEL_NAME, REPO, start_server, stop_server

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
LIMIT_ARGS = ("--kv-cache-gib", "1", "--api-key", KEY, "--metrics-auth", "--max-n", "4", "--max-branches", "3",
              "--max-steps", "5", "--max-tokens-paths", "400", "--max-concurrent", "1", "--max-queue", "1",
              "--max-body-bytes", "20000", "--retry-after", "7", "--deadline", "120", "--max-deadline", "300",
              "--shutdown-grace", "4")
LONG_PROMPT = "Once upon a time, in a land far away, there lived"


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    server = start_server("vllm", tmp_path_factory.mktemp("svc"), *LIMIT_ARGS, timeout=1500)
    yield server
    stop_server(server)  # after the SIGTERM test too: whatever is left of its process group


def client(server, key=KEY, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=kw.pop("timeout", 300), **kw)


def metrics(server) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{server.root}/metrics", headers=AUTH, timeout=10).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def delta(before, after, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def chat(c, content="What is 2+3?", **kw):
    return c.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": content}], **kw)


def wait_inflight_zero(server, within: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        if server.health()["inflight_requests"] == 0:
            return time.monotonic() - t0
        time.sleep(0.05)
    pytest.fail(f"engine in-flight requests not back to 0 within {within}s: {server.health()}")


# ---------------------------------------------------------------------- auth
def test_missing_or_wrong_key_is_401_health_open(svc):
    for key in ("none", KEY + "x", ""):
        with pytest.raises(openai.AuthenticationError) as e:
            client(svc, key=key or "x").models.list()
        assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
    r = httpx.post(f"{svc.base_url}/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{svc.root}/health").status_code == 200  # open
    assert httpx.get(f"{svc.root}/metrics").status_code == 401  # --metrics-auth
    assert httpx.get(f"{svc.root}/metrics", headers=AUTH).status_code == 200
    assert [m.id for m in client(svc).models.list().data] == [MODEL_NAME]


# ---------------------------------------------------------------------- 400s naming the limit
@pytest.mark.parametrize("kw,limit,param", [
    ({"n": 5, "max_tokens": 4}, "max_n", "n"),
    ({"n": 2, "max_tokens": 201}, "max_tokens_paths", "max_tokens"),
    ({"max_tokens": 8, "extra_body": {"search": "cat", "search_params": {"branches": 4, "max_steps": 2}}},
     "max_branches", "search_params.branches"),
    ({"max_tokens": 8, "extra_body": {"search": "cat", "search_params": {"branches": 2, "max_steps": 6}}},
     "max_steps", "search_params.max_steps"),
    ({"max_tokens": 101, "extra_body": {"search": "self_consistency", "search_params": {"n": 4}}},
     "max_tokens_paths", "max_tokens"),
    ({"max_tokens": 8, "extra_body": {"search": "self_consistency", "search_params": {"n": 5}}},
     "max_n", "search_params.n"),
])
def test_caps_answer_400_naming_the_limit(svc, kw, limit, param):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client(svc), **kw)
    err = e.value.body
    assert err["code"] == f"{limit}_exceeded" and err["param"] == param and f"{limit}=" in err["message"]


def test_body_too_large_is_400_naming_the_limit(svc):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client(svc), content="x" * 25_000, max_tokens=4)
    assert e.value.body["code"] == "max_body_bytes_exceeded" and "max_body_bytes=20000" in e.value.body["message"]
    # a chunked body (no Content-Length) is measured as it is read
    r = httpx.post(f"{svc.base_url}/chat/completions", headers=AUTH,
                   content=iter([b'{"messages": [{"role": "user", "content": "', b"y" * 25_000, b'"}]}']))
    assert r.status_code == 400 and r.json()["error"]["code"] == "max_body_bytes_exceeded"


# ---------------------------------------------------------------------- queue full -> 429
def test_queue_full_is_429_with_retry_after(svc):
    c = client(svc)
    results = {}

    def long(name, **kw):
        try:
            results[name] = c.completions.create(model=MODEL_NAME, prompt=LONG_PROMPT, max_tokens=200,
                                                 temperature=1.0, seed=1, **kw)
        except Exception as e:  # noqa: BLE001
            results[name] = e

    threads = [threading.Thread(target=long, args=("a",))]
    threads[0].start()
    _wait_gauge(svc, "cat_serve_requests_running", 1)
    threads.append(threading.Thread(target=long, args=("b",)))
    threads[1].start()
    _wait_gauge(svc, "cat_serve_requests_queued", 1)
    with pytest.raises(openai.RateLimitError) as e:
        chat(c, max_tokens=4)
    assert e.value.status_code == 429 and e.value.response.headers["retry-after"] == "7"
    assert "max_concurrent=1" in e.value.body["message"] and "max_queue=1" in e.value.body["message"]
    for t in threads:
        t.join(300)
    assert all(not isinstance(r, Exception) for r in results.values()), results  # queued one ran after
    wait_inflight_zero(svc, 5)


def _wait_gauge(server, name, value, within=60):
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        if metrics(server).get((name, ()), 0) >= value:
            return
        time.sleep(0.02)
    pytest.fail(f"{name} never reached {value}")


# ---------------------------------------------------------------------- deadlines
def test_deadline_expiry_is_408_and_aborts_the_search(svc):
    c = client(svc)
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e:
        chat(c, content="Count from 1 to 500.", max_tokens=100,
             extra_body={"search": "self_consistency", "search_params": {"n": 4, "temperature": 1.0},
                         "deadline_s": 0.5})
    assert e.value.status_code == 408 and e.value.body["code"] == "deadline_exceeded"
    assert e.value.response.headers["x-should-retry"] == "false"
    assert time.monotonic() - t0 < 10
    wait_inflight_zero(svc, 2)


def test_deadline_in_a_stream_ends_with_an_error_event_and_done(svc):
    with httpx.stream("POST", f"{svc.base_url}/chat/completions", headers=AUTH, timeout=60, json={
            "model": MODEL_NAME, "messages": [{"role": "user", "content": "Count from 1 to 500."}],
            "stream": True, "max_tokens": 100, "deadline_s": 1.0,
            "search": "self_consistency", "search_params": {"n": 4, "temperature": 1.0}}) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "deadline_exceeded"
    wait_inflight_zero(svc, 2)


def test_request_deadline_is_capped_by_the_server(svc):
    # deadline_s 10_000 > --max-deadline 300 is accepted (and capped), not refused
    r = chat(client(svc), max_tokens=2, extra_body={"deadline_s": 10_000})
    assert r.choices[0].message.content is not None
    with pytest.raises(openai.BadRequestError):
        chat(client(svc), max_tokens=2, extra_body={"deadline_s": -1})


# ---------------------------------------------------------------------- request ids, metrics
def test_request_id_round_trip(svc):
    raw = client(svc).chat.completions.with_raw_response.create(
        model=MODEL_NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=2,
        extra_headers={"X-Request-Id": "req-abc-123"})
    assert raw.headers["x-request-id"] == "req-abc-123"
    raw = client(svc).chat.completions.with_raw_response.create(
        model=MODEL_NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert len(raw.headers["x-request-id"]) == 32  # made here (uuid4 hex)
    bad = httpx.get(f"{svc.root}/health", headers={"X-Request-Id": "x" * 300})
    assert bad.headers["x-request-id"] != "x" * 300  # too long: replaced
    log = svc.log.read_text()
    line = next(json.loads(x) for x in log.splitlines() if '"request_id": "req-abc-123"' in x)
    assert line["status"] == 200 and line["strategy"] == "none" and line["completion_tokens"] >= 1
    assert set(line) >= {"latency_s", "expanded", "pruned", "abstained", "prompt_tokens", "queued_s"}


def test_metrics_count_a_known_sequence_exactly(svc):
    c = client(svc)
    before = metrics(svc)
    plain = [chat(c, max_tokens=5, temperature=0), chat(c, max_tokens=3, temperature=0)]
    sc = chat(c, max_tokens=12, extra_body={"search": "self_consistency", "search_params": {"n": 2, "seed": 1}})
    cat = chat(c, max_tokens=24, extra_body={"search": "cat", "search_params": {
        "branches": 2, "max_steps": 2, "max_step_tokens": 8, "seed": 3}})
    with pytest.raises(openai.BadRequestError):
        chat(c, n=5, max_tokens=1)
    with pytest.raises(openai.AuthenticationError):
        chat(client(svc, key="wrong"), max_tokens=1)
    after = metrics(svc)
    d = lambda name, **lb: delta(before, after, name, **lb)  # noqa: E731
    assert d("cat_serve_requests_total", endpoint="chat", strategy="none", status="200") == 2
    assert d("cat_serve_requests_total", endpoint="chat", strategy="self_consistency", status="200") == 1
    assert d("cat_serve_requests_total", endpoint="chat", strategy="cat", status="200") == 1
    assert d("cat_serve_requests_total", endpoint="chat", strategy="none", status="400") == 1
    assert d("cat_serve_requests_total", endpoint="chat", strategy="-", status="401") == 1
    assert d("cat_serve_request_latency_seconds_count", strategy="none") == 3
    assert d("cat_serve_tokens_generated_total", strategy="none") == sum(r.usage.completion_tokens for r in plain)
    assert d("cat_serve_tokens_generated_total", strategy="self_consistency") == sc.search["tokens_generated"]
    assert d("cat_serve_tokens_generated_total", strategy="cat") == cat.search["tokens_generated"]
    assert d("cat_serve_search_branches_expanded_total", strategy="cat") == cat.search["expanded"]
    assert d("cat_serve_search_branches_pruned_total", strategy="cat") == cat.search["pruned"]
    assert d("cat_serve_abstentions_total", strategy="cat") == int(cat.search["abstained"])
    assert after[("cat_serve_engine_inflight_requests", ())] == 0
    assert 0.0 <= after[("cat_serve_prefix_cache_hit_ratio", ())] <= 1.0
    assert after[("cat_serve_prefix_cache_prompt_tokens", ())] > before[("cat_serve_prefix_cache_prompt_tokens", ())]


# ---------------------------------------------------------------------- the CLI
def test_cli_models_health_and_streamed_ask(svc):
    base = [sys.executable, "-m", "clients.cli"]
    env_args = ["--base-url", svc.base_url, "--api-key", KEY]
    out = subprocess.run([*base, "models", *env_args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.split("\t")[0] == MODEL_NAME
    out = subprocess.run([*base, "health", *env_args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout)["inflight_requests"] == 0
    out = subprocess.run([*base, "ask", "What is 2+3?", "--stream", "--search", "cat", *env_args,
                          "-p", "branches=2", "-p", "max_steps=2", "-p", "max_step_tokens=8", "-p", "max_tokens=24"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "[depth] " in out.stderr  # CaT's progress events, on stderr as they arrive
    assert "strategy=cat" in out.stdout.splitlines()[-1]
    out = subprocess.run([*base, "models", "--base-url", svc.base_url, "--api-key", "bad"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "401" in out.stderr


# ---------------------------------------------------------------------- stateless replicas
def test_two_app_instances_give_the_same_response_shape(tmp_path):
    # two replicas (the transformers engine: they start in seconds), one request each, same answer
    dirs = [tmp_path / "a", tmp_path / "b"]
    for d in dirs:
        d.mkdir()
    servers = [start_server("transformers", d, "--api-key", KEY) for d in dirs]
    try:
        req = dict(max_tokens=6, temperature=0, extra_body={"search": "self_consistency",
                                                            "search_params": {"n": 2, "seed": 5, "max_tokens": 6}})
        a, b = (chat(client(s), **req).model_dump() for s in servers)
    finally:
        for s in servers:
            stop_server(s)

    def shape(x):
        if isinstance(x, dict):
            return {k: shape(v) for k, v in x.items() if k not in ("params",)}
        if isinstance(x, list):
            return [shape(v) for v in x[:1]]
        return type(x).__name__

    assert shape(a) == shape(b)
    assert a["choices"][0]["message"] == b["choices"][0]["message"]  # seeded: the same answer, too


# ---------------------------------------------------------------------- SIGTERM (last: stops the server)
def test_sigterm_drains_then_exits_0(svc):
    c = client(svc)
    result = {}

    def running():
        try:
            result["r"] = c.completions.create(model=MODEL_NAME, prompt=LONG_PROMPT, max_tokens=12, temperature=0)
        except Exception as e:  # noqa: BLE001
            result["r"] = e

    t = threading.Thread(target=running)
    t.start()
    _wait_gauge(svc, "cat_serve_requests_running", 1)
    svc.proc.send_signal(signal.SIGTERM)
    t.join(60)
    assert not t.is_alive(), "client left hanging"
    assert not isinstance(result["r"], Exception), result["r"]  # finished within the grace period
    assert result["r"].usage.completion_tokens >= 1
    assert svc.proc.wait(60) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{svc.root}/health", timeout=2)
