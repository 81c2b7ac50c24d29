"""Next-token entropy from the top-k logprobs an engine reports (vLLM returns at most k=20).

Let the top-k probabilities be p_1 >= ... >= p_k and the tail mass r = 1 - sum_i p_i, spread over
the other V - k tokens, each of which has probability <= p_k. With H_top = -sum_i p_i log p_i:

    lower bound  H_lo = H_top + r * (-log p_k)           (every tail token as likely as p_k)
    upper bound  H_hi = H_top + r * log((V - k) / r)     (tail spread uniformly over V - k tokens)

The exact entropy always lies in [H_lo, H_hi]. Our estimate is a fixed point inside it,

    H_est = H_lo + ALPHA * (H_hi - H_lo),   ALPHA = 0.3,

so the error is bounded by |H_est - H| <= (1 - ALPHA) * (H_hi - H_lo) = ERROR_BOUND_FRACTION * width.
ALPHA was fitted on SmolLM2-135M-Instruct: over 654 sampled GSM8K tokens with k = 20, the exact
entropy sat at a median 0.31 of the way from H_lo to H_hi; the estimate's error was 0.018 nats mean
and 0.049 p90 (0.125 mean for H_lo alone). When the top-k hold all the mass (r = 0) the estimate is
exact. `tests/engine/test_entropy.py` checks the vLLM estimate against the transformers engine's
exact entropy on the same tokens, within this bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

ALPHA = 0.3
ERROR_BOUND_FRACTION = 1.0 - ALPHA


def entropy_bounds(top_logprobs: Sequence[float], vocab_size: int) -> tuple[float, float]:
    """(H_lo, H_hi) in nats from the top-k logprobs (any order) of one position."""
    if not top_logprobs:
        return 0.0, math.log(vocab_size)
    probs = [math.exp(lp) for lp in top_logprobs]
    h_top = -sum(p * lp for p, lp in zip(probs, top_logprobs))
    tail = 1.0 - sum(probs)
    k = len(probs)
    if tail <= 1e-9 or k >= vocab_size:
        return h_top, h_top
    p_k = min(probs)
    lo = h_top + tail * (-math.log(p_k))
    hi = h_top + tail * math.log((vocab_size - k) / tail)
    return lo, max(lo, hi)


def estimate_entropy(top_logprobs: Sequence[float], vocab_size: int) -> float:
    """H_est (nats); NaN when no top logprobs were requested."""
    if not top_logprobs:
        return math.nan
    lo, hi = entropy_bounds(top_logprobs, vocab_size)
    return lo + ALPHA * (hi - lo)
