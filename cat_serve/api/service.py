"""Running cat-serve as a service: one pure-ASGI middleware around the app.

Per request, in this order:
1. request id: an incoming ``X-Request-Id`` (printable, <= 128 chars) or a new one; always returned;
2. API key (optional): ``Authorization: Bearer KEY``, compared in constant time; ``/health`` is open,
   ``/metrics`` too unless ``metrics_auth``; a missing or wrong key gets an OpenAI-shaped 401;
3. body size: more than ``max_body_bytes`` gets a 400 naming the limit (checked on Content-Length and
   on the bytes actually read, so chunked bodies cannot slip past);
4. generation endpoints only: a slot among ``max_concurrent``; up to ``max_queue`` requests wait,
   beyond that a 429 with ``Retry-After``;
5. deadline: the server's ``deadline_s``, or the request's own ``deadline_s`` capped at
   ``max_deadline_s``, covering queueing and generation. On expiry the app's task is cancelled, which
   aborts every engine request of the search; the client gets a 408 (``x-should-retry: false``), or,
   mid-stream, a final error event and ``[DONE]``;
6. shutdown: when the server cancels a request (SIGTERM grace period over), the client gets a 503, or
   mid-stream a final error event and ``[DONE]``;
7. one JSON log line (logger ``cat_serve.requests``) and the Prometheus metrics of the request.

Request caps (n, branches, max_steps, max_tokens x paths) are validation: ``check_limits`` below,
called by the routes, with the rules in ``cat_serve/search/limits.py``.

The middleware reads a request body only for ``deadline_s`` (the deadline covers queueing, before
the app parses anything) and never reads response bodies: ``Serving`` writes strategy, stream,
prompt tokens and the search statistics onto the request's :class:`RequestRecord` (the scope's
``state["record"]``, ``request.state.record`` in a handler), and the error handlers its error.
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field

from cat_serve.api.protocol import APIError
from cat_serve.search.limits import Limits, check_plain, check_search
from cat_serve.search.params import SearchParams

GENERATION_PATHS = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}
_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, no spaces


@dataclass
class RequestRecord:
    """What the log line and the metrics say about one request. ``strategy`` stays "-" for a
    request refused before its body parsed (401, 429, a validation 400)."""

    request_id: str
    method: str
    path: str
    t0: float = field(default_factory=time.monotonic)
    endpoint: str | None = None  # chat | completions for generation requests
    strategy: str = "-"
    stream: bool = False
    status: int | None = None
    tokens: int = 0  # completion tokens of finished engine calls (CountingEngine)
    prompt_tokens: int | None = None
    expanded: int = 0
    pruned: int = 0
    abstained: bool | None = None
    queued_s: float = 0.0
    error: str | None = None  # error code/type sent to the client, mid-stream errors included
    latency_s: float = 0.0

    def log_line(self) -> str:
        out = {"ts": round(time.time(), 3), "request_id": self.request_id, "method": self.method,
               "path": self.path, "status": self.status, "latency_s": round(self.latency_s, 4)}
        if self.endpoint:
            out.update(strategy=self.strategy, stream=self.stream, queued_s=round(self.queued_s, 4),
                       prompt_tokens=self.prompt_tokens, completion_tokens=self.tokens,
                       expanded=self.expanded, pruned=self.pruned, abstained=self.abstained)
        if self.error:
            out["error"] = self.error
        return json.dumps(out)


# The record of the request being served: CountingEngine's callback adds tokens to it. Tasks the
# request creates (searches, engine calls) copy this context, so they count into the same record.
CURRENT: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar("cat_serve_request", default=None)


def count_tokens(n: int) -> None:
    rec = CURRENT.get()
    if rec is not None:
        rec.tokens += n


def limits_of(config) -> Limits:
    return Limits(max_n=config.max_n, max_branches=config.max_branches, max_steps=config.max_steps,
                  max_tokens_paths=config.max_tokens_paths)


def check_limits(req, search: SearchParams | None, limits: Limits, default_max_tokens: int) -> None:
    """Raise :class:`LimitError` (a 400 naming the limit) for a request over the server's caps.

    ``search`` is the request's parsed search params (``Serving.parse_search``), None for a plain
    request: parsed once, with the calibration profile's defaults, and checked here as it will run."""
    if search is None:
        prompts = len(req.prompts()) if hasattr(req, "prompts") else 1
        check_plain(req.n, prompts, req.requested_max_tokens() or default_max_tokens, limits)
    else:
        check_search(search, limits)


def record_of(request) -> RequestRecord:
    """The request's record (the middleware puts it in the ASGI scope's state); a detached one
    when the app runs without the middleware."""
    rec = getattr(request.state, "record", None)
    if rec is None:
        rec = request.state.record = RequestRecord("-", request.method, request.url.path)
    return rec


class Admission:
    """At most ``running`` requests at once; up to ``queue`` more wait (FIFO); the rest are refused."""

    def __init__(self, running: int, queue: int):
        self.limit, self.queue_limit = running, queue
        self._sem = asyncio.Semaphore(running)
        self.waiting = 0
        self.running = 0

    def full(self) -> bool:
        return self._sem.locked() and self.waiting >= self.queue_limit

    async def acquire(self) -> None:
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        self.running += 1

    def release(self) -> None:
        self.running -= 1
        self._sem.release()


def _error_body(e: APIError) -> bytes:
    return json.dumps(e.body()).encode()


def _sse_error(e: APIError) -> bytes:
    return f"data: {json.dumps(e.body())}\n\ndata: [DONE]\n\n".encode()


class ServiceMiddleware:
    def __init__(self, app, *, config, metrics, logger: logging.Logger | None = None):
        self.app = app
        self.config = config
        self.metrics = metrics
        self.log = logger or logging.getLogger("cat_serve.requests")
        self.admission = Admission(config.max_concurrent, config.max_queue)
        self._key = config.api_key.encode() if config.api_key else None

    # ------------------------------------------------------------------ ASGI entry
    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        incoming = headers.get("x-request-id", "")
        rid = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        rec = RequestRecord(rid, scope.get("method", ""), scope.get("path", ""))
        state = scope.setdefault("state", {})
        state["request_id"], state["record"] = rid, rec
        out = _Sender(send, rid, rec)
        token = CURRENT.set(rec)
        try:
            await self._handle(scope, receive, out, headers, rec)
        except BaseException:
            if rec.status is None:
                rec.status = 500
            raise
        finally:
            CURRENT.reset(token)
            rec.latency_s = time.monotonic() - rec.t0
            if rec.endpoint:
                self.metrics.observe(rec)
            self.log.info(rec.log_line())

    async def _handle(self, scope, receive, out: _Sender, headers: dict, rec: RequestRecord):
        path = scope.get("path", "")
        rec.endpoint = GENERATION_PATHS.get(path) if scope.get("method") == "POST" else None
        if not self._authorized(path, headers):
            missing = "authorization" not in headers
            msg = ("You didn't provide an API key. Send it as 'Authorization: Bearer KEY'." if missing
                   else "Incorrect API key provided.")
            return await out.error(APIError(401, msg, code="invalid_api_key"), {"www-authenticate": "Bearer"})
        if scope.get("method") in ("POST", "PUT", "PATCH"):
            body = await self._read_body(receive, headers)
            if body is None:
                limit = self.config.max_body_bytes
                return await out.error(APIError(400, f"request body is larger than this server's limit "
                                                     f"max_body_bytes={limit} (--max-body-bytes)",
                                                code="max_body_bytes_exceeded"))
            receive = _replay(body, receive)
        else:
            body = None
        if rec.endpoint is None:
            return await self.app(scope, receive, out)
        deadline = self._deadline(body)
        if self.admission.full():
            return await out.error(APIError(429, f"server busy: {self.admission.limit} requests running and "
                                                 f"{self.admission.waiting} queued, the limits max_concurrent="
                                                 f"{self.config.max_concurrent} and max_queue={self.config.max_queue}",
                                            type="rate_limit_error", code="server_busy"),
                                   {"retry-after": str(self.config.retry_after_s)})
        await self._run(scope, receive, out, rec, deadline)

    # ------------------------------------------------------------------ steps
    def _authorized(self, path: str, headers: dict) -> bool:
        if self._key is None or path == "/health" or (path == "/metrics" and not self.config.metrics_auth):
            return True
        scheme, _, given = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._key)

    async def _read_body(self, receive, headers: dict) -> bytes | None:
        """The whole body, or None when it is over the limit (by Content-Length or by bytes read)."""
        limit = self.config.max_body_bytes
        try:
            if int(headers.get("content-length", "0")) > limit:
                return None
        except ValueError:
            pass
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                break
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        return b"".join(chunks)

    def _deadline(self, body: bytes | None) -> float:
        """The server's deadline, or the request's own ``deadline_s`` capped at ``max_deadline_s``."""
        deadline = self.config.deadline_s
        try:
            data = json.loads(body) if body else None
        except (ValueError, UnicodeDecodeError):
            data = None  # the app answers the bad body
        d = data.get("deadline_s") if isinstance(data, dict) else None
        if isinstance(d, (int, float)) and not isinstance(d, bool) and d > 0:
            deadline = min(float(d), self.config.max_deadline_s)
        return deadline

    async def _run(self, scope, receive, out: _Sender, rec: RequestRecord, deadline: float):
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        m = self.metrics
        m.queued.inc()
        t_q = time.monotonic()
        acquired = False
        try:
            await asyncio.wait_for(self.admission.acquire(), timeout=deadline)
            acquired = True
        except asyncio.TimeoutError:
            pass
        finally:
            m.queued.dec()
            rec.queued_s = time.monotonic() - t_q
        if not acquired:
            return await out.error(_deadline_error(deadline), {"x-should-retry": "false"})
        m.running.inc()
        task = asyncio.ensure_future(self.app(scope, receive, out))
        try:
            done, _ = await asyncio.wait({task}, timeout=max(0.0, end - loop.time()))
            if task in done:
                return task.result()
            await _cancel(task)
            await out.abort(_deadline_error(deadline), {"x-should-retry": "false"})
        except asyncio.CancelledError:  # the server cancels us: shutdown grace period over
            await _cancel(task)
            await out.abort(APIError(503, "server shutting down", type="server_error", code="shutting_down"))
            raise
        finally:
            m.running.dec()
            self.admission.release()


def _deadline_error(deadline: float) -> APIError:
    return APIError(408, f"request deadline of {deadline:g} s exceeded (deadline_s; server limits --deadline, "
                         f"--max-deadline)", type="timeout_error", code="deadline_exceeded")


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    try:
        await task
    except BaseException:  # noqa: BLE001 (cancelled, or it failed while being cancelled)
        pass


def _replay(body: bytes, receive):
    sent = False

    async def wrapped():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return wrapped


class _Sender:
    """Wraps ``send``: adds X-Request-Id, records the status, can end a response."""

    def __init__(self, send, rid: str, rec: RequestRecord):
        self._send, self.rid, self.rec = send, rid, rec
        self.started = self.finished = False
        self.sse = False

    async def __call__(self, msg):
        if msg["type"] == "http.response.start":
            self.started = True
            self.rec.status = msg["status"]
            hdrs = [(k, v) for k, v in msg.get("headers", []) if k.lower() != b"x-request-id"]
            hdrs.append((b"x-request-id", self.rid.encode()))
            ctype = next((v for k, v in hdrs if k.lower() == b"content-type"), b"")
            self.sse = ctype.startswith(b"text/event-stream")
            msg = {**msg, "headers": hdrs}
        elif msg["type"] == "http.response.body" and not msg.get("more_body", False):
            self.finished = True
        await self._send(msg)

    async def error(self, e: APIError, headers: dict | None = None) -> None:
        self.rec.error = e.code or e.type
        body = _error_body(e)
        hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        hdrs += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        await self({"type": "http.response.start", "status": e.status, "headers": hdrs})
        await self({"type": "http.response.body", "body": body, "more_body": False})

    async def abort(self, e: APIError, headers: dict | None = None) -> None:
        """End the response after its task was cancelled: a whole error, or a last SSE error event."""
        try:
            if not self.started:
                await self.error(e, headers)
            elif not self.finished:
                self.rec.error = e.code or e.type
                if self.sse:
                    self.rec.status = e.status  # metrics/logs: how the request really ended
                await self({"type": "http.response.body", "body": _sse_error(e) if self.sse else b"",
                            "more_body": False})
        except Exception:  # noqa: BLE001 (client already gone)
            pass
