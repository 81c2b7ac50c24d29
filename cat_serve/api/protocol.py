"""OpenAI request models, plus the cat-serve extension fields `search` and `search_params`.

Validation lives here (pydantic validators), so bad input becomes a 400 before any engine work.
Unknown OpenAI fields are accepted and ignored, as vLLM does; fields that are not in the OpenAI
spec carry a comment saying so.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cat_serve.search.types import GenParams

NO_SEARCH = "none"
RESERVED_TEMPLATE_KWARGS = frozenset({"chat_template", "tokenize"})  # vLLM rejects these in chat_template_kwargs


class APIError(Exception):
    """An error the client caused (4xx) or the server hit (5xx), in OpenAI's error shape."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    n: int = Field(1, ge=1, le=64)
    stop: str | list[str] | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    # --- cat-serve extension (not in the OpenAI spec) ---
    search: str = NO_SEARCH  # decode-time search strategy: none | cat | self_consistency | ...
    search_params: dict[str, Any] | None = None  # validated by the strategy's params class
    return_tokens_as_token_ids: bool = False  # vLLM extension: logprob tokens as "token_id:<id>"
    deadline_s: float | None = Field(None, gt=0)  # seconds; capped by the server (--max-deadline)

    @model_validator(mode="after")
    def _check_common(self):
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        if isinstance(self.stop, list) and any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")
        if self.search_params and self.search == NO_SEARCH:  # {} is accepted: nothing to ignore
            raise ValueError("search_params given but search is 'none'")
        if self.search != NO_SEARCH and self.n != 1:
            raise ValueError("n must be 1 when search is used; size the search with search_params")
        return self

    # ----- conversions -----
    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def requested_top_logprobs(self) -> int:
        return 0

    def gen_params(self, default_max_tokens: int) -> GenParams:
        """User value, else server default, else OpenAI default."""
        return GenParams(
            max_tokens=self.requested_max_tokens() or default_max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            stop=self.stop_list(),
            seed=self.seed,
            top_logprobs=self.requested_top_logprobs(),
            include_stop_str=False,  # OpenAI returns text without the matched stop string
        )

    def search_defaults(self) -> dict[str, Any]:
        """The OpenAI sampling fields the user set; search_params values override them."""
        out: dict[str, Any] = {}
        for name in ("temperature", "top_p", "seed"):
            if name in self.model_fields_set and getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.requested_max_tokens() is not None:
            out["max_tokens"] = self.requested_max_tokens()
        return out

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def as_template_dict(self) -> dict:
        content = self.content
        if isinstance(content, list):
            content = "".join(p.text for p in content)
        role = "system" if self.role == "developer" else self.role
        out = {"role": role, "content": content or ""}
        for key in ("tool_calls", "tool_call_id", "name"):  # a tool conversation, for the chat template
            if (self.model_extra or {}).get(key) is not None:
                out[key] = self.model_extra[key]
        reasoning = (self.model_extra or {}).get("reasoning") or (self.model_extra or {}).get("reasoning_content")  # an earlier turn's thinking
        if self.role == "assistant" and isinstance(reasoning, str):  # templates read one name or the other
            out["reasoning"] = out["reasoning_content"] = reasoning
        return out


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    # checked and turned into a decoding constraint by cat_serve/api/structured.py
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    # --- vLLM extensions (not in the OpenAI spec) ---
    chat_template_kwargs: dict[str, Any] | None = None  # extra chat template variables, e.g. enable_thinking
    include_reasoning: bool = True  # with --reasoning-parser: false leaves message.reasoning out

    @field_validator("chat_template_kwargs")
    @classmethod
    def _check_template_kwargs(cls, value):
        reserved = sorted(RESERVED_TEMPLATE_KWARGS & set(value or ()))
        if reserved:  # as vLLM: the server chooses the template and renders it to text
            raise ValueError(f"may not set {', '.join(reserved)}")
        return value

    @model_validator(mode="after")
    def _check_chat(self):
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        return self

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def question(self) -> str | None:
        """The last user message: the text whose cues ``answer_format: auto`` reads."""
        for m in reversed(self.messages):
            if m.role == "user":
                return m.as_template_dict()["content"]
        return None

    def requested_top_logprobs(self) -> int:
        return (self.top_logprobs or 0) if self.logprobs else 0


class CompletionRequest(_Request):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    suffix: str | None = None
    response_format: dict[str, Any] | None = None  # vLLM accepts it on completions too (structured.py)

    @model_validator(mode="after")
    def _check_completion(self):
        if self.echo:
            raise ValueError("echo is not supported")
        if self.suffix:
            raise ValueError("suffix is not supported")
        if isinstance(self.prompt, list) and len(self.prompt) == 0:
            raise ValueError("prompt must not be empty")
        if self.search != NO_SEARCH and len(self.prompts()) != 1:
            raise ValueError("search takes exactly one prompt")
        return self

    def question(self) -> str | None:
        """The prompt string (None for token ids): the text whose cues ``answer_format: auto`` reads."""
        return self.prompt if isinstance(self.prompt, str) else None

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if all(isinstance(x, int) for x in p):
            return [list(p)]
        return list(p)

    def requested_top_logprobs(self) -> int:
        return self.logprobs or 0


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())
