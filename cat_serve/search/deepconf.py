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

Window (``window``, default None): the paper uses 2,048 tokens on traces of ~10k+ tokens; a window as
long as a short trace would average the whole trace and lose the "lowest window" signal. So the
default is a quarter of the median length of the traces sampled first (all ``n`` offline, the warmup
online), at least 64 (this project's former fixed default, which the shipped calibration profile was
fitted with on ~200-token traces) and at most the paper's 2,048 (reached from 8,192-token traces on).
The window used is reported in ``stats.params["window"]``.

No answer in any voting trace: the voting trace with the highest trace confidence (lowest group
confidence) is returned; that score is its raw confidence (a profile's ``deepconf:no_answer`` map may
calibrate it), but as it is not a probability, the unmapped confidence is the trace's path probability
``exp(mean logprob)``, the number a plain request reports.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from dataclasses import replace

from cat_serve.search.confidence import (
    lowest_group_confidence,
    path_probability,
    tail_group_confidence,
    token_confidences,
)
from cat_serve.search.formats import AnswerReader
from cat_serve.search.generator import EarlyStop, OnEvent, StepGenerator
from cat_serve.search.params import DeepConfParams
from cat_serve.search.voting import (
    reader_for,
    sample_paths,
    sample_stats,
    step_text,
    vote_result,
    weighted_vote,
)
from cat_serve.search.types import ABORTED, SearchResult, Step

TOP_K = 20  # top-k logprobs asked from the engine for token confidences
MIN_WINDOW, PAPER_WINDOW = 64, 2048


def default_window(lengths: Sequence[int]) -> int:
    """A quarter of the median trace length, clipped to [64, 2048] (see the module docstring)."""
    median = float(np.median(lengths)) if len(lengths) else 0.0
    return int(min(PAPER_WINDOW, max(MIN_WINDOW, median // 4)))


def with_window(params: DeepConfParams, steps: Sequence[Step]) -> DeepConfParams:
    """``params`` with the window set (the default one when the request left it None)."""
    if params.window is not None:
        return params
    return replace(params, window=default_window([s.num_tokens for s in steps]))


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
                   on_event: OnEvent | None, reader: AnswerReader) -> tuple[list[Step], list[int], int, DeepConfParams]:
    steps = await sample_paths(generator, prompt_ids, params.n, params, top_logprobs=TOP_K)
    params = with_window(params, steps)
    scores = [trace_score(s, params.window) for s in steps]
    if on_event is not None:
        on_event({"type": "samples", "n": len(steps)})
    return steps, top_eta(scores, params.eta), 1, params


async def _online(generator: StepGenerator, prompt_ids: Sequence[int], params: DeepConfParams,
                  on_event: OnEvent | None, reader: AnswerReader) -> tuple[list[Step], list[int], int, DeepConfParams]:
    steps = await sample_paths(generator, prompt_ids, params.warmup, params, top_logprobs=TOP_K)
    params = with_window(params, steps)
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
        share = consensus_share(generator, steps, voting(), params.window, reader)
        if on_event is not None:
            on_event({"type": "round", "n": len(steps), "consensus": share})
        if share is not None and share >= params.consensus:
            break  # the paper's consensus stop: the leading answer holds >= beta of the vote
    voters = voting()
    if on_event is not None:
        on_event({"type": "samples", "n": len(steps), "stopped": sum(s.finish_reason == ABORTED for s in steps)})
    return steps, voters, calls, params


def consensus_share(generator: StepGenerator, steps: Sequence[Step], voters: Sequence[int],
                    window: int, reader: AnswerReader) -> float | None:
    """The leading answer's confidence-weighted vote share among ``voters`` (None: no answer yet)."""
    answers = [reader.read(step_text(generator, s)) for s in steps]
    vote = weighted_vote(answers, [trace_score(s, window) for s in steps], voters)
    return None if vote is None else vote.share


async def run(generator: StepGenerator, prompt_ids: Sequence[int], params: DeepConfParams,
              *, on_event: OnEvent | None = None, reader: AnswerReader | None = None) -> SearchResult:
    """DeepConf offline or online; confidence = the winner's share of the voters' total score."""
    t0 = time.perf_counter()
    reader = reader_for(generator, prompt_ids, params, reader)
    sample = _online if params.mode == "online" else _offline
    steps, voters, calls, params = await sample(generator, prompt_ids, params, on_event, reader)
    answers = [reader.read(step_text(generator, s)) for s in steps]
    scores = [trace_score(s, params.window) for s in steps]
    vote = weighted_vote(answers, scores, voters)
    stats = sample_stats(params.strategy, params, steps, calls, t0, pruned=len(steps) - len(voters))
    return vote_result(generator, steps, answers, scores, vote, stats, params, voters,
                       path_confidences=[path_probability(s.logprobs) or 0.0 for s in steps])
