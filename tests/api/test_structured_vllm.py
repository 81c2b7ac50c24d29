"""response_format and forced tool calls through the official `openai` SDK against the real vLLM
engine (search: none): the constraint is enforced, so the text parses as JSON (and fits the schema)."""

from __future__ import annotations

import json

import openai
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

# an example in the prompt keeps the 135M model's object short (asked only for "JSON", at temperature 0
# it nests {"type": "json", "data": {...}} until max_tokens: valid so far, but never closed)
ASK = [{"role": "user", "content": 'What is 12 times 3? Answer with a JSON object such as {"answer": 10}.'}]
SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"],
          "additionalProperties": False}
ADD = {"type": "function", "function": {"name": "multiply", "description": "a times b", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"],
    "additionalProperties": False}}}


@pytest.fixture(scope="module")
def client(vllm_server):
    return vllm_server.client()


def test_json_object_is_valid_json(vllm_server, client):
    r = client.chat.completions.create(model=vllm_server.model, messages=ASK, max_tokens=60, temperature=0,
                                       response_format={"type": "json_object"})
    c = r.choices[0]
    assert c.finish_reason == "stop", c.message.content
    assert isinstance(json.loads(c.message.content), dict)


def test_json_schema_is_valid_and_fits_the_schema(vllm_server, client):
    rf = {"type": "json_schema", "json_schema": {"name": "product", "schema": SCHEMA}}
    r = client.chat.completions.create(model=vllm_server.model, messages=ASK, max_tokens=30, temperature=0,
                                       response_format=rf)
    out = json.loads(r.choices[0].message.content)
    assert set(out) == {"answer"} and isinstance(out["answer"], int)
    # streamed, the deltas join to the same constrained JSON
    chunks = client.chat.completions.create(model=vllm_server.model, messages=ASK, max_tokens=30, temperature=0,
                                            response_format=rf, stream=True)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert json.loads(text) == out


CALL = [{"role": "user", "content": "Use the multiply tool to compute 12 times 3."}]


def test_required_and_named_tool_calls(vllm_server, client):
    # one call at most (parallel_tool_calls=False): the array must close after it
    r = client.chat.completions.create(model=vllm_server.model, messages=CALL, max_tokens=120, temperature=0,
                                       tools=[ADD], tool_choice="required", parallel_tool_calls=False)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.tool_calls, c.message
    call = c.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "multiply"
    args = json.loads(call.function.arguments)
    assert set(args) == {"a", "b"} and all(isinstance(v, int) for v in args.values())
    r = client.chat.completions.create(model=vllm_server.model, messages=CALL, max_tokens=80, temperature=0,
                                       tools=[ADD], tool_choice={"type": "function", "function": {"name": "multiply"}})
    [call] = r.choices[0].message.tool_calls
    assert call.function.name == "multiply" and set(json.loads(call.function.arguments)) == {"a", "b"}


def test_with_a_search_it_is_a_400(vllm_server, client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=vllm_server.model, messages=ASK, max_tokens=8,
                                       response_format={"type": "json_object"}, extra_body={"search": "cat"})
    assert e.value.body["param"] == "response_format"
    assert e.value.body["message"] == "response_format is not supported with search 'cat'; use search 'none'"
