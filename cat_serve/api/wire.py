"""The OpenAI wire format: response and chunk envelopes, choices, logprobs, SSE lines, usage.

``ChatFormat`` and ``TextFormat`` build the JSON where ``/v1/chat/completions`` and
``/v1/completions`` differ; everything else is shared. cat-serve's extensions are marked where
they are added: ``choices[i].confidence``, the top-level ``search`` object (:func:`search_object`)
and, in streams, ``search_event``. Pure functions of their inputs: no engine, no request.

With ``--reasoning-parser`` a ``ChatFormat`` carries the request's ``RequestReasoning``
(``cat_serve/api/reasoning.py``): a message's text is split into ``reasoning`` (also sent as
``reasoning_content``) and ``content`` as ``vllm serve`` splits it, and usage gains
``completion_tokens_details.reasoning_tokens``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from cat_serve.api.protocol import new_id, now
from cat_serve.api.reasoning import RequestReasoning, reasoning_fields
from cat_serve.search.types import LENGTH, SearchResult, Step


def openai_finish(reason: str | None) -> str:
    """An engine or search finish reason as OpenAI's: ``length`` when cut at max_tokens, else ``stop``."""
    return "length" if reason == LENGTH else "stop"


def sse(obj: dict | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


def usage(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int | None = None) -> dict:
    """OpenAI's usage; ``completion_tokens`` counts every generated token, thinking included, and
    ``reasoning_tokens`` (with a reasoning parser, as vLLM reports it) says how many of them were thinking."""
    out = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
           "total_tokens": prompt_tokens + completion_tokens}
    if reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return out


class Format:
    """The envelope shared by both formats; subclasses build the choices."""

    id_prefix = ""
    obj = ""
    chunk_obj = ""
    reasoning: RequestReasoning | None = None  # chat only: the request's reasoning parser

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

    def reasoning_tokens(self, token_ids: Sequence[Sequence[int]]) -> int | None:
        """Thinking tokens among these completions' tokens; None without a reasoning parser."""
        return None if self.reasoning is None else sum(self.reasoning.count(ids) for ids in token_ids)

    # per format. tool_calls (chat only): the message's calls, None when the request forces none;
    # token_ids: the text's tokens (the reasoning parser may read them); split=False: text that is not
    # the model's (an abstention) goes to content whole
    def choice(self, index: int, text: str, finish: str, confidence: float | None, logprobs: dict | None, *,
               tool_calls: list[dict] | None = None, token_ids: Sequence[int] = (), split: bool = True) -> dict:
        raise NotImplementedError

    def delta_choice(self, index: int, text: str | None = None, *, first: bool = False, finish: str | None = None,
                     logprobs: dict | None = None, tool_calls: list[dict] | None = None,
                     reasoning: str | None = None) -> dict:
        raise NotImplementedError

    def _logprobs(self, step: Step, start: int) -> dict:
        raise NotImplementedError


class ChatFormat(Format):
    id_prefix, obj, chunk_obj = "chatcmpl", "chat.completion", "chat.completion.chunk"

    def __init__(self, *args, reasoning: RequestReasoning | None = None, **kw):
        super().__init__(*args, **kw)
        self.reasoning = reasoning

    def choice(self, index, text, finish, confidence, logprobs, *, tool_calls=None, token_ids=(), split=True) -> dict:
        message = {"role": "assistant", "content": text}
        if tool_calls is not None:  # vLLM: the text became the calls, content ""
            message = {"role": "assistant", "content": "", "tool_calls": tool_calls}
        elif self.reasoning is not None:  # as vllm serve: thinking in reasoning, the answer in content
            reasoning, content = self.reasoning.split(text, token_ids) if split else (None, text)
            message = {"role": "assistant", "content": content, **reasoning_fields(reasoning)}
        return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish,
                "confidence": confidence}

    def delta_choice(self, index, text=None, *, first=False, finish=None, logprobs=None, tool_calls=None,
                     reasoning=None) -> dict:
        delta = {"role": "assistant", "content": ""} if first else {} if text is None else {"content": text}
        if tool_calls:  # streamed whole, each call with its index (OpenAI's delta shape)
            delta = {"tool_calls": [{"index": i, **call} for i, call in enumerate(tool_calls)]}
        elif reasoning:
            delta = {**reasoning_fields(reasoning), **delta}
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

    def choice(self, index, text, finish, confidence, logprobs, *, tool_calls=None, token_ids=(), split=True) -> dict:
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish,
                "confidence": confidence}

    def delta_choice(self, index, text=None, *, first=False, finish=None, logprobs=None, tool_calls=None,
                     reasoning=None) -> dict:
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
        "selection": result.selection,
        "raw_confidence": result.raw_confidence, "calibrated": result.calibrated,
    }
    if result.features:  # what a multi-feature calibration map reads (voting strategies: voting.VOTE_FEATURES)
        out["features"] = dict(result.features)
    if getattr(params, "return_candidates", False):
        out["candidates"] = [{"text": c.text, "answer": c.answer, "score": c.score, "steps": c.steps,
                              "finished": c.finished,
                              **({"step_confidences": c.meta["step_confidences"]}
                                 if "step_confidences" in c.meta else {}),
                              **({"multiplicity": c.meta["multiplicity"]}  # CaT dedup: copies it stands for
                                 if c.meta.get("multiplicity", 1) != 1 else {})} for c in result.candidates]
    return out


def safe_prefix(text: str, holdback: int) -> str:
    """Text that can be sent now: hold back what could still become a stop string or a split char."""
    if holdback > 0:
        text = text[:-holdback] if len(text) > holdback else ""
    return text.rstrip("\ufffd")
