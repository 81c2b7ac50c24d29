"""Request -> engine or search strategy -> OpenAI response (JSON or SSE chunks).

One ``Serving`` object per app (kept in ``app.state``): dispatch only. Chat and text completions
share every code path; the wire format (``ChatFormat`` / ``TextFormat``, SSE, usage, the ``search``
object) is ``cat_serve/api/wire.py``, the async plumbing (stream event queue, cancel on
disconnect) ``cat_serve/api/aio.py``.

Search responses (``search != "none"``) add, beyond the OpenAI schema:
- ``choices[i].confidence`` in [0, 1] (plain requests carry exp(mean token logprob) there);
- a top-level ``search`` object: strategy, params, steps, expanded, pruned, tokens_generated,
  engine_calls, wall_time_s, abstained, answer, raw_confidence (the strategy's own score),
  calibrated (whether a calibration profile mapped it to ``confidence``), candidates when asked.
Streaming a search sends progress chunks first: ordinary chunks with an empty delta and an extra
top-level ``search_event`` object (``{"type": ..., ...}``), then the chosen text as one content delta,
then a chunk with ``finish_reason``, ``confidence`` and ``search``, then usage (if asked), then [DONE].

The route parses the search params once (:meth:`Serving.parse_search`) and hands the same object
here. ``Serving`` writes what the log line and the metrics report (strategy, stream, prompt tokens,
expanded, pruned, abstained) onto the request's ``RequestRecord`` (``cat_serve/api/service.py``).

Errors: every exception on the way to a response goes through ``errors.to_api_error``, so one cause
has one body wherever it happens (before the engine, inside it, during a stream).
"""

from __future__ import annotations

import asyncio

from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from fastapi import Request

from cat_serve.api.aio import Events, until_disconnect
from cat_serve.api.errors import to_api_error
from cat_serve.api.protocol import (
    NO_SEARCH,
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    new_id,
    now,
)
from cat_serve.api import structured
from cat_serve.api.service import RequestRecord
from cat_serve.api.structured import Structured
from cat_serve.api.wire import (
    ChatFormat,
    Format,
    TextFormat,
    openai_finish,
    safe_prefix,
    search_object,
    sse,
    usage,
)
from cat_serve.engine.base import Engine, PromptTooLongError, chat_prompt_ids, check_room
from cat_serve.engine.output import sample_seed
from cat_serve.search import registry
from cat_serve.search.confidence import path_probability
from cat_serve.search.params import SearchParams
from cat_serve.search.types import SearchResult, Step

ABSTAIN_TEXT = "I am not confident enough to answer this."  # returned when search abstains


class Serving:
    def __init__(self, engine: Engine, default_max_tokens: int, calibration=None, reasoning=None):
        self.engine = engine
        self.reasoning = reasoning  # a ReasoningParser (cat_serve/api/reasoning.py) with --reasoning-parser
        self.default_max_tokens = default_max_tokens
        self.calibration = calibration  # a CalibrationProfile (cat_serve/calibration.py) or None
        self.model_fingerprint: str | None = None  # calibration.model_fingerprint of the served weights
        self._token_text: dict[int, str] = {}

    # ------------------------------------------------------------------ entry points
    def parse_search(self, req, rec: RequestRecord) -> SearchParams | None:
        """The request's search params, validated once with the calibration profile's defaults
        (None for ``search: none``); raises SearchParamsError (a 400). Labels the record first, so
        a refused request is counted under the strategy it asked for ("invalid" for an unknown one)."""
        known = req.search == NO_SEARCH or req.search in registry.available()
        rec.strategy, rec.stream = (req.search if known else "invalid"), req.stream
        if req.search == NO_SEARCH:
            return None
        _check_search_fields(req)
        defaults = req.search_defaults()
        if "max_tokens" not in defaults and not self._sets_max_tokens(req):
            defaults["max_tokens"] = self.default_max_tokens  # per path, as a plain request's default
        return registry.parse_params(req.search, req.search_params, defaults, self.calibration)

    def _sets_max_tokens(self, req) -> bool:
        """Whether search_params or the calibration profile set max_tokens (both win over the server default)."""
        raw = req.search_params if isinstance(req.search_params, dict) else {}
        profile = self.calibration.defaults_for(req.search, raw) if self.calibration and req.search in \
            registry.available() else {}
        return "max_tokens" in raw or "max_tokens" in profile

    async def chat(self, req: ChatCompletionRequest, search: SearchParams | None, request: Request,
                   rec: RequestRecord):
        self._check_model(req.model)
        st = self._structured(req, chat=True)
        messages = [m.as_template_dict() for m in req.messages]
        try:
            prompt = chat_prompt_ids(self.engine.tokenizer, messages, st.tools, req.chat_template_kwargs)
        except Exception as e:  # a template that rejects this conversation (e.g. role order)
            raise APIError(400, f"chat template failed: {e}", param="messages") from e
        reasoning = (self.reasoning.for_request(prompt, req.chat_template_kwargs, req.include_reasoning)
                     if self.reasoning is not None else None)
        fmt = ChatFormat(self.engine.model_name, self._tok(req), top_n=req.requested_top_logprobs(),
                         want_logprobs=bool(req.logprobs), reasoning=reasoning)
        return await self._serve(req, search, [prompt], fmt, request, rec, st)

    async def completion(self, req: CompletionRequest, search: SearchParams | None, request: Request,
                         rec: RequestRecord):
        self._check_model(req.model)
        st = self._structured(req, chat=False)
        prompts = [p if isinstance(p, list) else self._encode(p) for p in req.prompts()]
        for p in prompts:
            if any(t < 0 or t >= self.engine.vocab_size for t in p):
                raise APIError(400, "prompt token ids out of vocabulary range", param="prompt")
        fmt = TextFormat(self.engine.model_name, self._tok(req), top_n=req.requested_top_logprobs(),
                         want_logprobs=req.logprobs is not None)
        return await self._serve(req, search, prompts, fmt, request, rec, st)

    def models(self) -> dict:
        return {
            "object": "list",
            "data": [{"id": self.engine.model_name, "object": "model", "created": now(),
                      "owned_by": "cat-serve", "max_model_len": self.engine.max_model_len,
                      "fingerprint": self.model_fingerprint,
                      "calibration": self.calibration.summary() if self.calibration else {"loaded": False}}],
        }

    def health(self) -> dict:
        out = {"status": "ok", "engine": self.engine.kind, "model": self.engine.model_name,
               "inflight_requests": self.engine.num_inflight()}
        if hasattr(self.engine, "device"):  # transformers: where the model runs
            out["device"] = self.engine.device
        if hasattr(self.engine, "prefix_cache_stats"):  # vLLM only
            out["prefix_cache"] = self.engine.prefix_cache_stats()
        return out

    # ------------------------------------------------------------------ dispatch
    async def _serve(self, req, search: SearchParams | None, prompts: list[list[int]], fmt: Format,
                     request: Request, rec: RequestRecord, st: Structured):
        for p in prompts:
            self._check_length(p)
        rec.prompt_tokens = sum(map(len, prompts))
        if search is not None:
            if req.stream:
                return self._stream_search(req, prompts[0], fmt, search, rec)
            return await until_disconnect(request, self._search(req, prompts[0], fmt, search, rec))
        if req.stream:
            return self._stream_plain(req, prompts, fmt, rec, st)
        return await until_disconnect(request, self._plain(req, prompts, fmt, st))

    # ------------------------------------------------------------------ plain generation
    async def _plain(self, req, prompts, fmt: Format, st: Structured) -> dict:
        params = replace(req.gen_params(self.default_max_tokens), structured=st.constraint)
        results = await asyncio.gather(*(self.engine.extend([p], req.n, params) for p in prompts))
        choices, completion_tokens = [], 0
        for i, steps in enumerate(results):
            for j, step in enumerate(steps[0]):
                completion_tokens += step.num_tokens
                choices.append(fmt.choice(i * req.n + j, step.text, st.finish(openai_finish(step.finish_reason)),
                                          path_probability(step.logprobs), fmt.logprobs(step),
                                          tool_calls=st.tool_calls(step.text), token_ids=step.token_ids))
        thinking = fmt.reasoning_tokens([step.token_ids for steps in results for step in steps[0]])
        return fmt.response(choices, usage(sum(map(len, prompts)), completion_tokens, thinking))

    async def _stream_plain(self, req, prompts, fmt: Format, rec: RequestRecord,
                            st: Structured) -> AsyncIterator[str]:
        params = replace(req.gen_params(self.default_max_tokens), structured=st.constraint)
        rid, created = new_id(fmt.id_prefix), now()
        events = Events()
        holdback = max((len(s) for s in params.stop), default=1) - 1

        async def one(index: int, prompt: list[int]) -> None:
            seeded = replace(params, seed=sample_seed(params.seed, index % req.n))  # as extend(n) would seed it
            sent = {"chars": 0, "tokens": 0}
            if fmt.reasoning is not None:  # reasoning and content deltas from vLLM's parser
                sent["reasoning"] = fmt.reasoning.stream(holdback)

            def on_token(partial: Step) -> bool:
                events.put("delta", (index, partial, sent))
                return False

            step = (await self.engine.extend([prompt], 1, seeded, early_stop=on_token))[0][0]
            events.put("final", (index, step, sent))

        n_streams = len(prompts) * req.n
        tasks = [events.produce(one(i * req.n + j, p)) for i, p in enumerate(prompts) for j in range(req.n)]
        done, completion_tokens, thinking = 0, 0, 0
        try:
            for index in range(n_streams):
                yield sse(fmt.chunk(rid, created, fmt.delta_choice(index, first=True)))
            while done < n_streams:
                kind, (index, step, sent) = await events.next()
                new_tokens = step.num_tokens - sent["tokens"]
                lp = fmt.logprobs(step, start=sent["tokens"]) if new_tokens else None
                if "reasoning" in sent:
                    stream = sent["reasoning"]
                    thought, delta_text = (stream.finish if kind == "final" else stream.feed)(step.text, step.token_ids)
                    if thought or delta_text or lp:
                        yield sse(fmt.chunk(rid, created, fmt.delta_choice(index, delta_text or None, logprobs=lp,
                                                                           reasoning=thought)))
                    if kind == "final":
                        thinking += fmt.reasoning.count(step.token_ids)
                else:
                    text = step.text if kind == "final" else safe_prefix(step.text, holdback)
                    delta_text = text[sent["chars"]:] if len(text) > sent["chars"] else ""
                    if st.tool_choice is not None:
                        delta_text = ""  # the text is the tool calls: sent whole, parsed, at the end
                    if delta_text or lp:
                        yield sse(fmt.chunk(rid, created, fmt.delta_choice(index, delta_text, logprobs=lp)))
                    sent["chars"] = max(sent["chars"], len(text))
                sent["tokens"] = step.num_tokens
                if kind == "final":
                    done += 1
                    completion_tokens += step.num_tokens
                    calls = st.tool_calls(step.text)
                    if calls:
                        yield sse(fmt.chunk(rid, created, fmt.delta_choice(index, tool_calls=calls)))
                    final = fmt.delta_choice(index, finish=st.finish(openai_finish(step.finish_reason)))
                    final["confidence"] = path_probability(step.logprobs)  # cat-serve extension
                    yield sse(fmt.chunk(rid, created, final))
            if req.include_usage():
                yield sse(fmt.usage_chunk(rid, created, usage(sum(map(len, prompts)), completion_tokens,
                                                              thinking if fmt.reasoning is not None else None)))
            yield sse("[DONE]")
        except Exception as e:  # noqa: BLE001  (the stream has started: the error is its last event)
            yield _error_event(e, rec)
            yield sse("[DONE]")
        finally:
            for t in tasks:
                t.cancel()

    # ------------------------------------------------------------------ search
    async def _run_search(self, req, prompt, params, rec: RequestRecord, on_event=None) -> tuple[SearchResult, bool]:
        result, abstained = await registry.run_search(req.search, self.engine, prompt, params, on_event=on_event,
                                                      profile=self.calibration, question=req.question())
        rec.expanded, rec.pruned, rec.abstained = result.stats.expanded, result.stats.pruned, abstained
        return result, abstained

    async def _search(self, req, prompt, fmt: Format, params, rec: RequestRecord) -> dict:
        result, abstained = await self._run_search(req, prompt, params, rec)
        text = ABSTAIN_TEXT if abstained else result.text
        choice = fmt.choice(0, text, openai_finish(result.finish_reason), result.confidence, None,
                            token_ids=result.token_ids, split=not abstained)
        # completion_tokens: every path's tokens, thinking included (no reasoning_tokens: one path's would not add up)
        return fmt.response([choice], usage(len(prompt), result.stats.tokens_generated),
                            search=search_object(result, abstained, params))

    async def _stream_search(self, req, prompt, fmt: Format, params, rec: RequestRecord) -> AsyncIterator[str]:
        rid, created = new_id(fmt.id_prefix), now()
        events = Events()

        async def run() -> None:
            out = await self._run_search(req, prompt, params, rec, on_event=lambda ev: events.put("event", ev))
            events.put("final", out)

        task = events.produce(run())
        try:
            yield sse(fmt.chunk(rid, created, fmt.delta_choice(0, first=True)))
            while True:
                kind, payload = await events.next()
                if kind == "event":
                    yield sse(fmt.chunk(rid, created, fmt.delta_choice(0, ""), search_event=payload))
                    continue
                result, abstained = payload
                text = ABSTAIN_TEXT if abstained else result.text
                if fmt.reasoning is not None and not abstained:  # the chosen path's thinking, then its answer
                    thought, text = fmt.reasoning.split(result.text, result.token_ids)
                    if thought:
                        yield sse(fmt.chunk(rid, created, fmt.delta_choice(0, reasoning=thought)))
                    text = text or ""
                yield sse(fmt.chunk(rid, created, fmt.delta_choice(0, text)))
                final = fmt.delta_choice(0, finish=openai_finish(result.finish_reason))
                final["confidence"] = result.confidence  # cat-serve extension
                yield sse(fmt.chunk(rid, created, final, search=search_object(result, abstained, params)))
                if req.include_usage():
                    yield sse(fmt.usage_chunk(rid, created, usage(len(prompt), result.stats.tokens_generated)))
                yield sse("[DONE]")
                return
        except Exception as e:  # noqa: BLE001  (the stream has started: the error is its last event)
            yield _error_event(e, rec)
            yield sse("[DONE]")
        finally:
            task.cancel()  # client gone or done: abort every engine request of this search

    # ------------------------------------------------------------------ helpers
    def _structured(self, req, *, chat: bool) -> Structured:
        """The request's response_format/tools (``structured.py``); a 400 where the engine cannot
        constrain its decoding."""
        st = structured.parse(req, chat=chat)
        if st.constraint is not None and not getattr(self.engine, "supports_structured_output", False):
            what = "tool_choice" if st.tool_choice else "response_format"
            raise APIError(400, f"{what} is not supported by the {self.engine.kind} engine; serve with the vLLM "
                                "engine (--engine vllm)", param=what)
        return st

    def _check_model(self, name: str | None) -> None:
        if name is not None and name != self.engine.model_name:
            raise APIError(404, f"The model `{name}` does not exist.", type="NotFoundError",
                           param="model", code="model_not_found")

    def _check_length(self, prompt: list[int]) -> None:
        if not prompt:
            raise APIError(400, "prompt is empty", param="prompt")
        try:
            check_room(prompt, 1, self.engine.max_model_len)
        except PromptTooLongError as e:
            raise to_api_error(e) from e

    def _encode(self, text: str) -> list[int]:
        return list(self.engine.tokenizer.encode(text, add_special_tokens=False))

    def _tok(self, req) -> Callable[[int], str]:
        """How logprobs name a token: its text, or ``token_id:<id>`` (vLLM's return_tokens_as_token_ids)."""
        if req.return_tokens_as_token_ids:
            return lambda token_id: f"token_id:{token_id}"
        return self.token_text

    def token_text(self, token_id: int) -> str:
        if token_id not in self._token_text:
            self._token_text[token_id] = self.engine.tokenizer.decode([token_id])
        return self._token_text[token_id]


def _check_search_fields(req) -> None:
    """OpenAI fields that have no meaning for a search answer a 400 naming them (README, "Request
    semantics under search"); ``n`` > 1 is refused by the request model, response_format and tools by
    ``structured.parse``."""
    s = req.search
    if req.stop_list():
        raise APIError(400, f"stop is not supported with search {s!r}: its paths end at EOS or max_tokens (CaT "
                            f"splits steps at search_params.step_delimiters); use search 'none'", param="stop")
    asked = req.logprobs if isinstance(req, ChatCompletionRequest) else req.logprobs is not None
    if asked:
        raise APIError(400, f"logprobs is not supported with search {s!r}: the answer is one path chosen among "
                            f"many; each path's score is in search.candidates (search_params.return_candidates); "
                            f"use search 'none' for token logprobs", param="logprobs")


def _error_event(e: Exception, rec: RequestRecord) -> str:
    """A stream's last event for ``e`` (the HTTP status is already sent); recorded for the log."""
    err = to_api_error(e)
    rec.error = err.code or err.type
    return sse(err.body())
