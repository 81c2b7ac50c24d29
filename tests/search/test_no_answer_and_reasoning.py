"""Issue 23 (L items 1 and 3) in the search core, with the fake generator; every expected number is
worked out by hand in the comments.

* no extractable answer: every strategy returns its best path by path score, ``answer`` None,
  ``selection == "no_answer:best_path_score"``, the path score as (raw) confidence, a profile's
  ``<strategy>:no_answer`` map applied when present, abstention by ``min_confidence`` only;
* reasoning traces: answers read after ``</think>``, CaT's steps inside the thinking, DeepConf's
  default window from the traces' length.
"""

from __future__ import annotations

import math

import pytest

from cat_serve.calibration import CalibrationProfile
from cat_serve.search import cat, deepconf, perplexity, registry, self_consistency
from cat_serve.search.deepconf import default_window
from cat_serve.search.params import CaTParams, DeepConfParams, SearchParamsError
from cat_serve.search.types import SELECT_BEST_ANSWER, SELECT_NO_ANSWER, SELECT_VOTE, STOP
from tests.fakes import FakeGenerator, cont

NL = "\n\n"
POEM = "Write a two-line poem about the sea."


def poem_script() -> tuple[FakeGenerator, tuple[int, ...]]:
    """Three poems, no answer in any. Per token: logprob and DeepConf top-2 logprobs.

    P0 "Waves roll," / " tides sing."  logprob ln 0.5 -> p = 0.5;   top (0, -2) -> C = 1.0 per token
    P1 "Blue sea," / " grey sky."      logprob ln 0.8 -> p = 0.8;   top (0, -3) -> C = 1.5
    P2 "Salt wind," / " white foam."   logprob ln 0.6 -> p = 0.6;   top (0, -5) -> C = 2.5
    """
    gen = FakeGenerator()
    prompt = gen.encode(POEM)
    gen.script(
        prompt,
        cont("Waves roll,", " tides sing.", logprob=math.log(0.5), top=[0.0, -2.0]),
        cont("Blue sea,", " grey sky.", logprob=math.log(0.8), top=[0.0, -3.0]),
        cont("Salt wind,", " white foam.", logprob=math.log(0.6), top=[0.0, -5.0]),
    )
    return gen, prompt


@pytest.mark.parametrize(("name", "search_params", "text", "confidence", "raw"), [
    # SC and PC: the highest path probability exp(mean logprob): P1, 0.8
    ("self_consistency", {"n": 3}, "Blue sea, grey sky.", 0.8, 0.8),
    ("ppl_consistency", {"n": 3}, "Blue sea, grey sky.", 0.8, 0.8),
    # RPC with n = 3 < 4 prunes nothing: the same path
    ("rpc", {"n": 3}, "Blue sea, grey sky.", 0.8, 0.8),
    # DeepConf (eta 100, window 2): the highest trace confidence is P2's 2.5; not a probability, so the
    # unmapped confidence is P2's path probability 0.6 and the raw score stays 2.5
    ("deepconf", {"n": 3, "eta": 100, "window": 2}, "Salt wind, white foam.", 0.6, 2.5),
])
async def test_sampling_strategies_return_the_best_path_without_an_answer(name, search_params, text, confidence, raw):
    gen, prompt = poem_script()
    params = registry.parse_params(name, search_params, {})
    result, abstained = await registry.run_search(name, gen, prompt, params)
    assert result.answer is None and result.text == text and not abstained
    assert result.selection == SELECT_NO_ANSWER
    assert result.confidence == pytest.approx(confidence) and result.raw_confidence == pytest.approx(raw)
    assert result.calibrated is False  # the flag: confidence is the raw path score


async def test_cat_returns_the_best_ended_path_without_an_answer():
    # K = 2, faithful. Depth 1: "Waves" (entropy 0.2 -> c = e^-0.2) and "Blue" (entropy 0.4 -> e^-0.4),
    # both STOP at "\n\n". Depth 2 (one step per branch's 2 samples, each ending the poem with EOS and
    # no answer): under Waves, " tides sing." entropy 0.1 and " foam." entropy 1.0; under Blue,
    # " grey sky." entropy 0.0 (twice). Ended paths' C: e^-0.3, e^-1.2, e^-0.4, e^-0.4 -> the best
    # is "Waves roll,\n\n tides sing." with C = e^-0.3 = 0.740818.
    gen = FakeGenerator()
    prompt = gen.encode(POEM)
    a, b = gen.script(prompt, cont("Waves roll,", NL, entropy=0.2, finish=STOP),
                      cont("Blue sea,", NL, entropy=0.4, finish=STOP))
    gen.script(a, cont(" tides sing.", entropy=0.1), cont(" foam.", entropy=1.0))
    gen.script(b, cont(" grey sky.", entropy=0.0))
    result = await cat.run(gen, prompt, CaTParams.from_dict({"mode": "faithful", "branches": 2}, {}))
    assert result.answer is None and result.selection == SELECT_NO_ANSWER
    assert result.text == "Waves roll,\n\n tides sing."
    assert result.confidence == pytest.approx(math.exp(-0.3))
    assert result.finish_reason == "stop"


async def test_cat_falls_back_to_the_deepest_cut_path():
    # tau = 0.5, K = 1: "Once" (entropy 0.1 -> C = e^-0.1 = 0.905) survives; its next step (entropy
    # 1.0 -> C = e^-1.1 = 0.333 < tau) is pruned. No path ended: the deepest cut path is returned
    # (depth 2, C = e^-1.1), flagged as cut with finish_reason "length".
    gen = FakeGenerator()
    prompt = gen.encode(POEM)
    [a] = gen.script(prompt, cont("Once", NL, entropy=0.1, finish=STOP))
    gen.script(a, cont("upon", NL, entropy=1.0, finish=STOP))
    result = await cat.run(gen, prompt, CaTParams.from_dict({"mode": "faithful", "branches": 1, "tau": 0.5}, {}))
    assert result.answer is None and result.text == "Once\n\nupon\n\n"
    assert result.confidence == pytest.approx(math.exp(-1.1)) and result.finish_reason == "length"


async def test_an_answer_still_wins_and_says_how_it_was_chosen():
    gen = FakeGenerator()
    prompt = gen.encode("What is 2+2?")
    gen.script(prompt, cont("\\boxed{4}"), cont("no idea"))
    sc, _ = await registry.run_search("self_consistency", gen, prompt, registry.parse_params("self_consistency", {"n": 2}))
    assert (sc.answer, sc.selection) == ("4", SELECT_VOTE)
    gen = FakeGenerator()
    prompt = gen.encode("What is 2+2?")
    gen.script(prompt, cont("\\boxed{4}"))
    c, _ = await registry.run_search("cat", gen, prompt, registry.parse_params("cat", {"mode": "faithful"}))
    assert (c.answer, c.selection) == ("4", SELECT_BEST_ANSWER)


async def test_no_answer_map_calibrates_and_min_confidence_abstains():
    # profile: "self_consistency:no_answer" is Platt with a = 0, b = 0 -> always sigmoid(0) = 0.5;
    # the answer map "self_consistency" must NOT be used for a no-answer path (it would give 0.1).
    profile = CalibrationProfile.from_dict({"version": 1, "maps": {
        "self_consistency": {"kind": "platt", "a": 0.0, "b": math.log(0.1 / 0.9)},
        "self_consistency:no_answer": {"kind": "platt", "a": 0.0, "b": 0.0}}})
    gen, prompt = poem_script()
    params = registry.parse_params("self_consistency", {"n": 3, "min_confidence": 0.6})
    result, abstained = await registry.run_search("self_consistency", gen, prompt, params, profile=profile)
    assert result.confidence == pytest.approx(0.5) and result.raw_confidence == pytest.approx(0.8)
    assert result.calibrated and abstained  # 0.5 < min_confidence 0.6
    gen, prompt = poem_script()
    params = registry.parse_params("self_consistency", {"n": 3, "min_confidence": 0.4})
    result, abstained = await registry.run_search("self_consistency", gen, prompt, params, profile=profile)
    assert not abstained and result.text == "Blue sea, grey sky."


async def test_answer_format_none_and_number_change_what_counts():
    # "Hello 42" ends in a number: auto votes 42; none never answers (best path by probability)
    gen = FakeGenerator()
    prompt = gen.encode("Say hello.")
    gen.script(prompt, cont("Hello", " 42", logprob=math.log(0.5)), cont("Hi", " there", logprob=math.log(0.9)))
    auto = await self_consistency.run(gen, prompt, registry.parse_params("self_consistency", {"n": 2}))
    assert (auto.answer, auto.text) == ("42", "Hello 42")
    gen = FakeGenerator()
    prompt = gen.encode("Say hello.")
    gen.script(prompt, cont("Hello", " 42", logprob=math.log(0.5)), cont("Hi", " there", logprob=math.log(0.9)))
    none = await self_consistency.run(gen, prompt, registry.parse_params(
        "self_consistency", {"n": 2, "answer_format": "none"}))
    assert (none.answer, none.text, none.selection) == (None, "Hi there", SELECT_NO_ANSWER)
    with pytest.raises(SearchParamsError, match="answer_format"):
        registry.parse_params("cat", {"answer_format": "letters"})


async def test_profile_defaults_may_set_answer_format():
    profile = CalibrationProfile.from_dict({"version": 1, "maps": {},
                                            "search_defaults": {"rpc": {"answer_format": "choice"}}})
    assert registry.parse_params("rpc", None, {}, profile).answer_format == "choice"
    assert registry.parse_params("rpc", {"answer_format": "text"}, {}, profile).answer_format == "text"


async def test_question_text_overrides_the_decoded_prompt():
    # the decoded prompt "Q" asks nothing; the API's question "How many?" asks for a number, so the
    # prose number of "I saw 3 cats today." becomes a vote
    gen = FakeGenerator()
    prompt = gen.encode("Q")
    gen.script(prompt, cont("I saw 3 cats", " today."))
    params = registry.parse_params("self_consistency", {"n": 1})
    plain, _ = await registry.run_search("self_consistency", gen, prompt, params)
    assert plain.answer is None
    gen = FakeGenerator()
    prompt = gen.encode("Q")
    gen.script(prompt, cont("I saw 3 cats", " today."))
    asked, _ = await registry.run_search("self_consistency", gen, prompt, params, question="How many cats?")
    assert asked.answer == "3"


# ---- reasoning traces -----------------------------------------------------------------------------
async def test_votes_read_the_content_after_the_thinking():
    # every path thinks "\boxed{5}" (a box would win over "the answer is" if the thinking were read)
    # and concludes after </think>: votes 6, 6, 7 -> 6 with share 2/3
    gen = FakeGenerator()
    prompt = gen.encode("What is 2*3?")
    gen.script(prompt,
               cont("<think>", "so \\boxed{5}", "</think>", "The answer is 6."),
               cont("<think>", "\\boxed{5}?", "</think>", "The answer is 6."),
               cont("<think>", "\\boxed{5}", "</think>", "The answer is 7."))
    result = await self_consistency.run(gen, prompt, registry.parse_params("self_consistency", {"n": 3}))
    assert result.answer == "6" and result.confidence == pytest.approx(2 / 3)


async def test_a_prompt_that_opens_the_thinking():
    # the template ends the prompt with "<think>": the first path never closes it (no answer, though
    # it says "the answer is 5"), the second closes it and answers 6 -> 6 with share 1/1
    gen = FakeGenerator()
    prompt = gen.encode("What is 2*3?", "<think>")
    gen.script(prompt, cont("the answer is 5"), cont("2*3 = 6", "</think>", "\\boxed{6}"))
    result = await self_consistency.run(gen, prompt, registry.parse_params("self_consistency", {"n": 2}))
    assert result.answer == "6" and result.confidence == 1.0
    # with reasoning blocks turned off, the first path's "the answer is 5" votes: a 1 : 1 tie -> 5
    gen = FakeGenerator()
    prompt = gen.encode("What is 2*3?", "<think>")
    gen.script(prompt, cont("the answer is 5"), cont("2*3 = 6", "</think>", "\\boxed{6}"))
    off = await self_consistency.run(gen, prompt, registry.parse_params("self_consistency", {"n": 2, "reasoning_end": ""}))
    assert off.answer == "5"


async def test_cat_steps_are_the_paragraphs_of_the_thinking():
    # Steps split at "\n\n" inside the thinking. Step 1 "<think>the answer is 5" is a thought (inside
    # the block): not an answer, the path goes on; step 2 closes the block and answers 6. Entropies
    # 0.1 and 0.2 -> C = e^-0.3. Stream mode with confident_threshold 0: both steps accepted in one
    # request; the answer step cuts it.
    gen = FakeGenerator()
    prompt = gen.encode("What is 2*3?")
    gen.script(prompt, cont("<think>", "the answer is 5", NL, "</think>", "\\boxed{6}", entropy=[0.1, 0.1, 0.1, 0.2, 0.2]))
    p = CaTParams.from_dict({"mode": "stream", "confident_threshold": 0.0}, {})
    result = await cat.run(gen, prompt, p)
    assert result.answer == "6" and result.stats.steps == 2
    assert result.confidence == pytest.approx(math.exp(-0.1) * math.exp(-0.2))
    # faithful mode reads the same steps
    gen = FakeGenerator()
    prompt = gen.encode("What is 2*3?")
    [a] = gen.script(prompt, cont("<think>", "the answer is 5", NL, entropy=0.1, finish=STOP))
    gen.script(a, cont("</think>", "\\boxed{6}", entropy=0.2))
    result = await cat.run(gen, prompt, CaTParams.from_dict({"mode": "faithful", "branches": 1}, {}))
    assert result.answer == "6" and result.stats.steps == 2


def test_deepconf_default_window_follows_trace_length():
    # a quarter of the median length, within [64, 2048]
    assert default_window([100, 200, 300]) == 64  # 200 / 4 = 50 -> 64
    assert default_window([1000, 2000, 4000]) == 500  # 2000 / 4
    assert default_window([8192, 9000, 30000]) == 2048  # 9000 / 4 = 2250 -> the paper's 2048
    assert DeepConfParams.from_dict(None).window is None


async def test_deepconf_reports_the_window_it_used():
    # three 3-token traces: median 3 -> window 64 (the whole trace is one group)
    gen, prompt = poem_script()
    result = await deepconf.run(gen, prompt, DeepConfParams.from_dict({"n": 3, "eta": 100}, {}))
    assert result.stats.params["window"] == 64
    explicit = await deepconf.run(*poem_script(), DeepConfParams.from_dict({"n": 3, "window": 2}, {}))
    assert explicit.stats.params["window"] == 2


async def test_rpc_no_answer_uses_a_kept_path():
    # n = 4: p = 0.9, 0.1, 0.1, 0.1 (no answers). The mixture may prune low paths; the kept best is 0.9.
    gen = FakeGenerator()
    prompt = gen.encode(POEM)
    gen.script(prompt, cont("Sea", " song.", logprob=math.log(0.9)),
               *[cont(f"w{i}", " x.", logprob=math.log(0.1)) for i in range(3)])
    result = await perplexity.run_rpc(gen, prompt, registry.parse_params("rpc", {"n": 4}))
    assert result.text == "Sea song." and result.confidence == pytest.approx(0.9)
