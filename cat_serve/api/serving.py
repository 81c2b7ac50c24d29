"""Request -> engine or search strategy -> OpenAI response (JSON or SSE chunks).

One ``Serving`` object per app (kept in ``app.state``). Chat and text completions share every
code path; a ``_Format`` supplies the few places where their JSON differs.

Search responses (``search != "none"``) add, beyond the OpenAI schema:
- ``choices[i].confidence`` in [0, 1] (plain requests carry exp(mean token logprob) there);
- a top-level ``search`` object: strategy, params, steps, expanded, pruned, tokens_generated,
  engine_calls, wall_time_s, abstained, answer (and candidates when asked for).
Streaming a search sends progress chunks first: ordinary chunks with an empty delta and an extra
top-level ``search_event`` object (``{"type": ..., ...}``), then the chosen text as one content delta,
then a chunk with ``finish_reason``, ``confidence`` and ``search``, then usage (if asked), then [DONE].
"""

from __future__ import annotations

import asyncio
import json
import math
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
from cat_serve.engine.base import Engine, PromptTooLongError, chat_prompt_ids
from cat_serve.search.types import ABORTED, LENGTH, Step

ABSTAIN_TEXT = "I am not confident enough to answer this."  # returned when search abstains


def path_confidence(step: Step) -> float | None:
    """exp(mean token logprob): the per-token geometric-mean probability of the completion."""
    lps = [lp for lp in step.logprobs if math.isfinite(lp)]
    return math.exp(sum(lps) / len(lps)) if lps else None


def openai_finish(reason: str | None) -> str:
    return "length" if reason == LENGTH else "stop"


def sse(obj: dict | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


class Serving:
    def __init__(self, engine: Engine, default_max_tokens: int):
        self.engine = engine
        self.default_max_tokens = default_max_tokens
        self._token_text: dict[int, str] = {}

    # ------------------------------------------------------------------ entry points
    async def chat(self, req: ChatCompletionRequest, request: Request):
        self._check_model(req.model)
        messages = [m.as_template_dict() for m in req.messages]
        try:
            prompt = chat_prompt_ids(self.engine.tokenizer, messages)
        except Exception as e:  # a template that rejects this conversation (e.g. role order)
            raise APIError(400, f"chat template failed: {e}", param="messages") from e
        return await self._serve(req, [prompt], _ChatFormat(self, req.return_tokens_as_token_ids), request)

    async def completion(self, req: CompletionRequest, request: Request):
        self._check_model(req.model)
        prompts = [p if isinstance(p, list) else self._encode(p) for p in req.prompts()]
        for p in prompts:
            if any(t < 0 or t >= self.engine.vocab_size for t in p):
                raise APIError(400, "prompt token ids out of vocabulary range", param="prompt")
        return await self._serve(req, prompts, _TextFormat(self, req.return_tokens_as_token_ids), request)

    def models(self) -> dict:
        return {
            "object": "list",
            "data": [{"id": self.engine.model_name, "object": "model", "created": now(),
                      "owned_by": "cat-serve", "max_model_len": self.engine.max_model_len}],
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
    async def _serve(self, req, prompts: list[list[int]], fmt: _Format, request: Request):
        for p in prompts:
            self._check_length(p)
        if req.search != NO_SEARCH:
            search = self._parse_search(req)
            if req.stream:
                return self._stream_search(req, prompts[0], fmt, search)
            return await _until_disconnect(request, self._search(req, prompts[0], fmt, search))
        if req.stream:
            return self._stream_plain(req, prompts, fmt)
        return await _until_disconnect(request, self._plain(req, prompts, fmt))

    # ------------------------------------------------------------------ plain generation
    async def _plain(self, req, prompts, fmt: _Format) -> dict:
        params = req.gen_params(self.default_max_tokens)
        want = fmt.wants_logprobs(req)
        try:
            results = await asyncio.gather(*(self.engine.extend([p], req.n, params) for p in prompts))
        except PromptTooLongError as e:
            raise _as_api_error(e) from e
        choices, completion_tokens = [], 0
        for i, steps in enumerate(results):
            for j, step in enumerate(steps[0]):
                completion_tokens += step.num_tokens
                choices.append(fmt.choice(i * req.n + j, step, params.top_logprobs, want))
        return fmt.response(choices, _usage(sum(map(len, prompts)), completion_tokens))

    async def _stream_plain(self, req, prompts, fmt: _Format) -> AsyncIterator[str]:
        params = req.gen_params(self.default_max_tokens)
        want = fmt.wants_logprobs(req)
        rid, created = new_id(fmt.id_prefix), now()
        queue: asyncio.Queue = asyncio.Queue()
        holdback = max((len(s) for s in params.stop), default=1) - 1

        async def one(index: int, prompt: list[int]) -> None:
            seeded = params if params.seed is None else replace(params, seed=params.seed + index % req.n)
            sent = {"chars": 0, "tokens": 0}

            def on_token(partial: Step) -> bool:
                queue.put_nowait(("delta", index, partial, sent))
                return False

            step = (await self.engine.extend([prompt], 1, seeded, early_stop=on_token))[0][0]
            queue.put_nowait(("final", index, step, sent))

        tasks = [asyncio.create_task(one(i * req.n + j, p)) for i, p in enumerate(prompts) for j in range(req.n)]
        done, completion_tokens = 0, 0
        try:
            for t in range(len(tasks)):
                yield sse(fmt.chunk(rid, created, t, fmt.first_delta(), None))
            while done < len(tasks):
                kind, index, step, sent = await _next_event(queue, tasks)
                text = step.text if kind == "final" else _safe_prefix(step.text, holdback)
                delta_text = text[sent["chars"]:] if len(text) > sent["chars"] else ""
                new_tokens = step.num_tokens - sent["tokens"]
                lp = fmt.logprobs(step, params.top_logprobs, start=sent["tokens"]) if want and new_tokens else None
                if delta_text or (lp and new_tokens):
                    yield sse(fmt.chunk(rid, created, index, fmt.delta(delta_text), None, logprobs=lp))
                sent["chars"] = max(sent["chars"], len(text))
                sent["tokens"] = step.num_tokens
                if kind == "final":
                    done += 1
                    completion_tokens += step.num_tokens
                    yield sse(fmt.chunk(rid, created, index, {}, openai_finish(step.finish_reason),
                                        confidence=path_confidence(step)))
            if req.include_usage():
                yield sse(fmt.usage_chunk(rid, created, _usage(sum(map(len, prompts)), completion_tokens)))
            yield sse("[DONE]")
        except APIError as e:
            yield sse(e.body())
            yield sse("[DONE]")
        finally:
            for t in tasks:
                t.cancel()

    # ------------------------------------------------------------------ search
    def _parse_search(self, req):
        from cat_serve.search import registry
        from cat_serve.search.params import SearchParamsError

        try:
            return registry.parse_params(req.search, req.search_params, req.search_defaults())
        except SearchParamsError as e:
            raise APIError(400, str(e), param="search_params" if req.search in registry.available() else "search") from e

    async def _run_search(self, req, prompt, params, on_event=None):
        from cat_serve.search import registry

        try:
            return await registry.run_search(req.search, self.engine, prompt, params, on_event=on_event)
        except PromptTooLongError as e:
            raise APIError(400, str(e), param="messages") from e

    async def _search(self, req, prompt, fmt: _Format, params) -> dict:
        result, abstained = await self._run_search(req, prompt, params)
        text = ABSTAIN_TEXT if abstained else result.text
        choice = fmt.search_choice(text, result)
        return fmt.response([choice], _usage(len(prompt), result.stats.tokens_generated),
                            search=_search_object(result, abstained, params))

    async def _stream_search(self, req, prompt, fmt: _Format, params) -> AsyncIterator[str]:
        rid, created = new_id(fmt.id_prefix), now()
        queue: asyncio.Queue = asyncio.Queue()

        async def run() -> None:
            out = await self._run_search(req, prompt, params, on_event=lambda ev: queue.put_nowait(("event", ev)))
            queue.put_nowait(("final", out))

        task = asyncio.create_task(run())
        try:
            yield sse(fmt.chunk(rid, created, 0, fmt.first_delta(), None))
            while True:
                kind, payload = await _next_event(queue, [task])
                if kind == "event":
                    yield sse(fmt.chunk(rid, created, 0, fmt.delta(""), None, search_event=payload))
                    continue
                result, abstained = payload
                text = ABSTAIN_TEXT if abstained else result.text
                yield sse(fmt.chunk(rid, created, 0, fmt.delta(text), None))
                yield sse(fmt.chunk(rid, created, 0, {}, "stop", confidence=result.confidence,
                                    search=_search_object(result, abstained, params)))
                if req.include_usage():
                    yield sse(fmt.usage_chunk(rid, created, _usage(len(prompt), result.stats.tokens_generated)))
                yield sse("[DONE]")
                return
        except APIError as e:
            yield sse(e.body())
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
        if len(prompt) >= self.engine.max_model_len:
            raise APIError(400, f"This model's maximum context length is {self.engine.max_model_len} tokens, "
                                f"but the prompt has {len(prompt)} tokens.", param="messages",
                           code="context_length_exceeded")

    def _encode(self, text: str) -> list[int]:
        return list(self.engine.tokenizer.encode(text, add_special_tokens=False))

    def token_text(self, token_id: int) -> str:
        if token_id not in self._token_text:
            self._token_text[token_id] = self.engine.tokenizer.decode([token_id])
        return self._token_text[token_id]


# ---------------------------------------------------------------------- response formats
class _Format:
    id_prefix = ""
    obj = ""
    chunk_obj = ""

    def __init__(self, serving: Serving, ids_as_tokens: bool = False):
        self.s = serving
        self.ids_as_tokens = ids_as_tokens

    def tok(self, token_id: int) -> str:
        return f"token_id:{token_id}" if self.ids_as_tokens else self.s.token_text(token_id)

    def response(self, choices: list[dict], usage: dict, search: dict | None = None) -> dict:
        out = {"id": new_id(self.id_prefix), "object": self.obj, "created": now(),
               "model": self.s.engine.model_name, "choices": choices, "usage": usage}
        if search is not None:
            out["search"] = search  # cat-serve extension
        return out

    def chunk(self, rid, created, index, delta, finish, *, logprobs=None, **extra) -> dict:
        choice = {"index": index, **self.delta_field(delta), "logprobs": logprobs, "finish_reason": finish}
        if "confidence" in extra:
            choice["confidence"] = extra.pop("confidence")  # cat-serve extension
        out = {"id": rid, "object": self.chunk_obj, "created": created, "model": self.s.engine.model_name,
               "choices": [choice]}
        out.update({k: v for k, v in extra.items() if v is not None})  # search / search_event extension
        return out

    def usage_chunk(self, rid, created, usage) -> dict:
        return {"id": rid, "object": self.chunk_obj, "created": created, "model": self.s.engine.model_name,
                "choices": [], "usage": usage}

    def wants_logprobs(self, req) -> bool:
        return False


class _ChatFormat(_Format):
    id_prefix, obj, chunk_obj = "chatcmpl", "chat.completion", "chat.completion.chunk"

    def choice(self, index: int, step: Step, top_n: int, want_logprobs: bool) -> dict:
        return {"index": index, "message": {"role": "assistant", "content": step.text},
                "logprobs": self.logprobs(step, top_n) if want_logprobs else None,
                "finish_reason": openai_finish(step.finish_reason), "confidence": path_confidence(step)}

    def search_choice(self, text: str, result) -> dict:
        return {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                "finish_reason": "stop", "confidence": result.confidence}

    def first_delta(self) -> dict:
        return {"role": "assistant", "content": ""}

    def delta(self, text: str) -> dict:
        return {"content": text}

    def delta_field(self, delta: dict) -> dict:
        return {"delta": delta}

    def wants_logprobs(self, req) -> bool:
        return bool(req.logprobs)

    def logprobs(self, step: Step, top_n: int, start: int = 0) -> dict:
        entries = []
        for pos in range(start, step.num_tokens):
            t = self.tok(step.token_ids[pos])
            tops = step.top_logprobs[pos][:top_n] if pos < len(step.top_logprobs) else ()
            entries.append({"token": t, "logprob": step.logprobs[pos], "bytes": list(t.encode()),
                            "top_logprobs": [{"token": self.tok(i), "logprob": lp,
                                              "bytes": list(self.tok(i).encode())} for i, lp in tops]})
        return {"content": entries}


class _TextFormat(_Format):
    id_prefix, obj, chunk_obj = "cmpl", "text_completion", "text_completion"

    def choice(self, index: int, step: Step, top_n: int, want_logprobs: bool) -> dict:
        return {"index": index, "text": step.text,
                "logprobs": self.logprobs(step, top_n) if want_logprobs else None,
                "finish_reason": openai_finish(step.finish_reason), "confidence": path_confidence(step)}

    def search_choice(self, text: str, result) -> dict:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": "stop",
                "confidence": result.confidence}

    def first_delta(self) -> dict:
        return {"text": ""}

    def delta(self, text: str) -> dict:
        return {"text": text}

    def delta_field(self, delta: dict) -> dict:
        return {"text": delta.get("text", "")}

    def wants_logprobs(self, req) -> bool:
        return req.logprobs is not None

    def logprobs(self, step: Step, top_n: int, start: int = 0) -> dict:
        tokens = [self.tok(t) for t in step.token_ids[start:]]
        offsets, off = [], 0
        for t in tokens:
            offsets.append(off)
            off += len(t)
        tops = [{self.tok(i): lp for i, lp in step.top_logprobs[p][:top_n]}
                for p in range(start, min(step.num_tokens, len(step.top_logprobs)))]
        return {"tokens": tokens, "token_logprobs": list(step.logprobs[start:]),
                "top_logprobs": tops, "text_offset": offsets}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _search_object(result, abstained: bool, params) -> dict:
    st = result.stats
    out: dict[str, Any] = {
        "strategy": st.strategy, "params": st.params, "steps": st.steps, "expanded": st.expanded,
        "pruned": st.pruned, "tokens_generated": st.tokens_generated, "engine_calls": st.engine_calls,
        "wall_time_s": round(st.wall_time_s, 4), "abstained": abstained, "answer": result.answer,
    }
    if getattr(params, "return_candidates", False):
        out["candidates"] = [{"text": c.text, "answer": c.answer, "score": c.score, "steps": c.steps,
                              "finished": c.finished} for c in result.candidates]
    return out


def _safe_prefix(text: str, holdback: int) -> str:
    """Text that can be sent now: hold back what could still become a stop string or a split char."""
    if holdback > 0:
        text = text[:-holdback] if len(text) > holdback else ""
    return text.rstrip("\ufffd")


async def _next_event(queue: asyncio.Queue, tasks: list[asyncio.Task]):
    """The next queued event; re-raise a producer's failure instead of waiting forever."""
    while True:
        try:
            return await asyncio.wait_for(queue.get(), timeout=0.5)
        except asyncio.TimeoutError:
            for t in tasks:
                if t.done() and not t.cancelled() and t.exception() is not None:
                    raise _as_api_error(t.exception())


def _as_api_error(e: BaseException) -> APIError:
    if isinstance(e, APIError):
        return e
    if isinstance(e, PromptTooLongError):
        return APIError(400, str(e), param="messages", code="context_length_exceeded")
    return APIError(500, f"engine error: {e}", type="server_error")


async def _until_disconnect(request: Request, work: Awaitable):
    """Run ``work``; cancel it (aborting its engine requests) if the client goes away."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.1)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                raise APIError(499, "client disconnected", type="client_closed_request")
    finally:
        if not task.done():
            task.cancel()
