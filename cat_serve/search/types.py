"""Frozen value types shared by the search core and the engine adapters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

# finish reasons of one generated segment
STOP = "stop"        # a stop string / step delimiter matched (the segment may continue later)
EOS = "eos"          # the model emitted end-of-sequence: the sequence is complete
LENGTH = "length"    # max_tokens of this call reached
ABORTED = "aborted"  # the caller's early_stop callback cut it


@dataclass(frozen=True)
class StructuredOutput:
    """A decoding constraint (OpenAI ``response_format``, forced tool calls): the engine may only
    produce a JSON value matching ``json_schema`` (the schema as JSON text, so the value stays
    hashable), or any JSON object when ``json_object``. vLLM's ``StructuredOutputsParams``."""

    json_schema: str | None = None
    json_object: bool = False


@dataclass(frozen=True)
class GenParams:
    """Sampling parameters of one engine call (already validated upstream)."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    top_logprobs: int = 20  # k: how many top logprobs per token the engine reports (entropy/DeepConf)
    # keep a matched stop string in Step.text (search needs it to continue a path exactly);
    # the plain OpenAI path sets False, as OpenAI excludes stop strings from the returned text
    include_stop_str: bool = True
    structured: StructuredOutput | None = None  # plain requests only: the search core never sets it


@dataclass(frozen=True)
class Step:
    """One generated continuation segment of one sequence.

    All per-token tuples have the same length as ``token_ids``.
    ``token_ids`` include the tokens that form a matched stop string, so
    ``prefix + token_ids`` is exactly what the model produced and can be extended again.
    """

    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]  # log p(sampled token), raw model distribution
    entropies: tuple[float, ...]  # per-token entropy (nats) of the raw next-token distribution
    # per token: top-k (token_id, logprob) pairs, most likely first (may be empty if k == 0)
    top_logprobs: tuple[tuple[tuple[int, float], ...], ...] = ()
    text: str = ""
    finish_reason: str | None = STOP  # None only in partial steps handed to an early_stop callback
    stop: str | None = None  # the stop string that matched, when finish_reason == STOP

    @property
    def finished(self) -> bool:
        """True when the sequence is complete (EOS); a STOP/LENGTH segment can be extended."""
        return self.finish_reason == EOS

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def sum_logprob(self) -> float:
        return float(sum(self.logprobs))


@dataclass(frozen=True)
class Candidate:
    """A complete or partial reasoning path produced by a strategy."""

    text: str
    token_ids: tuple[int, ...]
    answer: str | None
    score: float  # strategy-specific score (e.g. cumulative confidence, path probability)
    steps: int = 0
    finished: bool = False
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SearchStats:
    strategy: str
    params: dict
    steps: int = 0  # search depth reached (CaT) or 1 for sampling strategies
    expanded: int = 0  # candidate steps/paths generated
    pruned: int = 0  # candidates dropped by the strategy
    tokens_generated: int = 0  # ALL tokens produced by the engine for this search
    engine_calls: int = 0
    wall_time_s: float = 0.0


@dataclass(frozen=True)
class SearchResult:
    """What every strategy returns; ``answer is None`` means no answer was found."""

    text: str  # the chosen path's full completion text ("" if none)
    token_ids: tuple[int, ...]
    answer: str | None
    confidence: float  # in [0, 1]
    stats: SearchStats
    candidates: tuple[Candidate, ...] = ()
    finish_reason: str = "stop"
    # set by a calibration profile (cat_serve/calibration.py): ``confidence`` is then P(correct)
    # and the strategy's own score moves here; None until calibration has looked at the result
    raw_confidence: float | None = None
    calibrated: bool = False

    def calibrated_by(self, score_map: Callable[[float], float] | None) -> SearchResult:
        """This result with ``confidence = score_map(raw score)``; None is the identity.

        Always sets ``raw_confidence``; ``calibrated`` is True only when a map was applied, which it
        is not for a result without an answer (its confidence stays 0).
        """
        raw = self.confidence if self.raw_confidence is None else self.raw_confidence
        if score_map is None or self.answer is None:
            return replace(self, raw_confidence=raw, calibrated=False)
        return replace(self, confidence=score_map(raw), raw_confidence=raw, calibrated=True)
