"""DeepConf, "Deep Think with Confidence" (arXiv 2508.15260).

Token confidence ``C_i = -mean(top-k logprobs)``; group confidence = mean over a sliding window
of ``window`` tokens; a trace's score = its lowest group confidence (``confidence.py``).

* offline: sample ``n`` traces in one call, keep the top ``eta``% by score, confidence-weighted vote.
* online: sample ``warmup`` traces; the stopping threshold ``s`` is the ``(100 - eta)``-th
  percentile of their scores (so eta% of them pass); then sample the other traces in rounds of
  ``batch`` (one call each) whose ``early_stop`` cuts a trace as soon as the group confidence of its
  last ``window`` tokens falls below ``s`` (checked once a full window exists). Stopped traces do not
  vote; the warmup traces and the unstopped ones vote, filtered by the same rule ``score >= s``.
  Consensus stop (the paper's Algorithm 2): after each round, stop sampling once the leading
  answer's confidence-weighted vote share among the voters is >= ``consensus`` (beta, 0.95), or
  when ``n`` traces exist. The paper checks after every trace; rounds of ``batch`` traces keep the
  engine batched (``batch: 1`` is the paper's schedule).

Confidence of the answer = its share of the total vote weight (scores) of the voting traces.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from cat_serve.search.answers import extract_answer
from cat_serve.search.confidence import lowest_group_confidence, tail_group_confidence, token_confidences
from cat_serve.search.generator import EarlyStop, OnEvent, StepGenerator
from cat_serve.search.params import DeepConfParams
from cat_serve.search.voting import (
    sample_paths,
    sample_stats,
    step_text,
    vote_result,
    weighted_vote,
)
from cat_serve.search.types import ABORTED, SearchResult, Step

TOP_K = 20  # top-k logprobs asked from the engine for token confidences


def trace_score(step: Step, window: int) -> float:
    """Lowest group confidence of a trace."""
    return lowest_group_confidence(token_confidences(step), window)


def top_eta(scores: Sequence[float], eta: float) -> list[int]:
    """Indices of the top ``ceil(eta% * N)`` scores (at least one); ties keep the earlier trace."""
    keep = max(1, math.ceil(len(scores) * eta / 100.0 - 1e-9))
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return sorted(order[:keep])


def stopping_threshold(warmup_scores: Sequence[float], eta: float) -> float:
    """The ``(100 - eta)``-th percentile (linear interpolation) of the warmup traces' scores."""
    return float(np.percentile(np.asarray(warmup_scores, dtype=np.float64), 100.0 - eta))


def below_threshold(threshold: float, window: int) -> EarlyStop:
    """early_stop: True once the last full window's group confidence is below ``threshold``."""

    def early_stop(partial: Step) -> bool:
        group = tail_group_confidence(partial, window)
        return group is not None and group < threshold

    return early_stop


async def _offline(generator: StepGenerator, prompt_ids: Sequence[int], params: DeepConfParams,
                   on_event: OnEvent | None) -> tuple[list[Step], list[int], int]:
    steps = await sample_paths(generator, prompt_ids, params.n, params, top_logprobs=TOP_K)
    scores = [trace_score(s, params.window) for s in steps]
    if on_event is not None:
        on_event({"type": "samples", "n": len(steps)})
    return steps, top_eta(scores, params.eta), 1


async def _online(generator: StepGenerator, prompt_ids: Sequence[int], params: DeepConfParams,
                  on_event: OnEvent | None) -> tuple[list[Step], list[int], int]:
    steps = await sample_paths(generator, prompt_ids, params.warmup, params, top_logprobs=TOP_K)
    threshold = stopping_threshold([trace_score(s, params.window) for s in steps], params.eta)
    if on_event is not None:
        on_event({"type": "warmup", "n": len(steps), "threshold": threshold})
    calls = 1

    def voting() -> list[int]:
        return [i for i, s in enumerate(steps)
                if s.finish_reason != ABORTED and trace_score(s, params.window) >= threshold]

    while len(steps) < params.n:
        batch = min(params.batch, params.n - len(steps))
        steps += await sample_paths(
            generator, prompt_ids, batch, params, top_logprobs=TOP_K,
            seed_offset=len(steps), early_stop=below_threshold(threshold, params.window),
        )
        calls += 1
        share = consensus_share(generator, steps, voting(), params.window)
        if on_event is not None:
            on_event({"type": "round", "n": len(steps), "consensus": share})
        if share is not None and share >= params.consensus:
            break  # the paper's consensus stop: the leading answer holds >= beta of the vote
    voters = voting()
    if on_event is not None:
        on_event({"type": "samples", "n": len(steps), "stopped": sum(s.finish_reason == ABORTED for s in steps)})
    return steps, voters, calls


def consensus_share(generator: StepGenerator, steps: Sequence[Step], voters: Sequence[int],
                    window: int) -> float | None:
    """The leading answer's confidence-weighted vote share among ``voters`` (None: no answer yet)."""
    answers = [extract_answer(step_text(generator, s)) for s in steps]
    vote = weighted_vote(answers, [trace_score(s, window) for s in steps], voters)
    return None if vote is None else vote.share


async def run(generator: StepGenerator, prompt_ids: Sequence[int], params: DeepConfParams,
              *, on_event: OnEvent | None = None) -> SearchResult:
    """DeepConf offline or online; confidence = the winner's share of the voters' total score."""
    t0 = time.perf_counter()
    sample = _online if params.mode == "online" else _offline
    steps, voters, calls = await sample(generator, prompt_ids, params, on_event)
    answers = [extract_answer(step_text(generator, s)) for s in steps]
    scores = [trace_score(s, params.window) for s in steps]
    vote = weighted_vote(answers, scores, voters)
    stats = sample_stats(params.strategy, params, steps, calls, t0, pruned=len(steps) - len(voters))
    return vote_result(generator, steps, answers, scores, vote, stats, params, voters)
