"""Self-consistency (Wang et al. 2022, "Self-Consistency Improves Chain of Thought Reasoning in Language
Models", arXiv 2203.11171): sample N paths, majority-vote their answers (``voting.py``, equal weights)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from cat_serve.search.answers import extract_answer
from cat_serve.search.generator import OnEvent, StepGenerator
from cat_serve.search.params import SelfConsistencyParams
from cat_serve.search.types import SearchResult
from cat_serve.search.voting import sample_paths, sample_stats, step_text, vote_result, weighted_vote


async def run(generator: StepGenerator, prompt_ids: Sequence[int], params: SelfConsistencyParams,
              *, on_event: OnEvent | None = None) -> SearchResult:
    """Majority vote over ``params.n`` paths; confidence = the winner's vote share among answered paths."""
    t0 = time.perf_counter()
    steps = await sample_paths(generator, prompt_ids, params.n, params)
    answers = [extract_answer(step_text(generator, s)) for s in steps]
    if on_event is not None:
        on_event({"type": "samples", "n": len(steps), "answered": sum(a is not None for a in answers)})
    vote = weighted_vote(answers, [1.0] * len(steps))
    stats = sample_stats(params.strategy, params, steps, 1, t0)
    return vote_result(generator, steps, answers, [1.0] * len(steps), vote, stats, params)
