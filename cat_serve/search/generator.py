"""The one interface between search strategies and engines."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from cat_serve.search.types import GenParams, Step

# Called with the partial Step generated so far (after every new token) for one sequence;
# returning True stops that sequence now: its Step comes back with finish_reason "aborted".
EarlyStop = Callable[[Step], bool]

# A strategy's progress report to its caller (the API streams each one as a ``search_event``):
# a JSON-able dict with a ``type`` key, e.g. ``{"type": "depth", "depth": 2, ...}``.
OnEvent = Callable[[dict], None]


@runtime_checkable
class StepGenerator(Protocol):
    async def extend(
        self,
        prefixes: Sequence[Sequence[int]],
        n: int,
        params: GenParams,
        *,
        early_stop: EarlyStop | None = None,
    ) -> list[list[Step]]:
        """Sample ``n`` continuations of every token-id prefix, all in one batch.

        Returns ``result[i][j]``: the j-th continuation of ``prefixes[i]``.
        If the awaiting task is cancelled, every request still in flight is aborted in the engine.
        With ``params.seed`` set, continuation j uses seed ``seed + j`` (reproducible, distinct).
        """
        ...

    def decode(self, token_ids: Sequence[int]) -> str:
        """Detokenise (used for texts of multi-step paths)."""
        ...
