"""Request -> engine or search strategy -> OpenAI response (JSON or SSE chunks).

One ``Serving`` object per app (kept in ``app.state``). Chat and text completions share every
code path; ``ChatFormat`` / ``TextFormat`` build the JSON where the two formats differ.

Search responses (``search != "none"``) add, beyond the OpenAI schema:
- ``choices[i].confidence`` in [0, 1] (plain requests carry exp(mean token logprob) there);
- a top-level ``search`` object: strategy, params, steps, expanded, pruned, tokens_generated,
  engine_calls, wall_time_s, abstained, answer, raw_confidence (the strategy's own score),
  calibrated (whether a calibration profile mapped it to ``confidence``), candidates when asked.
Streaming a search sends progress chunks first: ordinary chunks with an empty delta and an extra
top-level ``search_event`` object (``{"type": ..., ...}``), then the chosen text as one content delta,
then a chunk with ``finish_reason``, ``confidence`` and ``search``, then usage (if asked), then [DONE].

Errors: every exception on the way to a response goes through :func:`to_api_error`, so one cause
has one body wherever it happens (before the engine, inside it, during a stream).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

from fastapi import Request

from cat_serve.api.protocol import (
    NO_SEARCH,
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    new_id,
    now,
)
from cat_serve.engine.base import Engine, PromptTooLongError, chat_prompt_ids, check_room
from cat_serve.engine.output import sample_seed
from cat_serve.search.confidence import path_probability
from cat_serve.search.types import LENGTH, SearchResult, Step

ABSTAIN_TEXT = "I am not confident enough to answer this."  # returned when search abstains


def openai_finish(reason: str | None) -> str:
    """An engine or search finish reason as OpenAI's: ``length`` when cut at max_tokens, else ``stop``."""
    return "length" if reason == LENGTH else "stop"


def to_api_error(e: BaseException) -> APIError:
    """THE mapping of an exception to the error the client sees."""
    if isinstance(e, APIError):
        return e
    if isinstance(e, PromptTooLongError):
        return APIError(400, str(e), param="messages", code="context_length_exceeded")
    return APIError(500, f"engine error: {e}", type="server_error")


def sse(obj: dict | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class Serving:
    def __init__(self, engine: Engine, default_max_tokens: int, calibration=None):
        self.engine = engine
        self.default_max_tokens = default_max_tokens
        self.calibration = calibration  # a CalibrationProfile (cat_serve/calibration.py) or None
        self.model_fingerprint: str | None = None  # calibration.model_fingerprint of the served weights
        self._token_text: dict[int, str] = {}

    # ------------------------------------------------------------------ entry points
    async def chat(self, req: ChatCompletionRequest, request: Request):
        self._check_model(req.model)
        messages = [m.as_template_dict() for m in req.messages]
        try:
            prompt = chat_prompt_ids(self.engine.tokenizer, messages)
        except Exception as e:  # a template that rejects this conversation (e.g. role order)
            raise APIError(400, f"chat template failed: {e}", param="messages") from e
        fmt = ChatFormat(self.engine.model_name, self._tok(req), top_n=req.requested_top_logprobs(),
                         want_logprobs=bool(req.logprobs))
        return await self._serve(req, [prompt], fmt, request)

    async def completion(self, req: CompletionRequest, request: Request):
        self._check_model(req.model)
        prompts = [p if isinstance(p, list) else self._encode(p) for p in req.prompts()]
        for p in prompts:
            if any(t < 0 or t >= self.engine.vocab_size for t in p):
                raise APIError(400, "prompt token ids out of vocabulary range", param="prompt")
        fmt = TextFormat(self.engine.model_name, self._tok(req), top_n=req.requested_top_logprobs(),
                         want_logprobs=req.logprobs is not None)
        return await self._serve(req, prompts, fmt, request)

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
    async def _serve(self, req, prompts: list[list[int]], fmt: Format, request: Request):
        for p in prompts:
            self._check_length(p)
        if req.search != NO_SEARCH:
            search = self._parse_search(req)
            if req.stream:
                return self._stream_search(req, prompts[0], fmt, search)
            return await until_disconnect(request, self._search(req, prompts[0], fmt, search))
        if req.stream:
            return self._stream_plain(req, prompts, fmt)
        return await until_disconnect(request, self._plain(req, prompts, fmt))

    # ------------------------------------------------------------------ plain generation
    async def _plain(self, req, prompts, fmt: Format) -> dict:
        params = req.gen_params(self.default_max_tokens)
        results = await asyncio.gather(*(self.engine.extend([p], req.n, params) for p in prompts))
        choices, completion_tokens = [], 0
        for i, steps in enumerate(results):
            for j, step in enumerate(steps[0]):
                completion_tokens += step.num_tokens
                choices.append(fmt.choice(i * req.n + j, step.text, openai_finish(step.finish_reason),
                                          path_probability(step.logprobs), fmt.logprobs(step)))
        return fmt.response(choices, usage(sum(map(len, prompts)), completion_tokens))

    async def _stream_plain(self, req, prompts, fmt: Format) -> AsyncIterator[str]:
        params = req.gen_params(self.default_max_tokens)
        rid, created = new_id(fmt.id_prefix), now()
        events = _Events()
        holdback = max((len(s) for s in params.stop), default=1) - 1

        async def one(index: int, prompt: list[int]) -> None:
            seeded = replace(params, seed=sample_seed(params.seed, index % req.n))  # as extend(n) would seed it
            sent = {"chars": 0, "tokens": 0}

            def on_token(partial: Step) -> bool:
                events.put("delta", (index, partial, sent))
                return False

            step = (await self.engine.extend([prompt], 1, seeded, early_stop=on_token))[0][0]
            events.put("final", (index, step, sent))

        n_streams = len(prompts) * req.n
        tasks = [events.produce(one(i * req.n + j, p)) for i, p in enumerate(prompts) for j in range(req.n)]
        done, completion_tokens = 0, 0
        try:
            for index in range(n_streams):
                yield sse(fmt.chunk(rid, created, fmt.delta_choice(index, first=True)))
            while done < n_streams:
                kind, (index, step, sent) = await events.next()
                text = step.text if kind == "final" else _safe_prefix(step.text, holdback)
                delta_text = text[sent["chars"]:] if len(text) > sent["chars"] else ""
                new_tokens = step.num_tokens - sent["tokens"]
                lp = fmt.logprobs(step, start=sent["tokens"]) if new_tokens else None
                if delta_text or lp:
                    yield sse(fmt.chunk(rid, created, fmt.delta_choice(index, delta_text, logprobs=lp)))
                sent["chars"] = max(sent["chars"], len(text))
                sent["tokens"] = step.num_tokens
                if kind == "final":
                    done += 1
                    completion_tokens += step.num_tokens
                    final = fmt.delta_choice(index, finish=openai_finish(step.finish_reason))
                    final["confidence"] = path_probability(step.logprobs)  # cat-serve extension
                    yield sse(fmt.chunk(rid, created, final))
            if req.include_usage():
                yield sse(fmt.usage_chunk(rid, created, usage(sum(map(len, prompts)), completion_tokens)))
            yield sse("[DONE]")
        except Exception as e:  # noqa: BLE001  (the stream has started: the error is its last event)
            yield sse(to_api_error(e).body())
            yield sse("[DONE]")
        finally:
            for t in tasks:
                t.cancel()

    # ------------------------------------------------------------------ search
    def _parse_search(self, req):
        from cat_serve.search import registry
        from cat_serve.search.params import SearchParamsError

        try:
            return registry.parse_params(req.search, req.search_params, req.search_defaults(), self.calibration)
        except SearchParamsError as e:
            raise APIError(400, str(e), param="search_params" if req.search in registry.available() else "search") from e

    async def _run_search(self, req, prompt, params, on_event=None) -> tuple[SearchResult, bool]:
        from cat_serve.search import registry

        return await registry.run_search(req.search, self.engine, prompt, params, on_event=on_event,
                                         profile=self.calibration)

    async def _search(self, req, prompt, fmt: Format, params) -> dict:
        result, abstained = await self._run_search(req, prompt, params)
        text = ABSTAIN_TEXT if abstained else result.text
        choice = fmt.choice(0, text, openai_finish(result.finish_reason), result.confidence, None)
        return fmt.response([choice], usage(len(prompt), result.stats.tokens_generated),
                            search=search_object(result, abstained, params))

    async def _stream_search(self, req, prompt, fmt: Format, params) -> AsyncIterator[str]:
        rid, created = new_id(fmt.id_prefix), now()
        events = _Events()

        async def run() -> None:
            out = await self._run_search(req, prompt, params, on_event=lambda ev: events.put("event", ev))
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
                yield sse(fmt.chunk(rid, created, fmt.delta_choice(0, text)))
                final = fmt.delta_choice(0, finish=openai_finish(result.finish_reason))
                final["confidence"] = result.confidence  # cat-serve extension
                yield sse(fmt.chunk(rid, created, final, search=search_object(result, abstained, params)))
                if req.include_usage():
                    yield sse(fmt.usage_chunk(rid, created, usage(len(prompt), result.stats.tokens_generated)))
                yield sse("[DONE]")
                return
        except Exception as e:  # noqa: BLE001  (the stream has started: the error is its last event)
            yield sse(to_api_error(e).body())
            yield sse("[DONE]")
        finally:
            task.cancel()  # client gone or done: abort every engine request of this search

    # ------------------------------------------------------------------ helpers
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


# ---------------------------------------------------------------------- response builders
class Format:
    """The envelope shared by both formats; subclasses build the choices."""

    id_prefix = ""
    obj = ""
    chunk_obj = ""

    def __init__(self, model: str, tok: Callable[[int], str], *, top_n: int, want_logprobs: bool):
        self.model, self.tok, self.top_n, self.want_logprobs = model, tok, top_n, want_logprobs

    def response(self, choices: list[dict], usage: dict, *, search: dict | None = None) -> dict:
        out = {"id": new_id(self.id_prefix), "object": self.obj, "created": now(), "model": self.model,
               "choices": choices, "usage": usage}
        if search is not None:
            out["search"] = search  # cat-serve extension
        return out

    def chunk(self, rid: str, created: int, choice: dict, *, search: dict | None = None,
              search_event: dict | None = None) -> dict:
        out = {"id": rid, "object": self.chunk_obj, "created": created, "model": self.model, "choices": [choice]}
        if search is not None:
            out["search"] = search  # cat-serve extension
        if search_event is not None:
            out["search_event"] = search_event  # cat-serve extension
        return out

    def usage_chunk(self, rid: str, created: int, usage: dict) -> dict:
        return {"id": rid, "object": self.chunk_obj, "created": created, "model": self.model, "choices": [],
                "usage": usage}

    def logprobs(self, step: Step, start: int = 0) -> dict | None:
        """The format's logprobs of tokens ``start..`` of ``step``; None when the request did not ask."""
        return self._logprobs(step, start) if self.want_logprobs else None

    # per format
    def choice(self, index: int, text: str, finish: str, confidence: float | None, logprobs: dict | None) -> dict:
        raise NotImplementedError

    def delta_choice(self, index: int, text: str | None = None, *, first: bool = False, finish: str | None = None,
                     logprobs: dict | None = None) -> dict:
        raise NotImplementedError

    def _logprobs(self, step: Step, start: int) -> dict:
        raise NotImplementedError


class ChatFormat(Format):
    id_prefix, obj, chunk_obj = "chatcmpl", "chat.completion", "chat.completion.chunk"

    def choice(self, index, text, finish, confidence, logprobs) -> dict:
        return {"index": index, "message": {"role": "assistant", "content": text}, "logprobs": logprobs,
                "finish_reason": finish, "confidence": confidence}

    def delta_choice(self, index, text=None, *, first=False, finish=None, logprobs=None) -> dict:
        delta = {"role": "assistant", "content": ""} if first else {} if text is None else {"content": text}
        return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}

    def _logprobs(self, step: Step, start: int) -> dict:
        entries = []
        for pos in range(start, step.num_tokens):
            t = self.tok(step.token_ids[pos])
            tops = step.top_logprobs[pos][:self.top_n] if pos < len(step.top_logprobs) else ()
            entries.append({"token": t, "logprob": step.logprobs[pos], "bytes": list(t.encode()),
                            "top_logprobs": [{"token": self.tok(i), "logprob": lp,
                                              "bytes": list(self.tok(i).encode())} for i, lp in tops]})
        return {"content": entries}


class TextFormat(Format):
    id_prefix, obj, chunk_obj = "cmpl", "text_completion", "text_completion"

    def choice(self, index, text, finish, confidence, logprobs) -> dict:
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish,
                "confidence": confidence}

    def delta_choice(self, index, text=None, *, first=False, finish=None, logprobs=None) -> dict:
        return {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": finish}

    def _logprobs(self, step: Step, start: int) -> dict:
        tokens = [self.tok(t) for t in step.token_ids[start:]]
        offsets, off = [], 0
        for t in tokens:
            offsets.append(off)
            off += len(t)
        tops = [{self.tok(i): lp for i, lp in step.top_logprobs[p][:self.top_n]}
                for p in range(start, min(step.num_tokens, len(step.top_logprobs)))]
        return {"tokens": tokens, "token_logprobs": list(step.logprobs[start:]),
                "top_logprobs": tops, "text_offset": offsets}


def search_object(result: SearchResult, abstained: bool, params) -> dict:
    st = result.stats
    out: dict[str, Any] = {
        "strategy": st.strategy, "params": st.params, "steps": st.steps, "expanded": st.expanded,
        "pruned": st.pruned, "tokens_generated": st.tokens_generated, "engine_calls": st.engine_calls,
        "wall_time_s": round(st.wall_time_s, 4), "abstained": abstained, "answer": result.answer,
        "raw_confidence": result.raw_confidence, "calibrated": result.calibrated,
    }
    if getattr(params, "return_candidates", False):
        out["candidates"] = [{"text": c.text, "answer": c.answer, "score": c.score, "steps": c.steps,
                              "finished": c.finished,
                              **({"step_confidences": c.meta["step_confidences"]}
                                 if "step_confidences" in c.meta else {}),
                              **({"multiplicity": c.meta["multiplicity"]}  # CaT dedup: copies it stands for
                                 if c.meta.get("multiplicity", 1) != 1 else {})} for c in result.candidates]
    return out


def _safe_prefix(text: str, holdback: int) -> str:
    """Text that can be sent now: hold back what could still become a stop string or a split char."""
    if holdback > 0:
        text = text[:-holdback] if len(text) > holdback else ""
    return text.rstrip("\ufffd")


class _Events:
    """The queue between a stream's producer tasks and its SSE loop.

    A producer that fails puts its exception in the queue, so the loop re-raises it at once
    instead of polling the tasks."""

    def __init__(self):
        self._queue: asyncio.Queue = asyncio.Queue()

    def put(self, kind: str, payload) -> None:
        self._queue.put_nowait((kind, payload))

    def produce(self, work: Awaitable) -> asyncio.Task:
        async def guarded():
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001  (handed to the consumer, which raises it)
                self.put("error", e)

        return asyncio.create_task(guarded())

    async def next(self) -> tuple[str, Any]:
        kind, payload = await self._queue.get()
        if kind == "error":
            raise payload
        return kind, payload


async def until_disconnect(request: Request, work: Awaitable):
    """Run ``work`` while watching ``request.receive()``; cancel it (aborting its engine requests)
    as soon as the client disconnects. The same race as vLLM's ``with_cancellation``."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            try:
                return task.result()
            except Exception as e:
                raise to_api_error(e) from e
        task.cancel()
        raise APIError(499, "client disconnected", type="client_closed_request")
    finally:
        for t in (task, watcher):
            if not t.done():
                t.cancel()
