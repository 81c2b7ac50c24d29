"""CaT: confidence-aware tree search ("CASPO/CaT", arXiv 2605.07353, Algorithm 2 in Appendix B.6),
plus two cheaper modes.

Faithful mode (``mode="faithful"``), Algorithm 2 exactly:

    active = [prompt]; answers = []
    for t = 1 .. T while active:
        every active branch proposes K next steps            (ONE engine call: all prefixes, n=K,
                                                               stop=step_delimiters)
        step confidence c (confidence.py), cumulative C = C(parent) * c
        step has a marker answer, or EOS     -> answer set, whatever its C (lines 10-13: the answer
                                                test comes before, and independently of, tau; EOS
                                                without marker: last-number fallback over the whole
                                                path; no answer -> dropped)
        C < tau                              -> pruned (C == tau survives); only non-answer branches
        path budget (max_tokens) used up     -> dropped (a truncated solution is not an answer)
        otherwise                            -> active; keep the top K by C
    return the answer-set path with the highest C, else an explicit failure (answer None).
    Abstention is decided by ``min_confidence`` on the returned confidence, never by tau.

Ties: the earlier path wins (lower depth, then engine order: parent rank, then sample index);
the active set is stable-sorted by C. Branches whose parent was pruned are never expanded.
Prefixes are token ids (prompt + the steps' own ids), never re-tokenised text.

Why an adaptive mode: Algorithm 2 asks each of up to K active branches for K candidate steps per
depth, so even with one surviving branch every step is generated K times, about SC@K's tokens; on a
batching engine SC@K runs its paths in parallel too. Savings over SC on the same engine must come
from beyond the paper. Adaptive mode keeps the same scoring and selection and adds (README, "Deviations from the papers"):

(a) branch only where uncertain: one call asks ONE step per active branch; a branch whose step
    confidence is >= ``confident_threshold`` keeps just that step, the others get K-1 more samples
    in a second batched call (seed offset 1, so sample j matches faithful sample j);
(b) removed: aborting a step mid-generation once it cannot reach tau would also cut steps that were
    about to state an answer, which Algorithm 2 keeps whatever their C.
(c) consensus stop: stop searching once ``consensus`` completed answers are equivalent; the
    answer is still the highest-C path of the answer set (consensus only ends the search);
(d) identical candidate paths are expanded once;
(e) ``beam``: the active set keeps the top ``beam`` paths (default K). With ``beam=1`` the search
    follows the most confident path and spends K samples only on its uncertain steps; this is what
    brings its cost below SC@K's, whose K paths run in full.

``dedup`` (faithful and adaptive; off by default, a deviation): identical step texts among one node's K
children are expanded once and carry their multiplicity m (a path's m is its parent's m times the number of
identical siblings). The active set counts a path as m of its K slots and every answer keeps its m, so the
answer set, its best path and C are those of Algorithm 2 wherever the engine would have sampled identical
continuations for identical prefixes; only the repeated generations are saved.

Stream mode (``mode="stream"``) runs adaptive search with ``beam=1`` without a request per step
(``trunk_temperature`` sets that request's temperature apart from the alternatives'; 0 makes the followed
path the most likely continuation, so the search starts from greedy decoding and spends samples only
where a step is uncertain):
one streaming request continues the followed path with no stop strings, and its ``early_stop``
callback splits the text into steps at the delimiters as tokens arrive. Confident steps are accepted
in flight; the request is cut at the first step that is uncertain (confidence < confident_threshold),
that holds a final answer, or that reaches ``max_steps``. An uncertain step gets K-1 alternative
samples (one batched call, stop = delimiters) and the best candidate by C is followed, as in
adaptive mode. A solution whose steps are all confident therefore costs one request.

Reported confidence: the chosen path's cumulative C (in [0, 1]), the raw score that a calibration
profile maps to P(correct).

Answers are read by the search's ``formats.AnswerReader`` (``answer_format``). Reasoning models: a
step's answer test looks only at the part of the step after the reasoning block (``</think>``), so a
thought such as "so the answer is 5" inside ``<think>`` never ends a path; each path carries whether
it is still inside the block. The steps of the thinking are its paragraphs (``"\n\n"``, the default
``step_delimiters``; ``["\n"]`` makes them lines); a marker is never split across steps, as a step
ends right after a delimiter.

No answer found (an open-ended prompt): the result is the path with the best C among the paths that
ended (EOS) without an answer; if none ended, the deepest path cut by tau, by the token budget, by
``max_steps`` or left in the active set (ties: the higher C, then the earlier). Its C is the
confidence (a profile's ``cat:no_answer`` map may calibrate it); ``selection`` says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from cat_serve.search.answers import cluster_answers
from cat_serve.search.confidence import step_confidence
from cat_serve.search.formats import AnswerReader
from cat_serve.search.generator import EarlyStop, OnEvent, StepGenerator
from cat_serve.search.params import CaTParams
from cat_serve.search.types import (
    ABORTED,
    SELECT_BEST_ANSWER,
    SELECT_NO_ANSWER,
    SELECT_NO_TEXT,
    STOP,
    Candidate,
    SearchResult,
    SearchStats,
    Step,
)


@dataclass(frozen=True)
class _Path:
    token_ids: tuple[int, ...]  # completion tokens after the prompt
    confidence: float  # cumulative C = product of step confidences
    depth: int = 0
    step_confidences: tuple[float, ...] = ()  # c of each step (calibration fits CaT's thresholds on them)
    in_reasoning: bool = False  # the path ends inside a reasoning block (<think> without </think>)
    multiplicity: int = 1  # dedup: how many identical copies of this path Algorithm 2 would hold

    def extend(self, step: Step, aggregation: str, depth: int, in_reasoning: bool) -> _Path:
        c = step_confidence(step, aggregation)
        return _Path(self.token_ids + step.token_ids, self.confidence * c, depth, self.step_confidences + (c,),
                     in_reasoning, self.multiplicity)


@dataclass(frozen=True)
class _Done:
    path: _Path
    answer: str
    finished: bool


@dataclass
class _Search:
    """Mutable bookkeeping of one search."""

    generator: StepGenerator
    prompt_ids: tuple[int, ...]
    params: CaTParams
    answers: list[_Done]
    reader: AnswerReader = field(default_factory=AnswerReader)
    expanded: int = 0
    pruned: int = 0
    tokens: int = 0
    calls: int = 0
    # the no-answer fallback: best path that ended (EOS) without an answer, best path cut short
    unanswered: _Path | None = None
    cut: _Path | None = None

    def step_content(self, parent: _Path, text: str) -> tuple[str, bool]:
        """The part of a step after the reasoning block, and whether the path is still inside it."""
        _, content, inside = self.reader.reasoning.split(text, parent.in_reasoning)
        return content, inside

    def keep_unanswered(self, path: _Path) -> None:
        """No-answer fallback: the best C among ended paths (ties: the earlier)."""
        if self.unanswered is None or path.confidence > self.unanswered.confidence:
            self.unanswered = path

    def keep_cut(self, path: _Path) -> None:
        """No-answer fallback: the deepest path cut short, then the best C (ties: the earlier)."""
        if path.token_ids and (self.cut is None or (path.depth, path.confidence) > (self.cut.depth, self.cut.confidence)):
            self.cut = path

    async def extend(self, parents: Sequence[_Path], n: int, max_tokens: int, seed_offset: int,
                     early_stop: EarlyStop | None, stop: tuple[str, ...] | None = None,
                     temperature: float | None = None) -> list[list[Step]]:
        stop = self.params.step_delimiters if stop is None else stop
        gen = self.params.gen_params(max_tokens, stop=stop, seed_offset=seed_offset)
        if temperature is not None:
            gen = replace(gen, temperature=temperature)
        prefixes = [list(self.prompt_ids) + list(p.token_ids) for p in parents]
        self.calls += 1
        rows = await self.generator.extend(prefixes, n, gen, early_stop=early_stop)
        self.tokens += sum(s.num_tokens for row in rows for s in row)
        self.expanded += sum(len(row) for row in rows)
        return rows


def step_budget(active: Sequence[_Path], params: CaTParams) -> int:
    """Token limit of this depth's call(s): the step limit, within every active path's budget."""
    return min(params.max_step_tokens, min(params.max_tokens - len(p.token_ids) for p in active))


async def expand_faithful(search: _Search, active: list[_Path], budget: int) -> list[tuple[_Path, Step]]:
    """Algorithm 2: K candidate steps for every active branch, in one engine call."""
    rows = await search.extend(active, search.params.branches, budget, 0, None)
    return [(parent, step) for parent, row in zip(active, rows) for step in row]


async def expand_adaptive(search: _Search, active: list[_Path], budget: int) -> list[tuple[_Path, Step]]:
    """Adaptive (a): one step per branch; K-1 more only for branches whose step was uncertain."""
    params = search.params
    rows = await search.extend(active, 1, budget, 0, None)
    firsts = [row[0] for row in rows]
    uncertain = [
        i for i, step in enumerate(firsts)
        if step.finish_reason == ABORTED or step_confidence(step, params.aggregation) < params.confident_threshold
    ]
    extra: dict[int, list[Step]] = {}
    if uncertain and params.branches > 1:
        parents = [active[i] for i in uncertain]
        rows = await search.extend(parents, params.branches - 1, budget, 1, None)
        extra = dict(zip(uncertain, rows))
    return [(parent, step) for i, parent in enumerate(active) for step in [firsts[i], *extra.get(i, [])]]


def score_candidates(search: _Search, candidates: list[tuple[_Path, Step]], depth: int,
                     width: int) -> list[_Path]:
    """Algorithm 2, lines 10-16: a step holding a final answer joins the answer set whatever its C;
    only the other branches are pruned below tau. The top-``width`` active paths by C survive."""
    params, decode, reader = search.params, search.generator.decode, search.reader
    survivors: list[_Path] = []
    for parent, step in candidates:
        text = step.text or decode(step.token_ids)
        content, inside = search.step_content(parent, text)
        path = parent.extend(step, params.aggregation, depth, inside)
        if step.finish_reason == ABORTED:  # the client went away or the engine cut it: no step
            search.pruned += 1
            continue
        marked = reader.marked(content)
        if marked is not None:
            search.answers.append(_Done(path, marked, step.finished))
        elif step.finished:
            answer = reader.read(decode(path.token_ids))  # the whole path, fallbacks included
            if answer is None:
                search.pruned += 1
                search.keep_unanswered(path)
            else:
                search.answers.append(_Done(path, answer, True))
        elif path.confidence < params.tau or len(path.token_ids) >= params.max_tokens:
            search.pruned += 1
            search.keep_cut(path)
        else:
            survivors.append(path)
    survivors.sort(key=lambda p: -p.confidence)  # stable: ties keep engine order
    search.pruned += max(0, len(survivors) - width)
    for path in survivors[width:]:
        search.keep_cut(path)
    return survivors[:width]


def slice_step(step: Step, a: int, b: int, text: str, finish: str | None, stop: str | None) -> Step:
    """Tokens a..b of ``step`` as a Step of their own."""
    return Step(token_ids=step.token_ids[a:b], logprobs=step.logprobs[a:b], entropies=step.entropies[a:b],
                top_logprobs=step.top_logprobs[a:b], text=text, finish_reason=finish, stop=stop)


class _Segmenter:
    """Splits a growing token sequence into steps: a step ends at the token that completes a delimiter.

    The current step's text is decoded incrementally, as vLLM's detokenizer does: a new token's text
    is ``decode(context + new) - decode(context)`` over at most ``CONTEXT`` earlier tokens of the step,
    and only the text that a new delimiter could overlap is searched. So a step of L tokens costs
    O(L), not the O(L^2) of re-decoding the whole step after every token. A token that ends in an
    incomplete character (U+FFFD) waits for the next one before its text counts.
    """

    CONTEXT = 4

    def __init__(self, decode: Callable[[Sequence[int]], str], delimiters: Sequence[str]):
        self.decode, self.delimiters = decode, tuple(delimiters)
        self.longest = max((len(d) for d in self.delimiters), default=1)
        self.start = 0  # first token of the current (unfinished) step
        self.read = 0  # tokens of the step whose text is in self.text
        self.scanned = 0
        self.text = ""

    def feed(self, token_ids: Sequence[int]) -> list[tuple[int, int, str, str]]:
        """Steps completed by the new tokens: (first token, end token, text, delimiter)."""
        done = []
        while self.scanned < len(token_ids):
            self.scanned += 1
            ctx = max(self.start, self.read - self.CONTEXT)
            before = self.decode(token_ids[ctx:self.read]) if ctx < self.read else ""
            after = self.decode(token_ids[ctx:self.scanned])
            if after.endswith("\ufffd"):
                continue
            since = max(0, len(self.text) - self.longest + 1)  # a new delimiter ends in the new text
            self.text += after[len(before):]
            self.read = self.scanned
            hits = [(i, d) for d in self.delimiters if (i := self.text.find(d, since)) >= 0]
            if hits:
                done.append((self.start, self.scanned, self.text, min(hits)[1]))
                self.start = self.read = self.scanned
                self.text = ""
        return done


async def follow_stream(search: _Search, path: _Path, depth: int) -> tuple[list[tuple[_Path, Step]], int]:
    """Stream mode: one request from ``path``; confident steps are accepted in flight.

    Returns the candidates to score (the step the request was cut at, plus K-1 alternatives when
    that step is uncertain), each paired with the path extended by the accepted steps, and the depth.
    """
    params = search.params
    seg = _Segmenter(search.generator.decode, params.step_delimiters)
    accepted: list[tuple[Step, bool]] = []  # confident, answer-free steps of this request (+ in reasoning after)
    cut: list[Step] = []

    def early_stop(partial: Step) -> bool:
        for a, b, text, delim in seg.feed(partial.token_ids):
            piece = slice_step(partial, a, b, text, STOP, delim)
            inside_before = accepted[-1][1] if accepted else path.in_reasoning
            content, inside = search.reader.reasoning.split(text, inside_before)[1:]
            if (step_confidence(piece, params.aggregation) < params.confident_threshold
                    or search.reader.marked(content) is not None or depth + len(accepted) + 1 >= params.max_steps):
                cut.append(piece)
                return True
            accepted.append((piece, inside))
        return False

    [[whole]] = await search.extend([path], 1, params.max_tokens - len(path.token_ids), 0, early_stop, stop=(),
                                    temperature=params.trunk_temperature)
    if not cut and not early_stop(whole):  # engines do not show the callback the final tokens
        tail = whole.token_ids[seg.start:]
        cut.append(slice_step(whole, seg.start, len(whole.token_ids), search.generator.decode(tail),
                              whole.finish_reason, None))
    for step, inside in accepted:
        path = path.extend(step, params.aggregation, depth + 1, inside)
        depth += 1
    candidates = [(path, cut[0])]
    budget = min(params.max_step_tokens, params.max_tokens - len(path.token_ids))
    if step_confidence(cut[0], params.aggregation) < params.confident_threshold and params.branches > 1 and budget > 0:
        rows = await search.extend([path], params.branches - 1, budget, 1, None)
        candidates += [(path, alt) for alt in rows[0]]
    return candidates, depth


def answer_is_final(answers: Sequence[_Done], active: Sequence[_Path]) -> bool:
    """C never grows along a path, so no later answer can beat one with C >= every active path's C."""
    best = best_answer(answers)
    return best is not None and all(best.path.confidence >= p.confidence for p in active)


def dedupe(paths: list[_Path]) -> list[_Path]:
    """Adaptive (d): expand identical paths once (the first, i.e. highest-C, copy)."""
    seen: set[tuple[int, ...]] = set()
    out = []
    for p in paths:
        if p.token_ids not in seen:
            seen.add(p.token_ids)
            out.append(p)
    return out


def merge_identical(candidates: list[tuple[_Path, Step]]) -> list[tuple[_Path, Step]]:
    """dedup: identical steps of one parent become one candidate whose parent carries the multiplicity
    (parent's m times the copies); the first copy keeps its place, so engine-order ties are unchanged."""
    counts: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    for parent, step in candidates:
        key = (parent.token_ids, step.token_ids)
        counts[key] = counts.get(key, 0) + 1
    out, seen = [], set()
    for parent, step in candidates:
        key = (parent.token_ids, step.token_ids)
        if key not in seen:
            seen.add(key)
            out.append((replace(parent, multiplicity=parent.multiplicity * counts[key]), step))
    return out


def beam_by_multiplicity(survivors: list[_Path], width: int) -> list[_Path]:
    """dedup: the top-``width`` slots by C (already sorted) where a path of multiplicity m fills m slots;
    a path cut by the last slot keeps the slots left."""
    out, left = [], width
    for p in survivors:
        if left <= 0:
            break
        out.append(replace(p, multiplicity=min(p.multiplicity, left)))
        left -= out[-1].multiplicity
    return out


def consensus_reached(answers: Sequence[_Done], consensus: int) -> bool:
    """Adaptive (c): ``consensus`` completed answers are equivalent."""
    if consensus <= 0 or len(answers) < consensus:
        return False
    return any(len(c) >= consensus for c in cluster_answers([d.answer for d in answers]))


def best_answer(answers: Sequence[_Done]) -> _Done | None:
    """Highest cumulative C; ties go to the earliest-found path."""
    if not answers:
        return None
    return max(enumerate(answers), key=lambda item: (item[1].path.confidence, -item[0]))[1]


async def run(generator: StepGenerator, prompt_ids: Sequence[int], params: CaTParams,
              *, on_event: OnEvent | None = None, reader: AnswerReader | None = None) -> SearchResult:
    """CaT search (arXiv 2605.07353, Algorithm 2; ``params.mode``: faithful, adaptive or stream)."""
    t0 = time.perf_counter()
    reader = reader or AnswerReader.for_search(params, generator.decode(prompt_ids))
    search = _Search(generator, tuple(prompt_ids), params, answers=[], reader=reader)
    mode = params.mode
    width = {"faithful": params.branches, "adaptive": params.beam or params.branches, "stream": 1}[mode]
    active, depth = [_Path((), 1.0, 0, in_reasoning=reader.starts_in_reasoning)], 0
    while active and depth < params.max_steps:
        if mode == "stream":  # may accept several confident steps in one request
            candidates, depth = await follow_stream(search, active[0], depth)
        else:
            expand = expand_adaptive if mode == "adaptive" else expand_faithful
            candidates = await expand(search, active, step_budget(active, params))
        depth += 1
        if params.dedup and mode != "stream":
            scored = score_candidates(search, merge_identical(candidates), depth, len(candidates))
            active = beam_by_multiplicity(scored, width)
            search.pruned += len(scored) - len(active)
        else:
            active = score_candidates(search, candidates, depth, width)
        if mode == "adaptive":
            active = dedupe(active)
        if on_event is not None:
            on_event({"type": "depth", "depth": depth, "active": len(active), "answers": len(search.answers)})
        if mode == "adaptive" and consensus_reached(search.answers, params.consensus):
            break
        if mode == "stream" and answer_is_final(search.answers, active):
            break
    stats = SearchStats(
        strategy=params.strategy,
        params=params.to_dict(),
        steps=depth,
        expanded=search.expanded,
        pruned=search.pruned,
        tokens_generated=search.tokens,
        engine_calls=search.calls,
        wall_time_s=time.perf_counter() - t0,
    )
    for path in active:  # max_steps reached: these never ended
        search.keep_cut(path)
    return _result(generator, search, stats, params.return_candidates)


def _result(generator: StepGenerator, search: _Search, stats: SearchStats, with_candidates: bool) -> SearchResult:
    answers = search.answers
    candidates = tuple(
        Candidate(
            text=generator.decode(d.path.token_ids),
            token_ids=d.path.token_ids,
            answer=d.answer,
            score=d.path.confidence,
            steps=d.path.depth,
            finished=d.finished,
            meta={"step_confidences": list(d.path.step_confidences), "multiplicity": d.path.multiplicity},
        )
        for d in answers
    ) if with_candidates else ()
    best = best_answer(answers)
    if best is None:
        fallback = next((p for p in (search.unanswered, search.cut)
                         if p is not None and generator.decode(p.token_ids).strip()), None)
        if fallback is None:
            return SearchResult(text="", token_ids=(), answer=None, confidence=0.0, stats=stats,
                                candidates=candidates, selection=SELECT_NO_TEXT)
        return SearchResult(text=generator.decode(fallback.token_ids), token_ids=fallback.token_ids, answer=None,
                            confidence=min(1.0, max(0.0, fallback.confidence)), stats=stats, candidates=candidates,
                            finish_reason="stop" if fallback is search.unanswered else "length",
                            selection=SELECT_NO_ANSWER)
    return SearchResult(
        text=generator.decode(best.path.token_ids),
        token_ids=best.path.token_ids,
        answer=best.answer,
        confidence=min(1.0, max(0.0, best.path.confidence)),
        stats=stats,
        candidates=candidates,
        selection=SELECT_BEST_ANSWER,
    )
