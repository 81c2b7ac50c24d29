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


# How a strategy chose the returned path (``SearchResult.selection``, the API's ``search.selection``).
SELECT_VOTE = "vote"  # SC / PC / RPC / DeepConf: the best path of the winning answer cluster
SELECT_BEST_ANSWER = "best_answer"  # CaT: the answered path with the highest cumulative confidence C
# no path held an extractable answer (or answer_format "none"): the path with the best PATH score
# (CaT: C; SC: mean token logprob; PC/RPC: path probability; DeepConf: trace confidence)
SELECT_NO_ANSWER = "no_answer:best_path_score"
SELECT_NO_TEXT = "no_text"  # no path produced any text: empty content, confidence 0
SELECTIONS = (SELECT_VOTE, SELECT_BEST_ANSWER, SELECT_NO_ANSWER, SELECT_NO_TEXT)


@dataclass(frozen=True)
class SearchResult:
    """What every strategy returns; ``answer is None`` means no answer was found.

    Without an answer the result still carries the path with the best path score
    (``selection == SELECT_NO_ANSWER``) whenever some path produced text; ``text == ""`` only
    with ``SELECT_NO_TEXT``.
    """

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
    selection: str = SELECT_VOTE  # one of SELECTIONS
    # what a multi-feature calibration map reads besides the raw score (``VOTE_FEATURES`` for the voting
    # strategies: see ``voting.vote_features``); empty for a strategy that reports none
    features: dict = field(default_factory=dict)

    def calibrated_by(self, score_map: Callable[..., float] | None,
                      no_answer_map: Callable[..., float] | None = None) -> SearchResult:
        """This result with ``confidence = map(raw score)``; a missing map is the identity.

        ``score_map`` applies to an answer's score, ``no_answer_map`` to the path score of a
        ``SELECT_NO_ANSWER`` result (a profile's ``"<strategy>:no_answer"`` map). Always sets
        ``raw_confidence``; ``calibrated`` is True only when a map was applied (the flag that says
        ``confidence`` is still the raw score). A ``SELECT_NO_TEXT`` result is never mapped.
        A map that reads features (``uses_features``, a profile's logistic map) is called with
        ``(raw, self.features)``.
        """
        raw = self.confidence if self.raw_confidence is None else self.raw_confidence
        chosen = score_map if self.answer is not None else no_answer_map if self.selection == SELECT_NO_ANSWER else None
        if chosen is None:
            return replace(self, raw_confidence=raw, calibrated=False)
        value = chosen(raw, self.features) if getattr(chosen, "uses_features", False) else chosen(raw)
        return replace(self, confidence=value, raw_confidence=raw, calibrated=True)
