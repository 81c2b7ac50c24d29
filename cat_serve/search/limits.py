"""Server-side caps on how much work one request may ask for (validation, no I/O).

The HTTP layer answers a :class:`LimitError` with an OpenAI-shaped 400 that names the limit and its
command-line flag. "Paths" bounds the tokens a request can generate: ``max_tokens x paths``, where
paths is ``n`` (x prompts) for plain requests and for the sampling strategies, and for CaT the
continuations live at one step: ``width x branches`` (width = ``branches`` in faithful mode, ``beam``
(default ``branches``) in adaptive mode, 1 in stream mode), each path being capped at ``max_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cat_serve.search.params import CaTParams, SearchParams, SearchParamsError


@dataclass(frozen=True)
class Limits:
    max_n: int = 64
    max_branches: int = 16
    max_steps: int = 256
    max_tokens_paths: int = 1 << 18


class LimitError(SearchParamsError):
    """A request over one of the server's :class:`Limits`; ``limit`` names it, ``param`` is the
    request field to name in the 400 (``search_params.n``, ``n``, ``max_tokens``)."""

    def __init__(self, message: str, field: str | None, limit: str, param: str | None = None):
        super().__init__(message, field)
        self.limit = limit
        self.param = param or field


def _over(where: str, value: int, limit_name: str, limit: int, field: str) -> LimitError:
    flag = "--" + limit_name.replace("_", "-")
    param = field if field == "max_tokens" else where  # max_tokens x paths: the request's max_tokens
    return LimitError(f"{where} is {value}, above this server's limit {limit_name}={limit} ({flag})", field,
                      limit_name, param)


def search_paths(params: SearchParams) -> int:
    if isinstance(params, CaTParams):
        width = {"faithful": params.branches, "adaptive": params.beam or params.branches, "stream": 1}[params.mode]
        return width * params.branches
    return int(getattr(params, "n", 1))


def check_search(params: SearchParams, limits: Limits) -> None:
    n = getattr(params, "n", None)
    if n is not None and n > limits.max_n:
        raise _over("search_params.n", n, "max_n", limits.max_n, "n")
    if isinstance(params, CaTParams):
        if params.branches > limits.max_branches:
            raise _over("search_params.branches", params.branches, "max_branches", limits.max_branches, "branches")
        if params.beam is not None and params.beam > limits.max_branches:
            raise _over("search_params.beam", params.beam, "max_branches", limits.max_branches, "beam")
        if params.max_steps > limits.max_steps:
            raise _over("search_params.max_steps", params.max_steps, "max_steps", limits.max_steps, "max_steps")
    paths = search_paths(params)
    if params.max_tokens * paths > limits.max_tokens_paths:
        raise _over(f"max_tokens x paths ({params.max_tokens} x {paths})", params.max_tokens * paths,
                    "max_tokens_paths", limits.max_tokens_paths, "max_tokens")


def check_plain(n: int, prompts: int, max_tokens: int, limits: Limits) -> None:
    if n > limits.max_n:
        raise _over("n", n, "max_n", limits.max_n, "n")
    paths = n * prompts
    if max_tokens * paths > limits.max_tokens_paths:
        raise _over(f"max_tokens x paths ({max_tokens} x {paths})", max_tokens * paths,
                    "max_tokens_paths", limits.max_tokens_paths, "max_tokens")
