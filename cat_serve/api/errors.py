"""Every exception -> the OpenAI-shaped error the client sees, in ONE function.

One cause has one body wherever it happens: in request validation, in the route, inside the
engine, or during a stream (whose last event is then this body). The middleware's own refusals
(401, 429, 408, body too large, shutdown) are built as :class:`APIError` where they happen.
"""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError

from cat_serve.api.protocol import APIError
from cat_serve.engine.base import PromptTooLongError
from cat_serve.search.limits import LimitError
from cat_serve.search.params import SearchParamsError

# The exceptions that are the client's fault (4xx): the app registers one handler for them.
CLIENT_ERRORS = (APIError, RequestValidationError, SearchParamsError, PromptTooLongError)


def to_api_error(e: BaseException) -> APIError:
    """THE mapping of an exception to the error the client sees (anything unknown is a 500)."""
    if isinstance(e, APIError):
        return e
    if isinstance(e, RequestValidationError):
        return _validation_error(e)
    if isinstance(e, PromptTooLongError):
        return APIError(400, str(e), param="messages", code="context_length_exceeded")
    if isinstance(e, LimitError):  # a SearchParamsError too: test it first
        return APIError(400, str(e), param=e.param, code=f"{e.limit}_exceeded")
    if isinstance(e, SearchParamsError):
        return APIError(400, str(e), param="search" if e.field == "search" else "search_params")
    return APIError(500, f"internal error: {type(e).__name__}: {e}", type="server_error")


def _validation_error(e: RequestValidationError) -> APIError:
    err = e.errors()[0] if e.errors() else {}
    loc = [str(x) for x in err.get("loc", ()) if x != "body"]
    if err.get("type") == "json_invalid":
        return APIError(400, "We could not parse the JSON body of your request.", param=None)
    msg = err.get("msg", "invalid request").removeprefix("Value error, ")
    param = ".".join(loc) or None
    return APIError(400, f"{param}: {msg}" if param else msg, param=param)
