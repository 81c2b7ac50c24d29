"""CaT (arXiv 2605.07353, Algorithm 2) against hand-computed trees; numbers worked out in the comments.

Step confidence is c = exp(-mean token entropy) unless a test says "mult" (c = exp(sum logprob)).
"""

from __future__ import annotations

import math

import pytest

from cat_serve.search import cat
from cat_serve.search.params import CaTParams
from cat_serve.search.types import STOP
from tests.fakes import FakeGenerator, cont

NL = "\n\n"


def params(**kw) -> CaTParams:
    return CaTParams.from_dict(kw, {})


def greedy_trap() -> tuple[FakeGenerator, tuple[int, ...], dict[str, tuple[int, ...]]]:
    """Depth 1: A ("Add", p = e^-0.1 = 0.905, greedy) vs B ("Mul", p = e^-2 = 0.135).

    c(A) = e^-0.5 = 0.606531, c(B) = e^-0.1 = 0.904837.
    Depth 2 (all answers): under A both steps say 5 with entropy 1.0 -> C = e^-1.5 = 0.223130;
    under B "6" with entropy 0.1 -> C = e^-0.2 = 0.818731, and "5" with entropy 2.0 ->
    C = e^-2.1 = 0.122456. Greedy (A, then its likeliest step) answers 5; the answer set votes 5
    three times to one; CaT must return 6 with confidence e^-0.2.
    """
    gen = FakeGenerator()
    prompt = gen.encode("Q: 2*3?", NL)
    a, b = gen.script(
        prompt,
        cont("Add", NL, logprob=-0.05, entropy=0.5, finish=STOP),
        cont("Mul", NL, logprob=-1.0, entropy=0.1, finish=STOP),
    )
    gen.script(a, cont("\\boxed{5}", logprob=-0.01, entropy=1.0), cont("so", " \\boxed{5}", logprob=-0.02, entropy=1.0))
    gen.script(b, cont("\\boxed{6}", logprob=-0.5, entropy=0.1), cont("\\boxed{5}", logprob=-0.01, entropy=2.0))
    return gen, prompt, {"a": a, "b": b}


async def test_faithful_escapes_confidently_wrong_greedy_path():
    gen, prompt, _ = greedy_trap()
    events = []
    p = params(mode="faithful", branches=2, tau=0.1, max_step_tokens=8, return_candidates=True)
    result = await cat.run(gen, prompt, p, on_event=events.append)
    assert result.answer == "6"
    assert result.text == "Mul\n\n\\boxed{6}"
    assert result.confidence == pytest.approx(math.exp(-0.2))
    assert sorted(c.answer for c in result.candidates) == ["5", "5", "5", "6"]
    # one engine call per depth, n = K each; tokens: 2 + 2 (depth 1) + 1 + 1 + 1 + 2 (depth 2) = 9
    assert [c.n for c in gen.calls] == [2, 2]
    assert len(gen.calls[1].prefixes) == 2
    s = result.stats
    assert (s.steps, s.expanded, s.pruned, s.tokens_generated, s.engine_calls) == (2, 6, 0, 9, 2)
    assert s.tokens_generated == gen.tokens_generated
    assert s.params["mode"] == "faithful"
    assert events == [
        {"type": "depth", "depth": 1, "active": 2, "answers": 0},
        {"type": "depth", "depth": 2, "active": 0, "answers": 4},
    ]


async def test_adaptive_escapes_greedy_path_too():
    # depth 1: ONE sample -> A (c 0.607 < 0.8: uncertain) -> one more -> B.
    # depth 2: one sample each: B -> "6" (c 0.905 >= 0.8, kept alone); A -> "5" (c 0.368) -> one more
    # -> "so 5". Two "5"s agree (consensus 2), but the answer is still the highest C: 6.
    # tokens: 2 + 2 + 1 + 1 + 2 = 8 in 4 calls
    gen, prompt, _ = greedy_trap()
    result = await cat.run(gen, prompt, params(mode="adaptive", branches=2, tau=0.1, max_step_tokens=8))
    assert result.answer == "6"
    assert result.confidence == pytest.approx(math.exp(-0.2))
    assert [c.n for c in gen.calls] == [1, 1, 1, 1]
    assert (result.stats.tokens_generated, result.stats.engine_calls) == (8, 4)


def exact_tau_tree() -> tuple[FakeGenerator, tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """tau = e^-1. X: entropies (1, 1) -> c = e^-1 == tau exactly: survives.
    Y: entropies (1, 1 + 1e-9) -> c = e^-(1 + 5e-10) < tau: pruned, its child never requested.
    X's child has entropy 0 -> c = 1, C = tau: an answer exactly at tau is kept."""
    gen = FakeGenerator()
    prompt = gen.encode("Q", NL)
    x, y = gen.script(
        prompt,
        cont("x", NL, entropy=1.0, finish=STOP),
        cont("y", NL, entropy=[1.0, 1.0 + 1e-9], finish=STOP),
    )
    gen.script(x, cont("\\boxed{1}", entropy=0.0))
    gen.script(y, cont("\\boxed{2}", entropy=0.0))
    return gen, prompt, x, y


@pytest.mark.parametrize("mode", ["faithful", "adaptive"])
async def test_pruning_exactly_at_tau(mode):
    gen, prompt, x, y = exact_tau_tree()
    result = await cat.run(gen, prompt, params(mode=mode, branches=2, tau=math.exp(-1.0), max_step_tokens=2))
    assert result.answer == "1"
    assert result.confidence == math.exp(-1.0)
    assert x in gen.requested() and y not in gen.requested()
    assert result.stats.pruned == 1


@pytest.mark.parametrize("mode", ["faithful", "adaptive", "stream"])
async def test_answer_below_tau_joins_the_answer_set(mode):
    """Algorithm 2, lines 10-13: the answer test comes before, and independently of, tau.

    tau = 0.5. Depth 1: one step "s" with entropy 0.5 -> c = e^-0.5 = 0.606531 >= tau: active
    (stream: confident_threshold 0.9 > c, so the request is cut there and it is scored like the others).
    Depth 2: the only step "\\boxed{9}" has entropy 3.0 -> c = e^-3 = 0.049787, so
    C = e^-3.5 = 0.030197 < tau. It is the only answer and must be returned with that C (the old rule
    pruned it and returned no answer). A NON-answer step with the same C is pruned: see the tree below.
    """
    gen = FakeGenerator()
    prompt = gen.encode("Q")
    [s] = gen.script(prompt, cont("s", NL, entropy=0.5, finish=STOP))
    gen.script(s, cont("\\boxed{9}", entropy=3.0))
    p = params(mode=mode, branches=1, tau=0.5, confident_threshold=0.9)
    result = await cat.run(gen, prompt, p)
    assert result.answer == "9"
    assert result.confidence == pytest.approx(math.exp(-3.5))
    assert result.stats.pruned == 0


async def test_only_non_answer_branches_are_pruned_below_tau():
    """tau = 0.5, K = 2, faithful. Depth 1: "a" (entropy 3.0 -> c = e^-3 = 0.0498 < tau, no answer:
    pruned, never expanded) and "\\boxed{4}" (entropy 2.0 -> C = e^-2 = 0.1353 < tau, an answer:
    kept). Result: 4 with confidence e^-2; one prune; "a"'s prefix is never requested."""
    gen = FakeGenerator()
    prompt = gen.encode("Q")
    a, _ = gen.script(prompt, cont("a", NL, entropy=3.0, finish=STOP), cont("\\boxed{4}", entropy=2.0))
    result = await cat.run(gen, prompt, params(mode="faithful", branches=2, tau=0.5))
    assert (result.answer, result.stats.pruned) == ("4", 1)
    assert result.confidence == pytest.approx(math.exp(-2.0))
    assert a not in gen.requested()


async def test_eos_without_marker_uses_last_number_and_no_number_is_dropped():
    # "so 12" ends with EOS (no marker): fallback extraction over the whole path -> 12, C = e^-0.1.
    # "no idea" ends with EOS and holds no number: dropped (pruned).
    gen = FakeGenerator()
    prompt = gen.encode("Q")
    gen.script(prompt, cont("no", " idea", entropy=0.0), cont("so", " 12", entropy=0.1))
    result = await cat.run(gen, prompt, params(mode="faithful", branches=2))
    assert result.answer == "12"
    assert result.confidence == pytest.approx(math.exp(-0.1))
    assert result.stats.pruned == 1


async def test_exhausted_budget_is_not_an_answer():
    # max_tokens 3: "a\n\n" (2 tokens) then a call limited to 1 token -> "7" (LENGTH); the path is out
    # of budget without a marker answer -> dropped -> explicit failure
    gen = FakeGenerator()
    prompt = gen.encode("Q")
    [a] = gen.script(prompt, cont("a", NL, finish=STOP))
    gen.script(a, cont("7", " more", " \\boxed{7}"))
    result = await cat.run(gen, prompt, params(mode="faithful", branches=1, max_tokens=3))
    assert result.answer is None
    assert gen.calls[1].params.max_tokens == 1


def confident_chain(gen: FakeGenerator, prompt) -> None:
    """Three steps, every token with entropy 0.05 -> c = e^-0.05 = 0.951 >= 0.8; C = e^-0.15."""
    [a] = gen.script(prompt, cont("a", NL, entropy=0.05, finish=STOP))
    [b] = gen.script(a, cont("b", NL, entropy=0.05, finish=STOP))
    gen.script(b, cont("\\boxed{7}", entropy=0.05))


async def test_adaptive_spends_fewer_tokens_than_faithful_on_a_confident_script():
    # K = 3. faithful: depth 1: 3 x "a\n\n" = 6 tokens; depth 2: 3 active x 3 x 2 = 18; depth 3: 9 x 1 = 9
    # -> 33 tokens. adaptive: one confident sample per depth -> 2 + 2 + 1 = 5 tokens.
    results = {}
    for mode in ("faithful", "adaptive"):
        gen = FakeGenerator()
        prompt = gen.encode("Q")
        confident_chain(gen, prompt)
        results[mode] = await cat.run(gen, prompt, params(mode=mode, branches=3))
    f, a = results["faithful"], results["adaptive"]
    assert f.answer == a.answer == "7"
    assert f.confidence == pytest.approx(math.exp(-0.15)) and a.confidence == pytest.approx(math.exp(-0.15))
    assert (f.stats.tokens_generated, a.stats.tokens_generated) == (33, 5)
    assert (f.stats.engine_calls, a.stats.engine_calls) == (3, 3)


def consensus_tree(gen: FakeGenerator, prompt) -> tuple[int, ...]:
    """Depth 1: u (H 0.3), v (H 0.4), w (H 0.5). Depth 2: u and v answer 3; w continues ("more").
    Depth 3 under w+more: answer 4 with C = e^-0.6 = 0.549 < C(u, 3) = e^-0.4 = 0.670."""
    u, v, w = gen.script(
        prompt,
        cont("u", NL, entropy=0.3, finish=STOP),
        cont("v", NL, entropy=0.4, finish=STOP),
        cont("w", NL, entropy=0.5, finish=STOP),
    )
    gen.script(u, cont("\\boxed{3}", entropy=0.1))
    gen.script(v, cont("\\boxed{3}", entropy=0.2))
    [w_more] = gen.script(w, cont("more", NL, entropy=0.1, finish=STOP))
    gen.script(w_more, cont("\\boxed{4}", entropy=0.0))
    return w_more


async def test_consensus_stops_the_search():
    # confident_threshold 0.99: every branch is uncertain, so depth 2 holds 3 + 3 answers "3" and
    # 3 copies of w+more (deduped to one). Consensus 2 is reached -> stop after depth 2; w+more is
    # never extended. Faithful continues to depth 3 and still returns 3 (highest C).
    gen = FakeGenerator()
    prompt = gen.encode("Q")
    w_more = consensus_tree(gen, prompt)
    result = await cat.run(gen, prompt, params(branches=3, confident_threshold=0.99, consensus=2))
    assert result.answer == "3" and result.confidence == pytest.approx(math.exp(-0.4))
    assert result.stats.steps == 2
    assert w_more not in gen.requested()

    gen = FakeGenerator()
    prompt = gen.encode("Q")
    w_more = consensus_tree(gen, prompt)
    result = await cat.run(gen, prompt, params(mode="faithful", branches=3))
    assert result.answer == "3" and result.stats.steps == 3
    assert w_more in gen.requested()


async def test_a_step_below_tau_is_generated_in_full_then_pruned():
    # mult, tau = e^-1.5 (0.2231), confident_threshold 1.0 (always branch), K = 2.
    # call 1: "g\n\n" (logprob -0.1 each, c = e^-0.2) and "y z w\n\n" (logprob -1 per token, c = e^-4 <
    # tau). No step is cut mid-generation (it could still have stated an answer, which Algorithm 2
    # keeps whatever its C), so both modes generate all 4 tokens of y; y holds no answer: pruned, never
    # expanded. Then g's path answers 1: C = e^-0.2 * e^-0.1 = e^-0.3. Tokens: 2 + 4 + 1 + 1.
    for mode in ("adaptive", "faithful"):
        gen = FakeGenerator()
        prompt = gen.encode("Q")
        g, y = gen.script(
            prompt,
            cont("g", NL, logprob=-0.1, finish=STOP),
            cont("y", "z", "w", NL, logprob=-1.0, finish=STOP),
        )
        gen.script(g, cont("\\boxed{1}", logprob=-0.1))
        p = params(mode=mode, branches=2, aggregation="mult", tau=math.exp(-1.5), confident_threshold=1.0)
        result = await cat.run(gen, prompt, p)
        assert result.answer == "1" and result.confidence == pytest.approx(math.exp(-0.3))
        assert result.stats.tokens_generated == 2 + 4 + 1 + 1, mode
        assert y not in gen.requested()


async def test_prefixes_are_token_ids_of_prompt_plus_steps():
    gen, prompt, nodes = greedy_trap()
    await cat.run(gen, prompt, params(mode="faithful", branches=2, tau=0.1))
    assert gen.calls[0].prefixes == (prompt,)
    assert set(gen.calls[1].prefixes) == {nodes["a"], nodes["b"]}
    assert gen.calls[0].params.stop == (NL,)


async def test_adaptive_beam_one_follows_only_the_most_confident_branch():
    """K=2, beam=1, confident_threshold=1.0 (every step counts as uncertain, so each depth asks for
    1 sample and then K-1 = 1 more).

    depth 1: "a" (entropy 0.1 -> c = e^-0.1 = 0.905) and "b" (entropy 1.0 -> c = e^-1 = 0.368);
    beam=1 keeps only "a" (1 pruned). depth 2: both samples of "a" answer 5 (EOS).
    "b" is never expanded; 4 engine calls; tokens 2 + 2 + 1 + 1 = 6.
    """
    gen = FakeGenerator()
    prompt = gen.encode("Q", NL)
    a, b = gen.script(prompt, cont("a", NL, entropy=0.1, finish=STOP), cont("b", NL, entropy=1.0, finish=STOP))
    gen.script(a, cont("\\boxed{5}", entropy=0.1))
    gen.script(b, cont("\\boxed{6}", entropy=0.1))
    p = params(mode="adaptive", branches=2, beam=1, confident_threshold=1.0, tau=0.0, consensus=0, max_steps=3)
    result = await cat.run(gen, prompt, p)
    assert result.answer == "5"
    assert {pre for call in gen.calls for pre in call.prefixes} == {prompt, a}  # b never expanded
    s = result.stats
    assert (s.pruned, s.engine_calls, s.tokens_generated) == (1, 4, 6)


async def test_stream_mode_accepts_confident_steps_in_one_request():
    """All steps confident (c = e^-0.1 = 0.905 >= 0.5): one engine request, no branching.

    "Add\\n\\n" is accepted in flight (C = e^-0.1); the request ends at EOS with the tail
    "so \\boxed{5}" (c = e^-0.1), so the answer 5 has C = e^-0.2 = 0.8187.
    """
    gen = FakeGenerator()
    prompt = gen.encode("Q", NL)
    gen.script(prompt, cont("Add", NL, "so", " \\boxed{5}", entropy=0.1))
    p = params(mode="stream", branches=4, confident_threshold=0.5, tau=0.0)
    result = await cat.run(gen, prompt, p)
    assert result.answer == "5" and result.text == "Add\n\nso \\boxed{5}"
    assert result.confidence == pytest.approx(math.exp(-0.2))
    assert len(gen.calls) == 1 and gen.calls[0].params.stop == () and gen.calls[0].early_stop
    s = result.stats
    assert (s.steps, s.engine_calls, s.tokens_generated, s.pruned) == (2, 1, 4, 0)


async def test_stream_trunk_temperature_applies_to_the_followed_path_only():
    """The same tree as the test below, with trunk_temperature 0 and request temperature 0.7: both
    streamed requests (the trunk) go out at temperature 0, the one alternative at the uncertain step at
    0.7. Without trunk_temperature every call uses 0.7. The search itself is unchanged (answer 5)."""
    for trunk, expected in ((0.0, [0.0, 0.7, 0.0]), (None, [0.7, 0.7, 0.7])):
        gen = FakeGenerator()
        prompt = gen.encode("Q", NL)
        _, add = gen.script(prompt, cont("Mul", NL, "\\boxed{6}", entropy=[2.0, 2.0, 0.1]),
                            cont("Add", NL, entropy=0.1, finish=STOP))
        gen.script(add, cont("\\boxed{5}", entropy=0.1))
        p = CaTParams.from_dict({"mode": "stream", "branches": 2, "confident_threshold": 0.5, "tau": 0.0,
                                 "trunk_temperature": trunk}, {"temperature": 0.7})
        result = await cat.run(gen, prompt, p)
        assert result.answer == "5"
        assert [c.params.temperature for c in gen.calls] == expected
        assert [c.early_stop for c in gen.calls] == [True, False, True]


async def test_stream_mode_branches_only_at_the_uncertain_step():
    """The streamed path's first step "Mul\\n\\n" has entropy 2 -> c = e^-2 = 0.135 < 0.5: the request
    is cut there (2 tokens) and K-1 = 1 alternative is sampled with stop = "\\n\\n": "Add\\n\\n",
    c = e^-0.1 = 0.905. Beam 1 follows Add (Mul pruned). The next request answers 5 (c = e^-0.1):
    C = e^-0.2. Calls: stream, alternative, stream = 3; tokens 2 + 2 + 1 = 5.
    """
    gen = FakeGenerator()
    prompt = gen.encode("Q", NL)
    _, add = gen.script(prompt, cont("Mul", NL, "\\boxed{6}", entropy=[2.0, 2.0, 0.1]),
                        cont("Add", NL, entropy=0.1, finish=STOP))
    gen.script(add, cont("\\boxed{5}", entropy=0.1))
    p = params(mode="stream", branches=2, confident_threshold=0.5, tau=0.0)
    result = await cat.run(gen, prompt, p)
    assert result.answer == "5" and result.text == "Add\n\n\\boxed{5}"
    assert result.confidence == pytest.approx(math.exp(-0.2))
    assert [(c.n, c.params.stop, c.early_stop) for c in gen.calls] == [
        (1, (), True), (1, (NL,), False), (1, (), True)]
    s = result.stats
    assert (s.engine_calls, s.tokens_generated, s.pruned) == (3, 5, 1)


def duplicate_tree(gen: FakeGenerator, prompt) -> None:
    """K = 3. Depth 1: "a" twice (entropy 0.2, c = e^-0.2) and "b" once (entropy 1.0, c = e^-1).
    Under a: \\boxed{1} (H 0.1), \\boxed{2} (H 0.5), \\boxed{1} (H 0.1); under b: \\boxed{3} (H 0.05), twice,
    and \\boxed{2} (H 0.3). The fake answers an identical prefix with the same K samples (its script cycles
    with period K), as dedup assumes.
    Exact Algorithm 2 (tau 0.1): depth 1 keeps a, a, b (C e^-0.2, e^-0.2, e^-1 >= 0.1); depth 2 asks 3 x 3 = 9
    steps: answers 1 (C = e^-0.3) x 4, 2 (e^-0.7) x 2, 3 (e^-1.05) x 2, 2 (e^-1.3) x 1. Best: 1, C = e^-0.3.
    dedup: depth 1 a (m 2), b (m 1); depth 2 asks 2 x 3 = 6 steps; under a, 1 has m 2 x 2 = 4 and 2 has m 2;
    under b, 3 has m 2 and 2 has m 1: the same answer multiset (9 paths), the same best path and C, and
    3 + 6 = 9 steps generated instead of 3 + 9 = 12."""
    a, _, b = gen.script(prompt, cont("a", NL, entropy=0.2, finish=STOP), cont("a", NL, entropy=0.2, finish=STOP),
                         cont("b", NL, entropy=1.0, finish=STOP))
    gen.script(a, cont("\\boxed{1}", entropy=0.1), cont("\\boxed{2}", entropy=0.5), cont("\\boxed{1}", entropy=0.1))
    gen.script(b, cont("\\boxed{3}", entropy=0.05), cont("\\boxed{3}", entropy=0.05), cont("\\boxed{2}", entropy=0.3))


async def test_dedup_matches_exact_algorithm_with_fewer_generations():
    results = {}
    for dedup in (False, True):
        gen = FakeGenerator()
        prompt = gen.encode("Q", NL)
        duplicate_tree(gen, prompt)
        results[dedup] = await cat.run(gen, prompt, params(mode="faithful", branches=3, tau=0.1, dedup=dedup,
                                                           return_candidates=True))
    exact, dd = results[False], results[True]
    assert exact.answer == dd.answer == "1"
    assert exact.text == dd.text == "a\n\n\\boxed{1}"
    assert exact.confidence == pytest.approx(math.exp(-0.3)) and dd.confidence == pytest.approx(math.exp(-0.3))

    def weighted(result):  # answer -> summed multiplicity over the answer set
        out = {}
        for c in result.candidates:
            out[c.answer] = out.get(c.answer, 0) + c.meta["multiplicity"]
        return out

    assert weighted(exact) == weighted(dd) == {"1": 4, "2": 3, "3": 2}
    assert len(exact.candidates) == 9 and len(dd.candidates) == 4  # 1, 2 under a; 3, 2 under b
    # (b) fewer generations: 12 steps vs 9; tokens: depth 1 3 x 2 ("a", "\n\n") = 6 in both, depth 2 one token
    # per answer step: 6 + 9 = 15 vs 6 + 6 = 12
    assert (exact.stats.expanded, dd.stats.expanded) == (12, 9)
    assert (exact.stats.tokens_generated, dd.stats.tokens_generated) == (15, 12)


def test_beam_by_multiplicity_counts_slots():
    # K = 3 slots: x (m 2) fills two, y (m 2) gets the one left, z none
    x, y, z = (cat._Path((i,), c, 1, (), multiplicity=m) for i, c, m in ((1, 0.9, 2), (2, 0.8, 2), (3, 0.7, 1)))
    out = cat.beam_by_multiplicity([x, y, z], 3)
    assert [(p.token_ids, p.multiplicity) for p in out] == [((1,), 2), ((2,), 1)]


def test_dedup_param_defaults_off_and_is_checked():
    assert params().dedup is False and params(dedup=True).dedup is True
    from cat_serve.search.params import SearchParamsError
    with pytest.raises(SearchParamsError):
        params(dedup="yes")
