"""Perplexity consistency (PC) and Reasoning-pruning Perplexity Consistency (RPC), arXiv 2502.00511.

PC: every sampled path i gets its probability ``p_i = exp(mean token logprob)``; paths are
clustered by equivalent answer, a cluster scores ``sum p_i`` over its DISTINCT paths (identical
token sequences count once), and the best cluster wins with confidence = its score / total score.

RPC first prunes low-probability reasoning paths: a two-component Weibull mixture is fitted to
``{p_i}`` by EM, and path i is dropped when its posterior favours the low component AND
``p_i < mean(p)``. Then PC votes over the rest.

No answer in any (kept) path: the kept path with the highest probability ``p_i``, with ``p_i`` as its
confidence (``voting.vote_result``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from cat_serve.search.confidence import path_probability
from cat_serve.search.formats import AnswerReader
from cat_serve.search.generator import OnEvent, StepGenerator
from cat_serve.search.params import PerplexityParams, RPCParams
from cat_serve.search.voting import (
    reader_for,
    sample_paths,
    sample_stats,
    step_text,
    vote_result,
    weighted_vote,
)
from cat_serve.search.types import SearchResult, Step

_MIN_PATHS_TO_PRUNE = 4
_EM_ITERS = 100
_NEWTON_ITERS = 8
_SHAPE_RANGE = (0.05, 1e3)


def distinct_weights(steps: Sequence[Step], probs: Sequence[float], voters: Sequence[int]) -> list[float]:
    """``p_i`` for the first voting copy of each distinct token sequence, 0 for every other path."""
    seen: set[tuple[int, ...]] = set()
    out = [0.0] * len(steps)
    for i in voters:
        if steps[i].token_ids not in seen:
            out[i] = float(probs[i])
            seen.add(steps[i].token_ids)
    return out


# ---- Weibull mixture (RPC's reasoning pruning) ---------------------------------------------------
def weibull_logpdf(x: np.ndarray, k: float, lam: float) -> np.ndarray:
    """log of ``(k/lam) (x/lam)^(k-1) exp(-(x/lam)^k)``; x: [N] > 0."""
    z = np.log(x) - math.log(lam)
    return math.log(k) - math.log(lam) + (k - 1.0) * z - np.exp(k * z)


def weighted_weibull_mle(x: np.ndarray, w: np.ndarray, k0: float) -> tuple[float, float]:
    """Weighted Weibull MLE: Newton steps on the shape k, then the closed-form scale.

    Solves ``g(k) = sum w x^k ln x / sum w x^k - 1/k - sum w ln x / sum w = 0`` (g is increasing),
    then ``lam = (sum w x^k / sum w)^(1/k)``.
    """
    lx = np.log(x)  # [N]
    mean_lx = float(np.sum(w * lx) / np.sum(w))
    k = k0
    for _ in range(_NEWTON_ITERS):
        a = k * lx
        e = w * np.exp(a - a.max())  # w x^k, rescaled
        s0, s1, s2 = e.sum(), (e * lx).sum(), (e * lx * lx).sum()
        g = s1 / s0 - 1.0 / k - mean_lx
        dg = s2 / s0 - (s1 / s0) ** 2 + 1.0 / k**2
        k = float(np.clip(k - g / dg, *_SHAPE_RANGE))
    a = k * lx
    log_mean_xk = float(np.log(np.sum(w * np.exp(a - a.max())) / np.sum(w)) + a.max())
    return k, math.exp(log_mean_xk / k)


def weibull_mean(k: float, lam: float) -> float:
    return lam * math.gamma(1.0 + 1.0 / k)


def low_component_posterior(p: Sequence[float]) -> np.ndarray | None:
    """Posterior of the low-mean component of a 2-Weibull mixture fitted to ``p`` by EM; [N].

    None when the fit is not meaningful (fewer than 4 paths, identical values, a collapsed component).
    Initialisation: the paths below / at-or-above the median form the two components.
    """
    x = np.clip(np.asarray(p, dtype=np.float64), 1e-12, None)  # [N]
    if x.size < _MIN_PATHS_TO_PRUNE or np.ptp(x) <= 1e-12 * x.max():
        return None
    resp = np.stack([x < np.median(x), x >= np.median(x)]).astype(np.float64)  # [2, N]
    if resp[0].sum() == 0:
        resp = np.stack([x <= x.min(), x > x.min()]).astype(np.float64)
    shapes, prev = [1.0, 1.0], -np.inf
    for _ in range(_EM_ITERS):
        weights = resp.sum(axis=1)  # [2]
        if np.any(weights < 1e-9):
            return None
        fits = [weighted_weibull_mle(x, resp[c] + 1e-12, shapes[c]) for c in range(2)]
        shapes = [k for k, _ in fits]
        logp = np.stack([np.log(weights[c] / x.size) + weibull_logpdf(x, *fits[c]) for c in range(2)])  # [2, N]
        top = logp.max(axis=0)
        loglik = float(np.sum(top + np.log(np.exp(logp - top).sum(axis=0))))
        resp = np.exp(logp - top - np.log(np.exp(logp - top).sum(axis=0)))
        if abs(loglik - prev) < 1e-9 * max(1.0, abs(loglik)):
            break
        prev = loglik
    low = int(np.argmin([weibull_mean(k, lam) for k, lam in fits]))
    return resp[low]


def reasoning_pruning(p: Sequence[float]) -> list[bool]:
    """RPC: keep[i] is False when path i is more likely low-component AND ``p_i < mean(p)``."""
    posterior_low = low_component_posterior(p)
    if posterior_low is None:
        return [True] * len(p)
    mean_p = float(np.mean(p))
    return [not (post > 0.5 and pi < mean_p) for post, pi in zip(posterior_low, p)]


# ---- strategies ----------------------------------------------------------------------------------
async def _consistency(name: str, generator: StepGenerator, prompt_ids: Sequence[int],
                       params: PerplexityParams | RPCParams, prune: bool, on_event: OnEvent | None,
                       reader: AnswerReader | None) -> SearchResult:
    t0 = time.perf_counter()
    reader = reader_for(generator, prompt_ids, params, reader)
    steps = await sample_paths(generator, prompt_ids, params.n, params)
    answers = [reader.read(step_text(generator, s)) for s in steps]
    probs = [path_probability(s.logprobs) or 0.0 for s in steps]  # an empty path weighs 0
    keep = reasoning_pruning(probs) if prune else [True] * len(steps)
    voters = [i for i in range(len(steps)) if keep[i]]
    if on_event is not None:
        on_event({"type": "samples", "n": len(steps), "answered": sum(a is not None for a in answers),
                  "pruned": len(steps) - len(voters)})
    vote = weighted_vote(answers, distinct_weights(steps, probs, voters), voters)
    stats = sample_stats(name, params, steps, 1, t0, pruned=len(steps) - len(voters))
    return vote_result(generator, steps, answers, probs, vote, stats, params, voters)


async def run(generator: StepGenerator, prompt_ids: Sequence[int], params: PerplexityParams,
              *, on_event: OnEvent | None = None, reader: AnswerReader | None = None) -> SearchResult:
    """Perplexity consistency: probability-weighted vote over distinct paths."""
    return await _consistency(params.strategy, generator, prompt_ids, params, False, on_event, reader)


async def run_rpc(generator: StepGenerator, prompt_ids: Sequence[int], params: RPCParams,
                  *, on_event: OnEvent | None = None, reader: AnswerReader | None = None) -> SearchResult:
    """RPC: Weibull-mixture reasoning pruning, then perplexity consistency."""
    return await _consistency(params.strategy, generator, prompt_ids, params, True, on_event, reader)
