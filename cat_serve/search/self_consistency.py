"""Self-consistency (Wang et al. 2022, "Self-Consistency Improves Chain of Thought Reasoning in Language
Models", arXiv 2203.11171): sample N paths, majority-vote their answers (``voting.py``, equal weights).

No answer in any path (an open-ended prompt, ``answer_format: none``): the path with the highest mean
token logprob, i.e. the highest path probability ``exp(mean logprob)``, which is its confidence."""

from __future__ import annotations

import time
from collections.abc import Sequence

from cat_serve.search.confidence import path_probability
from cat_serve.search.formats import AnswerReader
from cat_serve.search.generator import OnEvent, StepGenerator
from cat_serve.search.params import SelfConsistencyParams
from cat_serve.search.types import SearchResult
from cat_serve.search.voting import reader_for, sample_paths, sample_stats, step_text, vote_result, weighted_vote


async def run(generator: StepGenerator, prompt_ids: Sequence[int], params: SelfConsistencyParams,
              *, on_event: OnEvent | None = None, reader: AnswerReader | None = None) -> SearchResult:
    """Majority vote over ``params.n`` paths; confidence = the winner's vote share among answered paths."""
    t0 = time.perf_counter()
    reader = reader_for(generator, prompt_ids, params, reader)
    steps = await sample_paths(generator, prompt_ids, params.n, params)
    answers = [reader.read(step_text(generator, s)) for s in steps]
    if on_event is not None:
        on_event({"type": "samples", "n": len(steps), "answered": sum(a is not None for a in answers)})
    vote = weighted_vote(answers, [1.0] * len(steps))
    stats = sample_stats(params.strategy, params, steps, 1, t0)
    probs = [path_probability(s.logprobs) or 0.0 for s in steps]
    return vote_result(generator, steps, answers, [1.0] * len(steps), vote, stats, params, path_scores=probs)
