"""An engine wrapper that reports the tokens of every finished engine call (for logs and metrics).

Everything but ``extend`` is the wrapped engine's own attribute. Calls that are cancelled (client
gone, deadline, pruned branch) return nothing and are not counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cat_serve.search.types import GenParams, Step


class CountingEngine:
    def __init__(self, engine, on_tokens: Callable[[int], None]):
        self._engine = engine
        self._on_tokens = on_tokens

    def __getattr__(self, name):
        return getattr(self._engine, name)

    @property
    def wrapped(self):
        return self._engine

    async def extend(self, prefixes: Sequence[Sequence[int]], n: int, params: GenParams, **kw) -> list[list[Step]]:
        rows = await self._engine.extend(prefixes, n, params, **kw)
        self._on_tokens(sum(step.num_tokens for row in rows for step in row))
        return rows
