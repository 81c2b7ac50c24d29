"""A thin client for cat-serve over the official ``openai`` SDK (it imports nothing from ``cat_serve``).

    client = CatClient("http://127.0.0.1:8000/v1")
    a = client.ask("What is 17 * 3?", search="self_consistency", n=4, max_tokens=256)
    print(a.text, a.confidence, a.answer, a.search["tokens_generated"])

    for ev in client.stream("What is 17 * 3?", search="cat", branches=2):
        ...  # dict: a search progress event; str: answer text; Answer: the final result (last)

Keyword arguments of ``ask``/``stream`` are routed: OpenAI request fields (``max_tokens``,
``temperature``, ``top_p``, ``seed``, ``stop``, ...) go into the request itself (the server uses
them as defaults of the search), everything else goes into ``search_params``. With
``search="none"`` every keyword is an OpenAI request field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import openai

NO_SEARCH = "none"
STRATEGIES = ("none", "cat", "self_consistency", "ppl_consistency", "rpc", "deepconf")
# OpenAI chat-completion fields that stay top-level even when a search is requested
REQUEST_FIELDS = frozenset({
    "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop", "logprobs",
    "top_logprobs", "presence_penalty", "frequency_penalty", "logit_bias", "user",
})
DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


@dataclass(frozen=True)
class Answer:
    """One chat answer: the text plus cat-serve's confidence and search statistics."""

    text: str
    confidence: float | None = None  # in [0, 1]; None when the server sent none
    answer: str | None = None  # the extracted final answer (search only)
    abstained: bool = False  # the search was not confident enough (text is the abstain message)
    search: dict[str, Any] = field(default_factory=dict)  # top-level `search` object ({} without search)
    usage: dict[str, Any] = field(default_factory=dict)
    finish_reason: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # the whole response

    @classmethod
    def from_response(cls, response: Any) -> Answer:
        """Build from a ChatCompletion (SDK object) or its ``model_dump()``."""
        data = response if isinstance(response, dict) else response.model_dump()
        choice = (data.get("choices") or [{}])[0]
        search = data.get("search") or {}
        return cls(
            text=(choice.get("message") or {}).get("content") or "",
            confidence=choice.get("confidence"),
            answer=search.get("answer"),
            abstained=bool(search.get("abstained", False)),
            search=search,
            usage=data.get("usage") or {},
            finish_reason=choice.get("finish_reason"),
            raw=data,
        )

    def summary(self) -> str:
        """One line: confidence and search statistics."""
        conf = "n/a" if self.confidence is None else f"{self.confidence:.3f}"
        parts = [f"confidence={conf}"]
        s = self.search
        if s:
            parts.append(f"strategy={s.get('strategy')}")
            if self.answer is not None:
                parts.append(f"answer={self.answer!r}")
            for key in ("steps", "expanded", "pruned", "tokens_generated", "engine_calls"):
                if key in s:
                    parts.append(f"{key}={s[key]}")
            if s.get("wall_time_s") is not None:
                parts.append(f"wall_time_s={s['wall_time_s']:.2f}")
            parts.append(f"abstained={self.abstained}")
        elif self.usage:
            parts.append(f"completion_tokens={self.usage.get('completion_tokens')}")
        return " ".join(parts)


def error_message(exc: BaseException) -> str:
    """The server's own message for an OpenAI-shaped error, else the exception's text."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return getattr(exc, "message", None) or str(exc)


def build_request(question: str, *, model: str, search: str = "cat", system: str | None = None,
                  **params: Any) -> dict[str, Any]:
    """Keyword arguments for ``chat.completions.create`` (``extra_body`` carries the search)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    request: dict[str, Any] = {"model": model, "messages": messages}
    search_params: dict[str, Any] = {}
    for key, value in params.items():
        if search == NO_SEARCH or key in REQUEST_FIELDS:
            request[key] = value
        else:
            search_params[key] = value
    extra: dict[str, Any] = {"search": search}
    if search_params:
        extra["search_params"] = search_params
    request["extra_body"] = extra
    return request


class _StreamState:
    """Folds streamed chunks into progress events, text deltas and a final Answer."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.confidence = self.finish_reason = None
        self.search: dict = {}
        self.usage: dict = {}

    def feed(self, chunk: Any) -> list[Any]:
        data = chunk.model_dump()
        out: list[Any] = []
        if data.get("search_event"):
            out.append(data["search_event"])
        for choice in data.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if content:
                self.text.append(content)
                out.append(content)
            if choice.get("confidence") is not None:
                self.confidence = choice["confidence"]
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        if data.get("search"):
            self.search = data["search"]
        if data.get("usage"):
            self.usage = data["usage"]
        return out

    def answer(self) -> Answer:
        return Answer(text="".join(self.text), confidence=self.confidence, answer=self.search.get("answer"),
                      abstained=bool(self.search.get("abstained", False)), search=self.search,
                      usage=self.usage, finish_reason=self.finish_reason)


class CatClient:
    """Synchronous client. ``model=None``: the first model listed by ``/v1/models``."""

    def __init__(self, base_url: str = DEFAULT_BASE_URL, api_key: str = "none", model: str | None = None,
                 *, timeout: float = 600.0, max_retries: int = 0, **openai_kwargs: Any):
        # max_retries=0: a search is expensive, and re-running it on a timeout would only double the cost
        self.openai = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout,
                                    max_retries=max_retries, **openai_kwargs)
        self._model = model

    @property
    def model(self) -> str:
        if self._model is None:
            self._model = self.openai.models.list().data[0].id
        return self._model

    def create(self, question: str, *, search: str = "cat", system: str | None = None,
               stream: bool = False, **params: Any) -> Any:
        """The raw SDK call: a ChatCompletion, or a Stream of chunks (with usage) when ``stream``."""
        req = build_request(question, model=self.model, search=search, system=system, **params)
        if stream:
            req.update(stream=True, stream_options={"include_usage": True})
        return self.openai.chat.completions.create(**req)

    def ask(self, question: str, *, search: str = "cat", system: str | None = None, **params: Any) -> Answer:
        return Answer.from_response(self.create(question, search=search, system=system, **params))

    def stream(self, question: str, *, search: str = "cat", system: str | None = None,
               **params: Any) -> Iterator[dict | str | Answer]:
        """Yields search progress events (dict), answer text (str), and finally the Answer."""
        state = _StreamState()
        for chunk in self.create(question, search=search, system=system, stream=True, **params):
            yield from state.feed(chunk)
        yield state.answer()


class AsyncCatClient:
    """The asyncio twin of :class:`CatClient`."""

    def __init__(self, base_url: str = DEFAULT_BASE_URL, api_key: str = "none", model: str | None = None,
                 *, timeout: float = 600.0, max_retries: int = 0, **openai_kwargs: Any):
        self.openai = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout,
                                         max_retries=max_retries, **openai_kwargs)
        self._model = model

    async def resolve_model(self) -> str:
        if self._model is None:
            self._model = (await self.openai.models.list()).data[0].id
        return self._model

    async def create(self, question: str, *, search: str = "cat", system: str | None = None,
                     stream: bool = False, **params: Any) -> Any:
        req = build_request(question, model=await self.resolve_model(), search=search, system=system, **params)
        if stream:
            req.update(stream=True, stream_options={"include_usage": True})
        return await self.openai.chat.completions.create(**req)

    async def ask(self, question: str, *, search: str = "cat", system: str | None = None,
                  **params: Any) -> Answer:
        return Answer.from_response(await self.create(question, search=search, system=system, **params))

    async def stream(self, question: str, *, search: str = "cat", system: str | None = None,
                     **params: Any) -> AsyncIterator[dict | str | Answer]:
        state = _StreamState()
        async for chunk in await self.create(question, search=search, system=system, stream=True, **params):
            for item in state.feed(chunk):
                yield item
        yield state.answer()
