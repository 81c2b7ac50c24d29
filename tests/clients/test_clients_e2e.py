"""The client wrapper and CLI against a real cat-serve (vLLM) server. Generation is kept tiny."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clients import Answer, CatClient

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

REPO = Path(__file__).resolve().parents[2]
QUESTION = "What is 2 + 3? Reply with just the number."


@pytest.fixture(scope="module")
def client(vllm_server) -> CatClient:
    return CatClient(vllm_server.base_url)  # model=None: resolved from /v1/models


def _cli(vllm_server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clients.cli", "ask", *args, "--base-url", vllm_server.base_url],
                          cwd=REPO, capture_output=True, text=True, timeout=600)


def test_model_resolves_from_server(client, vllm_server):
    assert client.model == vllm_server.model


def test_ask_without_search(client):
    a = client.ask(QUESTION, search="none", max_tokens=16, temperature=0.0)
    assert isinstance(a, Answer) and a.text
    assert a.confidence is not None and 0.0 <= a.confidence <= 1.0
    assert a.search == {} and a.abstained is False
    assert 0 < a.usage["completion_tokens"] <= 16


def test_ask_self_consistency(client):
    a = client.ask(QUESTION, search="self_consistency", n=2, max_tokens=32, seed=0)
    assert a.confidence is not None and 0.0 <= a.confidence <= 1.0
    s = a.search
    assert s["strategy"] == "self_consistency" and s["params"]["n"] == 2 and s["params"]["max_tokens"] == 32
    for key in ("steps", "expanded", "pruned", "tokens_generated", "engine_calls", "wall_time_s", "abstained"):
        assert key in s, key
    assert 0 < s["tokens_generated"] <= 2 * 32
    assert a.abstained is s["abstained"]


def test_stream_self_consistency(client):
    items = list(client.stream(QUESTION, search="self_consistency", n=2, max_tokens=24, seed=1))
    final = items[-1]
    assert isinstance(final, Answer) and final.search["strategy"] == "self_consistency"
    assert any(isinstance(i, dict) and "type" in i for i in items[:-1])  # progress events came first
    assert "".join(i for i in items if isinstance(i, str)) == final.text
    assert final.confidence is not None and 0.0 <= final.confidence <= 1.0


def test_cli_json(vllm_server):
    r = _cli(vllm_server, QUESTION, "--search", "self_consistency", "--param", "n=2", "--param", "max_tokens=24",
             "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["search"]["strategy"] == "self_consistency"
    assert 0.0 <= data["choices"][0]["confidence"] <= 1.0


def test_cli_bad_search_param_is_a_clean_error(vllm_server):
    r = _cli(vllm_server, QUESTION, "--search", "cat", "--param", "branches=0")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("error: 400:") and "branches" in r.stderr, r.stderr
