"""``response_format`` and ``tools``/``tool_choice``: one decoding constraint, answered as vLLM does.

What ``vllm serve`` does (vLLM 0.32, ``entrypoints/openai`` and ``tool_parsers/utils.py``), and so
what cat-serve does for ``search: none``:

- ``response_format``: ``text`` is no constraint; ``json_object`` constrains to any JSON object;
  ``json_schema`` to its ``json_schema.schema`` (vLLM's ``structured_outputs_from_response_format``).
  The answer is the ordinary ``message.content``.
- ``tools`` go to the chat template. ``tool_choice`` defaults to ``auto`` when tools are given.
  - ``none``: no constraint, no tool calls.
  - ``required``: the output is constrained to a JSON array of ``{"name", "parameters"}`` objects,
    one per call, ``name`` one of the tools (``maxItems`` 1 when ``parallel_tool_calls`` is false);
    the calls come back as ``message.tool_calls`` (``arguments`` = the parameters as JSON text),
    ``content`` "", ``finish_reason`` "tool_calls".
  - a named function: the output is constrained to that function's ``parameters`` schema and
    comes back as one tool call whose ``arguments`` is that text; ``finish_reason`` stays "stop".
  - ``auto``: needs a model-specific tool-call parser (vLLM: ``--enable-auto-tool-choice
    --tool-call-parser``). cat-serve has none, so it is a 400, as ``vllm serve`` answers without them.
  A tool constraint overrides ``response_format`` (as in vLLM's ``adjust_request``).

With a search the paths would have to be decoded under one constraint and compared as parsed
JSON; cat-serve does not do that, and answers 400 naming the conflict instead.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from cat_serve.api.protocol import NO_SEARCH, APIError
from cat_serve.search.types import StructuredOutput

REQUIRED = "required"


@dataclass(frozen=True)
class Structured:
    """What a request's response_format/tools ask for: the engine constraint, the tools for the chat
    template, and how to read tool calls back out of the text."""

    constraint: StructuredOutput | None = None
    tools: tuple[dict, ...] | None = None  # for the chat template
    tool_choice: str | None = None  # REQUIRED, a function name, or None (no tool calls)

    def tool_calls(self, text: str) -> list[dict] | None:
        """The message's tool calls from the constrained text (None when the request forces none)."""
        if self.tool_choice is None:
            return None
        if self.tool_choice != REQUIRED:  # a named function: the text is its arguments
            return [_call(self.tool_choice, text)] if text.strip() else []
        try:
            calls = json.loads(text)
        except ValueError:
            return []  # cut at max_tokens, say: vLLM returns no calls
        if not isinstance(calls, list) or not all(
                isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("parameters", {}), dict)
                for c in calls):
            return []
        return [_call(c["name"], json.dumps(c.get("parameters") or {}, ensure_ascii=False)) for c in calls]

    def finish(self, finish: str) -> str:
        """OpenAI's finish reason: "tool_calls" for a required call that ended normally."""
        return "tool_calls" if self.tool_choice == REQUIRED and finish == "stop" else finish


def _call(name: str, arguments: str) -> dict:
    return {"id": f"chatcmpl-tool-{uuid.uuid4().hex}", "type": "function",
            "function": {"name": name, "arguments": arguments}}


def parse(req, *, chat: bool) -> Structured:
    """The request's :class:`Structured`; a 400 for a malformed or unsupported combination."""
    fmt = _response_format(getattr(req, "response_format", None))
    tools, choice = (_tools(req) if chat else (None, None))
    if req.search != NO_SEARCH:
        what = "response_format" if fmt is not None else "tools" if choice is not None else None
        if what:
            raise APIError(400, f"{what} is not supported with search {req.search!r}; use search 'none'",
                           param=what)
    if choice is None:
        return Structured(fmt, tools, None)
    if choice == REQUIRED:
        schema = _required_schema(tools, getattr(req, "parallel_tool_calls", None))
    else:
        schema = next(_parameters(t) for t in tools if t["function"]["name"] == choice)
    return Structured(StructuredOutput(json_schema=json.dumps(schema)), tools, choice)


def _response_format(rf) -> StructuredOutput | None:
    if rf is None:
        return None
    kind = rf.get("type") if isinstance(rf, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return StructuredOutput(json_object=True)
    if kind == "json_schema":
        js = rf.get("json_schema")
        schema = js.get("schema") if isinstance(js, dict) else None
        if not isinstance(schema, dict):
            raise APIError(400, "When response_format type is 'json_schema', the 'json_schema' field must be "
                                "provided, with the schema in 'json_schema.schema'.", param="response_format")
        return StructuredOutput(json_schema=json.dumps(schema))
    raise APIError(400, f"response_format.type must be one of 'text', 'json_object', 'json_schema', got {kind!r}",
                   param="response_format")


def _tools(req) -> tuple[tuple[dict, ...] | None, str | None]:
    """(tools for the template, the tool_choice that constrains: REQUIRED or a name, else None)."""
    tools, choice = getattr(req, "tools", None), getattr(req, "tool_choice", None)
    if tools is None:
        if choice not in (None, "none"):
            raise APIError(400, "When using `tool_choice`, `tools` must be set.", param="tool_choice")
        return None, None
    if not isinstance(tools, list) or not tools:
        raise APIError(400, "`tools` must not be an empty array. Either provide at least one tool or omit the "
                            "field entirely.", param="tools")
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) else None
        if not (isinstance(t, dict) and t.get("type", "function") == "function" and isinstance(fn, dict)
                and isinstance(fn.get("name"), str) and fn["name"]
                and isinstance(fn.get("parameters", {}), (dict, type(None)))):
            raise APIError(400, f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\": ..., "
                                f"\"parameters\": {{...}}}}}}", param=f"tools.{i}")
    tools = tuple(tools)
    if choice is None:
        choice = "auto"  # OpenAI's and vLLM's default when tools are given
    if choice == "none":
        return tools, None
    if choice == "auto":
        raise APIError(400, '"auto" tool choice needs a model-specific tool-call parser (vLLM: '
                            '--enable-auto-tool-choice --tool-call-parser), which cat-serve does not have; use '
                            'tool_choice "required", a named function, or "none"', param="tool_choice")
    if choice == REQUIRED:
        return tools, REQUIRED
    usage = 'Correct usage: `{"type": "function", "function": {"name": "my_function"}}`'
    fn = choice.get("function") if isinstance(choice, dict) else None
    if not isinstance(choice, dict):
        raise APIError(400, f"Invalid value for `tool_choice`: {choice!r}! Only named tools, \"none\", \"auto\" or "
                            "\"required\" are supported.", param="tool_choice")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise APIError(400, f"Invalid `function` in `tool_choice`! {usage}", param="tool_choice.function")
    if fn["name"] not in {t["function"]["name"] for t in tools}:
        raise APIError(400, "The tool specified in `tool_choice` does not match any of the specified `tools`",
                       param="tool_choice")
    return tools, fn["name"]


def _parameters(tool: dict) -> dict:
    """A tool's parameter schema; empty or missing parameters still mean a JSON object."""
    return tool["function"].get("parameters") or {"type": "object", "properties": {}}


def _required_schema(tools: tuple[dict, ...], parallel: bool | None) -> dict:
    """vLLM's ``_get_json_schema_from_tools``: an array of at least one {name, parameters} call."""
    calls, defs = [], {}
    for t in tools:
        params = dict(_parameters(t))
        defs.update(params.pop("$defs", None) or {})  # "$ref": "#/$defs/..." resolves at the top
        calls.append({"properties": {"name": {"type": "string", "enum": [t["function"]["name"]]},
                                     "parameters": params},
                      "required": ["name", "parameters"]})
    schema: dict = {"type": "array", "minItems": 1, "items": {"type": "object", "anyOf": calls}}
    if parallel is False:
        schema["maxItems"] = 1
    if defs:
        schema["$defs"] = defs
    return schema
