"""response_format and tools/tool_choice in process (L item 4): the constraint reaches the engine,
tool calls are read back as vLLM reads them, and every conflict is a 400 naming it.

FakeEngine records the constraint but does not enforce it: the scripts below are the text a
constrained model would write, and every expected value is written by hand from them. That the
real vLLM engine returns valid JSON under the constraint is tests/api/test_structured_vllm.py.
"""

from __future__ import annotations

import json

import httpx
import pytest

from cat_serve.api.app import create_app
from cat_serve.config import ServerConfig
from cat_serve.search.types import StructuredOutput
from tests.fakes import FakeEngine, cont

MODEL = "fake-model"
USER = [{"role": "user", "content": "2+2?"}]
ADD = {"type": "function", "function": {"name": "add", "description": "a + b", "parameters": {
    "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}}}
NOW = {"type": "function", "function": {"name": "now"}}  # no parameters: still a JSON object

from tests.api.test_api_inprocess import api, api_app  # noqa: E402,F401  (one FakeEngine app fixture)




async def chat(client, **body):
    return await client.post("/v1/chat/completions", json={"model": MODEL, "messages": USER, **body})


def prompt(engine, tools=()) -> tuple[int, ...]:
    head = "<tools>" + ",".join(t["function"]["name"] for t in tools) if tools else ""
    return tuple(engine.tokenizer.encode(head + "<user>2+2?<assistant>"))


def sse_events(text: str) -> list:
    return [b[6:] if b[6:] == "[DONE]" else json.loads(b[6:]) for b in text.split("\n\n") if b.startswith("data: ")]


# ---------------------------------------------------------------------------------------------- response_format
async def test_json_object_reaches_the_engine_and_content_is_the_text(api):
    engine, client = api
    engine.gen.script(prompt(engine), cont('{"answer"', ": 4}"))
    body = (await chat(client, response_format={"type": "json_object"})).json()
    assert engine.gen.calls[0].params.structured == StructuredOutput(json_object=True)
    assert body["choices"][0]["message"] == {"role": "assistant", "content": '{"answer": 4}'}
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_json_schema_reaches_the_engine_as_its_schema(api):
    engine, client = api
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    engine.gen.script(prompt(engine), cont('{"answer": 4}'))
    body = (await chat(client, response_format={"type": "json_schema",
                                                 "json_schema": {"name": "a", "schema": schema}})).json()
    assert engine.gen.calls[0].params.structured == StructuredOutput(json_schema=json.dumps(schema))
    assert json.loads(body["choices"][0]["message"]["content"]) == {"answer": 4}


async def test_text_format_and_completions_pass_through(api):
    engine, client = api
    engine.gen.script(prompt(engine), cont("four"))
    await chat(client, response_format={"type": "text"})
    assert engine.gen.calls[-1].params.structured is None
    engine.gen.script(tuple(engine.tokenizer.encode("Q")), cont("{}"))
    r = await client.post("/v1/completions", json={"model": MODEL, "prompt": "Q", "stream": True,
                                                   "response_format": {"type": "json_object"}})
    assert r.status_code == 200 and engine.gen.calls[-1].params.structured == StructuredOutput(json_object=True)
    assert "".join(c["choices"][0]["text"] for c in sse_events(r.text)[:-1] if c["choices"]) == "{}"


# ---------------------------------------------------------------------------------------------- tools
async def test_required_tool_choice_constrains_to_calls_and_returns_tool_calls(api):
    engine, client = api
    engine.gen.script(prompt(engine, [ADD, NOW]), cont('[{"name": "add", "parameters": {"a": 2, "b": 2}}, ',
                                                        '{"name": "now", "parameters": {}}]'))
    body = (await chat(client, tools=[ADD, NOW], tool_choice="required")).json()
    # vLLM's _get_json_schema_from_tools, written out by hand for these two tools
    expected = {"type": "array", "minItems": 1, "items": {"type": "object", "anyOf": [
        {"properties": {"name": {"type": "string", "enum": ["add"]},
                        "parameters": ADD["function"]["parameters"]}, "required": ["name", "parameters"]},
        {"properties": {"name": {"type": "string", "enum": ["now"]},
                        "parameters": {"type": "object", "properties": {}}}, "required": ["name", "parameters"]}]}}
    assert json.loads(engine.gen.calls[0].params.structured.json_schema) == expected
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == ""
    calls = choice["message"]["tool_calls"]
    assert [(c["type"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("function", "add", {"a": 2, "b": 2}), ("function", "now", {})]
    assert all(c["id"].startswith("chatcmpl-tool-") for c in calls) and calls[0]["id"] != calls[1]["id"]


async def test_parallel_tool_calls_false_allows_one_call(api):
    engine, client = api
    engine.gen.script(prompt(engine, [ADD]), cont('[{"name": "add", "parameters": {"a": 1, "b": 2}}]'))
    await chat(client, tools=[ADD], tool_choice="required", parallel_tool_calls=False)
    assert json.loads(engine.gen.calls[0].params.structured.json_schema)["maxItems"] == 1


async def test_named_tool_choice_constrains_to_its_parameters(api):
    engine, client = api
    engine.gen.script(prompt(engine, [ADD, NOW]), cont('{"a": 3, "b": 4}'))
    body = (await chat(client, tools=[ADD, NOW], tool_choice={"type": "function", "function": {"name": "add"}})).json()
    assert json.loads(engine.gen.calls[0].params.structured.json_schema) == ADD["function"]["parameters"]
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"  # OpenAI/vLLM: a named call ends with "stop"
    [call] = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "add", "arguments": '{"a": 3, "b": 4}'}


async def test_required_tool_call_streams_as_one_tool_calls_delta(api):
    engine, client = api
    engine.gen.script(prompt(engine, [ADD]), cont('[{"name": "add", ', '"parameters": {"a": 1, "b": 1}}]'))
    events = sse_events((await chat(client, tools=[ADD], tool_choice="required", stream=True)).text)
    assert events[-1] == "[DONE]"
    deltas = [c["choices"][0]["delta"] for c in events[:-1]]
    assert not any(d.get("content") for d in deltas)  # the JSON is not sent as content
    [tc] = [d["tool_calls"] for d in deltas if "tool_calls" in d]
    assert tc[0]["index"] == 0 and tc[0]["function"]["name"] == "add"
    assert json.loads(tc[0]["function"]["arguments"]) == {"a": 1, "b": 1}
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_tool_choice_none_puts_tools_in_the_prompt_only(api):
    engine, client = api
    engine.gen.script(prompt(engine, [ADD]), cont("four"))
    body = (await chat(client, tools=[ADD], tool_choice="none")).json()
    assert engine.gen.calls[0].prefixes == (prompt(engine, [ADD]),)  # the template saw the tools
    assert engine.gen.calls[0].params.structured is None
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "four"}


# ---------------------------------------------------------------------------------------------- 400s
@pytest.mark.parametrize("body,param,message", [
    ({"search": "cat", "response_format": {"type": "json_object"}}, "response_format",
     "response_format is not supported with search 'cat'; use search 'none'"),
    ({"search": "self_consistency", "tools": [ADD], "tool_choice": "required"}, "tools",
     "tools is not supported with search 'self_consistency'; use search 'none'"),
    ({"tools": [ADD]}, "tool_choice", '"auto" tool choice needs'),  # the default with tools is "auto"
    ({"tools": [ADD], "tool_choice": "auto"}, "tool_choice", '"auto" tool choice needs'),
    ({"tool_choice": "required"}, "tool_choice", "When using `tool_choice`, `tools` must be set."),
    ({"tools": [], "tool_choice": "required"}, "tools", "`tools` must not be an empty array"),
    ({"tools": [ADD], "tool_choice": {"type": "function", "function": {"name": "sub"}}}, "tool_choice",
     "The tool specified in `tool_choice` does not match any of the specified `tools`"),
    ({"tools": [ADD], "tool_choice": "sometimes"}, "tool_choice", "Invalid value for `tool_choice`"),
    ({"tools": [{"type": "function"}], "tool_choice": "required"}, "tools.0", "tools[0] must be"),
    ({"response_format": {"type": "yaml"}}, "response_format", "response_format.type must be one of"),
    ({"response_format": {"type": "json_schema"}}, "response_format",
     "When response_format type is 'json_schema', the 'json_schema' field must be provided"),
])
async def test_conflicts_and_bad_values_are_400s_naming_them(api, body, param, message):
    engine, client = api
    r = await chat(client, **body)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == param and err["message"].startswith(message) and err["type"] == "invalid_request_error"
    assert engine.gen.calls == []  # refused before any engine work


async def test_an_engine_without_a_grammar_backend_answers_400(api):
    engine, client = api
    engine.supports_structured_output = False  # as the transformers engine (hf_engine.py)
    engine.kind = "transformers"
    r = await chat(client, response_format={"type": "json_object"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format"
    assert r.json()["error"]["message"].startswith("response_format is not supported by the transformers engine")
    r = await chat(client, tools=[ADD], tool_choice="required")
    assert r.status_code == 400 and r.json()["error"]["param"] == "tool_choice"
