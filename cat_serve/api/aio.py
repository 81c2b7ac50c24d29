"""Async plumbing of a response: a stream's event queue, and cancelling work when the client leaves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from fastapi import Request

from cat_serve.api.errors import to_api_error
from cat_serve.api.protocol import APIError


class Events:
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
