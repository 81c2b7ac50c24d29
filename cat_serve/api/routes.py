"""Thin HTTP routes: parse, check the limits, hand to ``app.state.serving``, wrap streams as SSE."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from cat_serve.api.protocol import ChatCompletionRequest, CompletionRequest
from cat_serve.api.service import check_limits, record_of

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


async def _generate(request: Request, req, kind: str):
    """Parse the search params once (with the calibration profile's defaults), check them against
    the server's limits, then serve exactly that object. Errors raised here reach the app's
    exception handlers (``errors.to_api_error``)."""
    serving, rec = request.app.state.serving, record_of(request)
    search = serving.parse_search(req, rec)
    check_limits(req, search, request.app.state.limits, serving.default_max_tokens)
    serve = serving.chat if kind == "chat" else serving.completion
    return _respond(await serve(req, search, request, rec))


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    return await _generate(request, body, "chat")


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request):
    return await _generate(request, body, "completions")
