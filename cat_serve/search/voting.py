"""Voting over sampled paths, shared by self-consistency, perplexity consistency / RPC and DeepConf.

Each strategy samples its paths with :func:`sample_paths`, weighs them its own way, and lets
:func:`weighted_vote` pick the winning answer cluster; :func:`vote_result` turns the vote into a
``SearchResult`` (the chosen path, its finish reason, the vote share as confidence). When no path
holds an answer, :func:`vote_result` returns the path with the best path score instead of nothing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from cat_serve.search.answers import cluster_answers
from cat_serve.search.formats import AnswerReader
from cat_serve.search.generator import StepGenerator
from cat_serve.search.params import SearchParams
from cat_serve.search.types import (
    LENGTH,
    SELECT_NO_ANSWER,
    SELECT_NO_TEXT,
    SELECT_VOTE,
    Candidate,
    SearchResult,
    SearchStats,
    Step,
)


@dataclass(frozen=True)
class Vote:
    winner: list[int]  # indices of the paths in the winning cluster, ascending
    share: float  # the winner's weight / total weight of all answered paths, in [0, 1]
    clusters: int = 1  # distinct answers among the answered voters
    answered: int = 0  # voters with an answer


# The features a voting strategy reports beside its raw score (``SearchResult.features``, the API's
# ``search.features``): what a multi-feature calibration map may read (``cat_serve.calibration``).
VOTE_FEATURES = ("vote_share", "distinct_answers", "distinct_paths")


def vote_features(vote: Vote | None, steps: Sequence[Step]) -> dict[str, float]:
    """``vote_share``: the winning answer's share of the answered voters, one vote each (whatever the
    strategy's weights); ``distinct_answers``: the number of answer clusters; ``distinct_paths``: the number of
    different token sequences behind the winning answer. All 0 when no voter had an answer."""
    if vote is None or not vote.answered:
        return {name: 0.0 for name in VOTE_FEATURES}
    return {"vote_share": len(vote.winner) / vote.answered, "distinct_answers": float(vote.clusters),
            "distinct_paths": float(len({steps[i].token_ids for i in vote.winner}))}


def weighted_vote(answers: Sequence[str | None], weights: Sequence[float],
                  voters: Sequence[int] | None = None) -> Vote | None:
    """Cluster equivalent answers of the ``voters`` (default: all paths) and pick the cluster with
    the largest total weight; ``Vote.winner`` holds indices into ``answers``.

    Tie rule: the cluster whose first member comes earliest wins. Paths without an answer do not
    vote. When every answered voter has weight 0, each counts 1 (plain majority). None when no
    voter has an answer.
    """
    voters = list(range(len(answers))) if voters is None else list(voters)
    clusters = [[voters[j] for j in c] for c in cluster_answers([answers[i] for i in voters])]
    if not clusters:
        return None
    totals = [sum(max(weights[i], 0.0) for i in c) for c in clusters]
    if sum(totals) <= 0.0:
        totals = [float(len(c)) for c in clusters]
    best = max(range(len(clusters)), key=lambda j: (totals[j], -clusters[j][0]))
    return Vote(clusters[best], min(1.0, totals[best] / sum(totals)), clusters=len(clusters),
                answered=sum(len(c) for c in clusters))


def step_text(generator: StepGenerator, step: Step) -> str:
    return step.text or generator.decode(step.token_ids)


def sample_stats(name: str, params: SearchParams, steps: Sequence[Step], calls: int, t0: float,
                 pruned: int = 0) -> SearchStats:
    """Stats of a sampling strategy (every returned token counts, aborted ones included)."""
    return SearchStats(
        strategy=name,
        params=params.to_dict(),
        steps=1,
        expanded=len(steps),
        pruned=pruned,
        tokens_generated=sum(s.num_tokens for s in steps),
        engine_calls=calls,
        wall_time_s=time.perf_counter() - t0,
    )


def best_path(texts: Sequence[str], path_scores: Sequence[float], eligible: Sequence[int]) -> int | None:
    """The eligible path with text (not only white space) and the highest path score; ties: the
    earliest. Falls back to every path when no eligible one has text; None when no path has text."""
    for pool in (eligible, range(len(texts))):
        with_text = [i for i in pool if texts[i].strip()]
        if with_text:
            return max(with_text, key=lambda i: (path_scores[i], -i))
    return None


def vote_result(generator: StepGenerator, steps: Sequence[Step], answers: Sequence[str | None],
                scores: Sequence[float], vote: Vote | None, stats: SearchStats,
                params: SearchParams, voters: Sequence[int] | None = None, *,
                path_scores: Sequence[float] | None = None,
                path_confidences: Sequence[float] | None = None) -> SearchResult:
    """The result of a vote: the winning cluster's highest-scoring path (ties: the earliest).

    When no voter had an answer (``selection == SELECT_NO_ANSWER``): the voter with text and the
    highest ``path_scores`` entry (default ``scores``), with ``answer=None``; its confidence is
    ``path_confidences`` (default: the path score itself), the raw score that a profile's
    ``<strategy>:no_answer`` map may calibrate. Only when no path produced text is the result empty
    (``SELECT_NO_TEXT``, confidence 0).

    ``voters`` (default: all) are the paths that took part; candidates record ``voted`` per path.
    The result carries ``vote_features`` (all 0 without a vote).
    """
    features = vote_features(vote, steps)
    voting = set(range(len(steps)) if voters is None else voters)
    texts = [step_text(generator, s) for s in steps]
    candidates = tuple(
        Candidate(
            text=texts[i],
            token_ids=s.token_ids,
            answer=answers[i],
            score=float(scores[i]),
            steps=1,
            finished=s.finished,
            meta={"voted": i in voting, "finish_reason": s.finish_reason},
        )
        for i, s in enumerate(steps)
    ) if params.return_candidates else ()
    if vote is None:
        path_scores = scores if path_scores is None else path_scores
        best = best_path(texts, path_scores, sorted(voting))
        if best is None:
            return SearchResult(text="", token_ids=(), answer=None, confidence=0.0, stats=stats,
                                candidates=candidates, selection=SELECT_NO_TEXT, features=features)
        raw = float(path_scores[best])
        confidence = raw if path_confidences is None else float(path_confidences[best])
        return SearchResult(
            text=texts[best], token_ids=steps[best].token_ids, answer=None,
            confidence=max(0.0, min(1.0, confidence)), stats=stats, candidates=candidates,
            finish_reason="length" if steps[best].finish_reason == LENGTH else "stop",
            raw_confidence=None if path_confidences is None else raw, selection=SELECT_NO_ANSWER,
            features=features,
        )
    best = max(vote.winner, key=lambda i: (scores[i], -i))
    chosen = steps[best]
    return SearchResult(
        text=texts[best],
        token_ids=chosen.token_ids,
        answer=answers[best],
        confidence=max(0.0, min(1.0, vote.share)),
        stats=stats,
        candidates=candidates,
        finish_reason="length" if chosen.finish_reason == LENGTH else "stop",
        selection=SELECT_VOTE,
        features=features,
    )


def reader_for(generator: StepGenerator, prompt_ids: Sequence[int], params: SearchParams,
               reader: AnswerReader | None = None) -> AnswerReader:
    """``reader``, or the search's own: its format from ``params``, its cues from the decoded prompt."""
    return reader or AnswerReader.for_search(params, generator.decode(prompt_ids))


async def sample_paths(generator: StepGenerator, prompt_ids: Sequence[int], n: int, params: SearchParams,
                       *, top_logprobs: int = 0, seed_offset: int = 0, early_stop=None) -> list[Step]:
    """N complete paths of the prompt in ONE engine call (no stop strings)."""
    gen = params.gen_params(params.max_tokens, seed_offset=seed_offset, top_logprobs=top_logprobs)
    [row] = await generator.extend([list(prompt_ids)], n, gen, early_stop=early_stop)
    return list(row)
