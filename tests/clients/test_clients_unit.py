"""Fast checks of the client wrapper against a mocked HTTP transport (no server)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from clients import Answer, CatClient, build_request
from clients.cli import main, parse_param

SEARCH = {"strategy": "self_consistency", "params": {"n": 2}, "steps": 1, "expanded": 2, "pruned": 0,
          "tokens_generated": 40, "engine_calls": 2, "wall_time_s": 0.5, "abstained": False, "answer": "51"}


def _completion(search: dict | None = SEARCH) -> dict:
    out = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": "Answer: 51"},
                        "logprobs": None, "finish_reason": "stop", "confidence": 0.75}],
           "usage": {"prompt_tokens": 5, "completion_tokens": 40, "total_tokens": 45}}
    if search is not None:
        out["search"] = search
    return out


def _mock_client(handler) -> CatClient:
    return CatClient("http://test/v1", http_client=httpx.Client(transport=httpx.MockTransport(handler)))


def test_build_request_routes_openai_fields_and_search_params():
    req = build_request("q", model="m", search="cat", system="be brief", max_tokens=32, branches=2,
                        step_delimiters=["\n"])
    assert req["max_tokens"] == 32 and "branches" not in req
    assert req["extra_body"] == {"search": "cat", "search_params": {"branches": 2, "step_delimiters": ["\n"]}}
    assert [m["role"] for m in req["messages"]] == ["system", "user"]
    plain = build_request("q", model="m", search="none", max_tokens=8, n=2)
    assert plain["n"] == 2 and plain["extra_body"] == {"search": "none"}


def test_ask_resolves_model_and_parses_extensions():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [
                {"id": "first", "object": "model", "created": 0, "owned_by": "x"}]})
        return httpx.Response(200, json=_completion())

    a = _mock_client(handler).ask("q", search="self_consistency", n=2, max_tokens=32)
    body = json.loads(seen[-1].content)
    assert body["model"] == "first" and body["search_params"] == {"n": 2} and body["max_tokens"] == 32
    assert (a.text, a.confidence, a.answer, a.abstained) == ("Answer: 51", 0.75, "51", False)
    assert a.search["engine_calls"] == 2 and a.usage["completion_tokens"] == 40
    assert "confidence=0.750" in a.summary() and "tokens_generated=40" in a.summary()


def test_stream_yields_events_text_then_answer():
    def chunk(**kw):
        return {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", **kw}

    chunks = [
        chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]),
        chunk(choices=[{"index": 0, "delta": {"content": ""}, "finish_reason": None}],
              search_event={"type": "path", "index": 0}),
        chunk(choices=[{"index": 0, "delta": {"content": "Answer: 51"}, "finish_reason": None}]),
        chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop", "confidence": 0.5}], search=SEARCH),
        chunk(choices=[], usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}),
    ]
    sse = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    client = _mock_client(lambda r: httpx.Response(200, text=sse, headers={"content-type": "text/event-stream"}))
    client._model = "m"
    items = list(client.stream("q", search="self_consistency", n=2))
    assert items[0] == {"type": "path", "index": 0}
    assert items[1] == "Answer: 51"
    final = items[-1]
    assert isinstance(final, Answer) and final.text == "Answer: 51" and final.confidence == 0.5
    assert final.answer == "51" and final.usage["total_tokens"] == 3


def test_parse_param_json_or_string():
    assert parse_param("branches=4") == ("branches", 4)
    assert parse_param('step_delimiters=["\\n\\n"]') == ("step_delimiters", ["\n\n"])
    assert parse_param("mode=faithful") == ("mode", "faithful")
    assert parse_param("x=a=b") == ("x", "a=b")


def test_cli_unreachable_server_is_a_clean_error(capsys):
    assert main(["ask", "q", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--timeout", "5"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err


def test_import_clients_does_not_import_cat_serve():
    code = "import sys, clients, clients.cli; print(sorted(m for m in sys.modules if m.split('.')[0] == 'cat_serve'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout
    assert out.strip() == "[]"
