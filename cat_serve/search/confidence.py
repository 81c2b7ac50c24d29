"""Token, step and path confidences (pure numpy).

Normalisations (all documented here once; strategies only call these functions):

* step confidence, ``aggregation="entropy"`` (CaT default):
  ``c = exp(-mean_i H_i)`` with ``H_i`` the entropy (nats) of the next-token distribution at token i.
  ``c`` lies in (0, 1]; 1 means every token was certain. Length-normalised, so long steps are not
  penalised for their length alone.
* step confidence, ``aggregation="mult"``: ``c = prod_i p(token_i) = exp(sum_i logprob_i)``, the
  step's probability; in (0, 1] too, but it shrinks with length.
* an empty step has ``c = 1`` (no evidence either way: the identity of the cumulative product).
* DeepConf token confidence (arXiv 2508.15260, Eq. 2): ``C_i = -(1/k) sum_j log P_i(j)`` over the
  top-k logprobs at position i; >= 0, larger = more peaked (more confident).
* group confidence: the mean token confidence over a sliding window of ``window`` tokens
  (a trace shorter than the window is one group); a trace's score is its lowest group confidence.
* path probability (perplexity consistency, arXiv 2502.00511): ``p = exp(mean_i logprob_i)``, the
  inverse perplexity, in (0, 1]; ``None`` for a path without logprobs. The API's plain
  ``confidence``, the eval's fallback confidence and the perplexity-consistency weight all use it.

Non-finite logprobs (an engine that could not report the sampled token's logprob) are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cat_serve.search.types import Step

ENTROPY = "entropy"
MULT = "mult"
AGGREGATIONS = (ENTROPY, MULT)


def _finite(values: Sequence[float]) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)  # [L]
    return a[np.isfinite(a)]


def step_confidence(step: Step, aggregation: str = ENTROPY) -> float:
    """Confidence ``c`` in (0, 1] of one generated step (see the module docstring)."""
    if aggregation == ENTROPY:
        entropies = _finite(step.entropies)
        return 1.0 if entropies.size == 0 else math.exp(-float(np.maximum(entropies, 0.0).mean()))
    if aggregation == MULT:
        logprobs = _finite(step.logprobs)
        return math.exp(min(0.0, float(logprobs.sum())))
    raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")


def token_confidences(step: Step) -> np.ndarray:
    """DeepConf token confidences ``-mean(top-k logprobs)`` per token; [L].

    A token without reported top-k logprobs falls back to ``-logprob`` of the sampled token (k = 1).
    """
    out = np.empty(len(step.token_ids), dtype=np.float64)
    for i, sampled in enumerate(step.logprobs):
        top = step.top_logprobs[i] if i < len(step.top_logprobs) else ()
        values = _finite([lp for _, lp in top]) if top else _finite([sampled])
        out[i] = -float(values.mean()) if values.size else 0.0
    return out


def group_confidences(token_confs: np.ndarray, window: int) -> np.ndarray:
    """Sliding-window means of token confidences; [max(L - window + 1, 1)] (empty for L = 0)."""
    c = np.asarray(token_confs, dtype=np.float64)
    if c.size == 0:
        return c
    if c.size <= window:
        return np.array([c.mean()])
    sums = np.cumsum(np.concatenate(([0.0], c)))  # [L + 1]
    return (sums[window:] - sums[:-window]) / window


def lowest_group_confidence(token_confs: np.ndarray, window: int) -> float:
    """DeepConf's trace score: the lowest sliding-window group confidence (0 for an empty trace)."""
    groups = group_confidences(token_confs, window)
    return float(groups.min()) if groups.size else 0.0


def tail_group_confidence(step: Step, window: int) -> float | None:
    """Group confidence of the last ``window`` tokens, or None while fewer than ``window`` exist."""
    if len(step.token_ids) < window:
        return None
    tail = Step(
        token_ids=step.token_ids[-window:],
        logprobs=step.logprobs[-window:],
        entropies=(),
        top_logprobs=step.top_logprobs[-window:],
    )
    return float(token_confidences(tail).mean())


def mean_logprob(logprobs: Sequence[float]) -> float | None:
    """Mean of the finite token logprobs; None when there is none."""
    values = _finite(logprobs)
    return None if values.size == 0 else float(values.mean())


def path_probability(logprobs: Sequence[float]) -> float | None:
    """``exp(mean token logprob)`` in [0, 1]: the per-token geometric-mean probability (inverse
    perplexity). None without a finite logprob; callers that need a number say what None means."""
    mean = mean_logprob(logprobs)
    return None if mean is None else math.exp(min(0.0, mean))
