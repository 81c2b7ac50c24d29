"""From engine output to ``Step``: the one place every engine adapter (vLLM, transformers, TRL's
vLLM server) builds its results, with the rules they share.

* :class:`StepBuilder` collects one sequence's tokens. While it grows, :meth:`StepBuilder.partial`
  hands ``early_stop`` callbacks a Step in O(1): its per-token fields are read-only views of the first
  ``n`` items (:class:`Prefix`), not copies, so streaming L tokens costs O(L), not O(L^2).
  :meth:`StepBuilder.finish` builds the final Step (plain tuples) once.
* :func:`sample_seed`: sample ``j`` of a call uses seed ``seed + j`` (the StepGenerator contract).
* :func:`group_rows`: the flat ``prefix x n`` results of a call as ``result[i][j]``.
* :func:`decode`: token ids -> text, special tokens skipped.
* :func:`left_pad`: token rows -> a left-padded batch and its attention mask (torch).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from cat_serve.search.types import Step

T = TypeVar("T")


def sample_seed(seed: int | None, j: int) -> int | None:
    """The seed of sample ``j`` of a call whose base seed is ``seed`` (None: unseeded)."""
    return None if seed is None else seed + j


def group_rows(flat: Sequence[T], n: int) -> list[list[T]]:
    """``[p0s0, p0s1, p1s0, p1s1]`` with ``n = 2`` -> ``[[p0s0, p0s1], [p1s0, p1s1]]``."""
    return [list(flat[i:i + n]) for i in range(0, len(flat), n)]


def decode(tokenizer, token_ids: Sequence[int]) -> str:
    """The text of ``token_ids`` as every engine reports it (special tokens skipped)."""
    return tokenizer.decode(list(token_ids), skip_special_tokens=True)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int):
    """Token rows -> (ids [B, L], attention mask [B, L]) with every row right-aligned (L = longest row)."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            ids[i, width - len(r):] = torch.tensor(list(r), dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids, mask


class Prefix(Sequence):
    """The first ``n`` items of a list that only ever grows: an O(1) snapshot that never changes.

    Indexing and ``len`` behave as on a tuple of those items; a slice is a tuple."""

    __slots__ = ("_items", "_n")

    def __init__(self, items: list, n: int):
        self._items, self._n = items, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(self._n)
            return tuple(self._items[start:stop:step])
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("index out of range")
        return self._items[i]

    def __iter__(self) -> Iterator:
        return itertools.islice(self._items, self._n)

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(other) == self._n and all(a == b for a, b in zip(self, other))

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __add__(self, other) -> tuple:
        return tuple(self) + tuple(other)

    def __radd__(self, other) -> tuple:
        return tuple(other) + tuple(self)

    def __repr__(self) -> str:
        return f"Prefix({tuple(self)!r})"


class StepBuilder:
    """One sequence's generated tokens, collected one token (or one engine delta) at a time."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.logprobs: list[float] = []
        self.entropies: list[float] = []
        self.tops: list[tuple[tuple[int, float], ...]] = []
        self.text = ""

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, token_id: int, logprob: float, entropy: float, top: tuple[tuple[int, float], ...] = ()) -> None:
        self.ids.append(int(token_id))
        self.logprobs.append(float(logprob))
        self.entropies.append(float(entropy))
        self.tops.append(top)

    def partial(self, text: str | None = None) -> Step:
        """The Step so far (``finish_reason`` None), in O(1): for ``early_stop`` callbacks."""
        n = len(self.ids)
        return Step(token_ids=Prefix(self.ids, n), logprobs=Prefix(self.logprobs, n),
                    entropies=Prefix(self.entropies, n), top_logprobs=Prefix(self.tops, n),
                    text=self.text if text is None else text, finish_reason=None, stop=None)

    def finish(self, reason: str, stop: Any = None, text: str | None = None) -> Step:
        """The final Step; ``stop`` is kept only when it is a stop string (vLLM also reports token ids)."""
        return Step(token_ids=tuple(self.ids), logprobs=tuple(self.logprobs), entropies=tuple(self.entropies),
                    top_logprobs=tuple(self.tops), text=self.text if text is None else text,
                    finish_reason=reason, stop=stop if isinstance(stop, str) else None)
