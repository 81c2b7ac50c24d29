"""Thin HTTP routes: parse, hand to ``app.state.serving``, wrap streams as SSE."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from cat_serve.api.protocol import ChatCompletionRequest, CompletionRequest
from cat_serve.api.service import check_limits

router = APIRouter()


def _respond(result):
    if isinstance(result, AsyncIterator):
        return StreamingResponse(result, media_type="text/event-stream")
    return JSONResponse(result)


@router.get("/health")
async def health(request: Request):
    return request.app.state.serving.health()


@router.get("/v1/models")
async def models(request: Request):
    return request.app.state.serving.models()


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    check_limits(body, request.app.state.limits, request.app.state.serving.default_max_tokens)
    return _respond(await request.app.state.serving.chat(body, request))


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request):
    check_limits(body, request.app.state.limits, request.app.state.serving.default_max_tokens)
    return _respond(await request.app.state.serving.completion(body, request))
