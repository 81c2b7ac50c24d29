"""Self-consistency, perplexity consistency, RPC and DeepConf against hand-computed votes."""

from __future__ import annotations

import math

import pytest

from cat_serve.search import deepconf, perplexity, self_consistency
from cat_serve.search.params import (
    DeepConfParams,
    PerplexityParams,
    RPCParams,
    SearchParamsError,
    SelfConsistencyParams,
)
from cat_serve.search.perplexity import low_component_posterior, reasoning_pruning
from cat_serve.search.types import ABORTED
from tests.fakes import FakeGenerator, cont


def vote_script() -> tuple[FakeGenerator, tuple[int, ...]]:
    """7 paths, in order: A1 B1 A2 B2 A3 B1' A4 (B1' repeats B1's tokens exactly).

    A: answer 5, every token logprob ln 0.2 -> p = 0.2 each, 4 distinct paths.
    B: answer 8, every token logprob ln 0.5 -> p = 0.5 each, 2 distinct paths + 1 duplicate.
    Majority: 5 has 4 votes of 7 -> 5, confidence 4/7 = 0.571429.
    PC: 5 -> 4 * 0.2 = 0.8; 8 -> 0.5 + 0.5 = 1.0 (the duplicate counts once)
        -> 8, confidence 1.0 / 1.8 = 0.555556.
    """
    gen = FakeGenerator()
    prompt = gen.encode("Q")
    a = [cont(f"x{i}", " \\boxed{5}", logprob=math.log(0.2)) for i in range(4)]
    b = [cont(f"y{i}", " \\boxed{8}", logprob=math.log(0.5)) for i in range(2)]
    gen.script(prompt, a[0], b[0], a[1], b[1], a[2], b[0], a[3])
    return gen, prompt


async def test_majority_vote_and_stats():
    gen, prompt = vote_script()
    events = []
    p = SelfConsistencyParams.from_dict({"n": 7, "return_candidates": True}, {"max_tokens": 50})
    result = await self_consistency.run(gen, prompt, p, on_event=events.append)
    assert result.answer == "5" and result.text == "x0 \\boxed{5}"
    assert result.confidence == pytest.approx(4 / 7)
    assert len(gen.calls) == 1 and gen.calls[0].n == 7 and gen.calls[0].params.stop == ()
    assert gen.calls[0].params.max_tokens == 50
    s = result.stats
    assert (s.steps, s.expanded, s.tokens_generated, s.engine_calls) == (1, 7, 14, 1)
    assert len(result.candidates) == 7
    assert events == [{"type": "samples", "n": 7, "answered": 7}]


async def test_perplexity_consistency_disagrees_with_majority():
    gen, prompt = vote_script()
    result = await perplexity.run(gen, prompt, PerplexityParams.from_dict({"n": 7}, {}))
    assert result.answer == "8" and result.text == "y0 \\boxed{8}"
    assert result.confidence == pytest.approx(1.0 / 1.8)


async def test_self_consistency_tie_goes_to_the_earliest_answer_and_unanswered_paths_do_not_vote():
    # answers: 5, none, 8, 8, 5 -> 2 : 2 tie -> 5 (first seen at index 0); share 2/4 answered = 0.5
    gen = FakeGenerator()
    prompt = gen.encode("Q")
    gen.script(prompt, cont("\\boxed{5}"), cont("hmm"), cont("\\boxed{8}"), cont("8.0 is", " \\boxed{8.0}"),
               cont("\\boxed{5}"))
    result = await self_consistency.run(gen, prompt, SelfConsistencyParams.from_dict({"n": 5}, {}))
    assert result.answer == "5" and result.confidence == 0.5


async def test_no_answer_at_all_returns_the_best_path_not_an_empty_text():
    # issue 23 (L item 1) replaced the old explicit failure (answer None, text "", confidence 0): no
    # path holds an answer, so the path with the highest mean logprob is returned; both paths are
    # "no idea" with logprob -0.1 per token -> p = exp(-0.1) = 0.904837; the earlier one wins the tie
    gen = FakeGenerator()
    prompt = gen.encode("Q")
    gen.script(prompt, cont("no", " idea"))
    result = await self_consistency.run(gen, prompt, SelfConsistencyParams.from_dict({"n": 2}, {}))
    assert (result.answer, result.text) == (None, "no idea")
    assert result.confidence == pytest.approx(math.exp(-0.1))
    assert result.selection == "no_answer:best_path_score"


async def test_no_text_at_all_is_an_explicit_failure():
    # every path is white space only: nothing to return -> empty text, confidence 0, "no_text"
    gen = FakeGenerator()
    prompt = gen.encode("Q")
    gen.script(prompt, cont(" ", "\n"))
    result = await self_consistency.run(gen, prompt, SelfConsistencyParams.from_dict({"n": 2}, {}))
    assert (result.answer, result.text, result.confidence, result.selection) == (None, "", 0.0, "no_text")


LOW = [0.21, 0.22, 0.23, 0.24, 0.25, 0.26, 0.27, 0.28]


def rpc_script() -> tuple[FakeGenerator, tuple[int, ...]]:
    """2 confident paths answer 5 (p = 0.90, 0.88); 8 distinct unsure paths answer 8 (p = 0.21..0.28).

    PC alone: 5 -> 1.78; 8 -> 0.21 + ... + 0.28 = 1.96 -> 8 (1.96 / 3.74 = 0.524).
    RPC: mean p = 3.74 / 10 = 0.374; the mixture puts all 8 low paths in the low component and each
    is below the mean -> pruned; 5 wins with confidence 1.78 / 1.78 = 1.
    """
    gen = FakeGenerator()
    prompt = gen.encode("Q")
    high = [cont(f"h{i}", " \\boxed{5}", logprob=math.log(p)) for i, p in enumerate([0.90, 0.88])]
    low = [cont(f"l{i}", " \\boxed{8}", logprob=math.log(p)) for i, p in enumerate(LOW)]
    gen.script(prompt, low[0], high[0], *low[1:5], high[1], *low[5:])
    return gen, prompt


async def test_rpc_prunes_the_low_probability_cluster():
    gen, prompt = rpc_script()
    pc = await perplexity.run(gen, prompt, PerplexityParams.from_dict({"n": 10}, {}))
    assert pc.answer == "8" and pc.confidence == pytest.approx(1.96 / 3.74)

    gen, prompt = rpc_script()
    result = await perplexity.run_rpc(gen, prompt, RPCParams.from_dict({"n": 10}, {}))
    assert result.answer == "5" and result.confidence == pytest.approx(1.0)
    assert result.stats.pruned == 8 and result.stats.strategy == "rpc"


def test_weibull_mixture_posterior_and_robustness():
    p = [0.90, 0.88, *LOW]
    post = low_component_posterior(p)
    assert post[:2] == pytest.approx([0.0, 0.0], abs=1e-3) and all(post[2:] > 0.99)
    assert reasoning_pruning(p) == [True, True] + [False] * 8
    assert reasoning_pruning([0.9, 0.1, 0.5]) == [True] * 3  # N < 4: no pruning
    assert reasoning_pruning([0.4] * 6) == [True] * 6  # identical p: no pruning


def deepconf_script() -> tuple[FakeGenerator, tuple[int, ...]]:
    """Token confidence = -mean(top-2 logprobs): top (0, -4) -> 2.0; (0, -2) -> 1.0; (0, -3.6) -> 1.8.

    W1 "a b c 7": confidences 2,2,2,2 -> score (lowest window-2 mean) 2.0, answer 7
    W2 "d e f 3": 1,1,1,1 -> 1.0, answer 3
    O1 "g h i j k 3": 2,2,1,1,2,2 -> windows 2, 1.5, 1, 1.5, 2 -> 1.0, answer 3
    O2 "l m 3": 1.8,1.8,1.8 -> 1.8, answer 3
    """
    gen = FakeGenerator()
    prompt = gen.encode("Q")
    c2, c1 = [0.0, -4.0], [0.0, -2.0]
    gen.script(
        prompt,
        cont("a", "b", "c", " \\boxed{7}", top=c2),
        cont("d", "e", "f", " \\boxed{3}", top=c1),
        cont("g", "h", "i", "j", "k", " \\boxed{3}", top=[c2, c2, c1, c1, c2, c2]),
        cont("l", "m", " \\boxed{3}", top=[0.0, -3.6]),
    )
    return gen, prompt


async def test_deepconf_online_stops_a_trace_at_a_known_token():
    # warmup W1, W2 -> threshold = 50th percentile of (2.0, 1.0) = 1.5.
    # O1: window after token 2 = 2.0, after token 3 = (2 + 1)/2 = 1.5 (not below), after token 4 = 1.0
    # < 1.5 -> stopped with 4 tokens "g h i j". Voters: W1 (2.0 >= 1.5) and O2 (1.8); W2 (1.0) filtered.
    # Vote: 7 -> 2.0, 3 -> 1.8 -> 7 with confidence 2.0 / 3.8 = 0.526316.
    gen, prompt = deepconf_script()
    p = DeepConfParams.from_dict({"n": 4, "warmup": 2, "window": 2, "eta": 50, "mode": "online",
                                  "return_candidates": True}, {})
    events = []
    result = await deepconf.run(gen, prompt, p, on_event=events.append)
    assert [(c.n, c.early_stop) for c in gen.calls] == [(2, False), (2, True)]
    stopped = result.candidates[2]
    assert stopped.text == "ghij" and stopped.meta["finish_reason"] == ABORTED and not stopped.meta["voted"]
    assert result.answer == "7" and result.confidence == pytest.approx(2.0 / 3.8)
    assert result.stats.tokens_generated == 4 + 4 + 4 + 3 and result.stats.pruned == 2
    assert events[0] == {"type": "warmup", "n": 2, "threshold": 1.5}


@pytest.mark.parametrize(("eta", "answer", "confidence"), [
    (50, "7", 2.0 / 3.8),  # keeps W1 (2.0) and O2 (1.8): 7 -> 2.0 vs 3 -> 1.8
    (100, "3", 3.8 / 5.8),  # all vote: 7 -> 2.0 vs 3 -> 1.0 + 1.0 + 1.8 = 3.8
])
async def test_deepconf_offline_filter_and_weighted_vote(eta, answer, confidence):
    gen, prompt = deepconf_script()
    p = DeepConfParams.from_dict({"n": 4, "window": 2, "eta": eta}, {})
    result = await deepconf.run(gen, prompt, p)
    assert result.answer == answer and result.confidence == pytest.approx(confidence)
    assert len(gen.calls) == 1 and gen.calls[0].params.top_logprobs >= 2


def consensus_script(first_other: bool) -> tuple[FakeGenerator, tuple[int, ...]]:
    """Traces answering 7 score 2.0 (top logprobs 0, -4 -> C = 2.0 per token); the trace answering 3
    scores 1.0 (top 0, -2). With first_other the second warmup trace answers 3."""
    gen = FakeGenerator()
    prompt = gen.encode("Q")
    seven = cont("a", "b", " \\boxed{7}", top=[0.0, -4.0])
    three = cont("c", "d", " \\boxed{3}", top=[0.0, -2.0])
    gen.script(prompt, seven, three if first_other else seven, *[seven] * 6)
    return gen, prompt


async def test_deepconf_online_consensus_stop_after_first_round():
    # warmup: two 7s (2.0, 2.0): threshold = 10th percentile = 2.0, both vote. Round 1 (batch 2):
    # two more 7s -> share 8/8 = 1.0 >= 0.95 -> stop with 4 of the 8 traces, in 2 calls.
    gen, prompt = consensus_script(first_other=False)
    p = DeepConfParams.from_dict({"n": 8, "warmup": 2, "batch": 2, "window": 2, "mode": "online"}, {})
    events = []
    result = await deepconf.run(gen, prompt, p, on_event=events.append)
    assert [(c.n, c.early_stop) for c in gen.calls] == [(2, False), (2, True)]
    assert result.answer == "7" and result.confidence == pytest.approx(1.0)
    assert result.stats.tokens_generated == 4 * 3
    assert {"type": "round", "n": 4, "consensus": 1.0} in events


@pytest.mark.parametrize(("beta", "calls", "share"), [
    # warmup 7 (2.0) and 3 (1.0); eta 100 -> threshold = min = 1.0: both vote. Each round adds two
    # 7s (4.0): after round 1 share = 6/7 = 0.857, after round 2 10/11 = 0.909, round 3 14/15 = 0.933.
    (0.9, 3, 10 / 11),  # 0.857 < 0.9 goes on; 0.909 >= 0.9 stops: 6 traces
    (0.95, 4, 14 / 15),  # never reached: all n = 8 traces
])
async def test_deepconf_online_consensus_threshold(beta, calls, share):
    gen, prompt = consensus_script(first_other=True)
    p = DeepConfParams.from_dict({"n": 8, "warmup": 2, "batch": 2, "window": 2, "eta": 100,
                                  "mode": "online", "consensus": beta}, {})
    result = await deepconf.run(gen, prompt, p)
    assert len(gen.calls) == calls and result.stats.expanded == 2 * calls
    assert result.answer == "7" and result.confidence == pytest.approx(share)


def test_deepconf_consensus_must_be_positive():
    with pytest.raises(SearchParamsError):
        DeepConfParams.from_dict({"consensus": 0.0}, {})
