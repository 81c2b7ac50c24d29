"""lab.sweep: the replay generator, SC/PC scored from a hand-written recording, and a resumed recording.

No vLLM: recordings are written by hand (or by tests/fakes.py's FakeEngine); expected values are computed by
hand in the comments."""

import asyncio
import json
import math

import pytest

from cat_serve.search.types import EOS, GenParams, Step
from eval.datasets import Item
from lab import sweep
from lab.sweep import Recording, ReplayGenerator, Setting
from tests.fakes import FakeEngine, cont

T07 = Setting(0.7)


def step(i: int, text: str, lp: float, n: int = 2) -> Step:
    """A path of ``n`` tokens (ids distinct per ``i``), every token with logprob ``lp`` and one top-k entry."""
    ids = tuple(1000 * i + t for t in range(n))
    return Step(token_ids=ids, logprobs=(lp,) * n, entropies=(0.1,) * n, top_logprobs=(((ids[0], lp),),) * n,
                text=text, finish_reason=EOS)


def rec(item_id: str, samples, seed: int = 10, setting: Setting = T07) -> Recording:
    return Recording(item_id, (1, 2, 3), "PROMPT", setting, seed, 160, tuple(samples))


def params(n_seed: int | None = 10, top_logprobs: int = 0, **kw) -> GenParams:
    base = {"max_tokens": 160, "temperature": 0.7, "top_p": 1.0, "seed": n_seed, "top_logprobs": top_logprobs}
    return GenParams(**{**base, **kw})


# ---------------------------------------------------------------- replay


def test_replay_hands_back_sample_seed_minus_base_and_k4_is_a_prefix_of_k8():
    samples = [step(j, f"s{j}", -0.1 * (j + 1)) for j in range(8)]
    gen = ReplayGenerator(rec("a", samples))
    [four] = asyncio.run(gen.extend([(1, 2, 3)], 4, params()))
    [eight] = asyncio.run(gen.extend([(1, 2, 3)], 8, params()))
    assert [s.text for s in four] == ["s0", "s1", "s2", "s3"] and [s.text for s in eight[:4]] == ["s0", "s1", "s2", "s3"]
    # a call seeded 12 (DeepConf online's second round, seed_offset 2) starts at the sample seeded 12: index 2
    [later] = asyncio.run(gen.extend([(1, 2, 3)], 3, params(12)))
    assert [s.text for s in later] == ["s2", "s3", "s4"]
    # no top logprobs when none are asked (SC/PC/RPC), the recorded ones for k = 20 (DeepConf)
    assert four[0].top_logprobs == () and eight[0].top_logprobs == ()
    [with_top] = asyncio.run(gen.extend([(1, 2, 3)], 1, params(top_logprobs=20)))
    assert with_top[0].top_logprobs == samples[0].top_logprobs and with_top[0].logprobs == samples[0].logprobs
    assert gen.calls == 4 and gen.decode((1, 2, 3)) == "PROMPT" and gen.decode(samples[5].token_ids) == "s5"


@pytest.mark.parametrize("bad", [
    {"prefixes": [(9,)]},  # another prompt
    {"temperature": 0.5}, {"top_p": 0.95}, {"max_tokens": 100},  # another setting than recorded
    {"n_seed": None},  # unseeded: which samples would the engine have drawn?
    {"n": 9},  # more than recorded
    {"n_seed": 9},  # a seed below the recorded base
    {"early_stop": True},  # DeepConf online cuts samples: needs new generation
    {"stop": ("\n",)},
])
def test_replay_refuses_what_the_recording_cannot_answer(bad):
    gen = ReplayGenerator(rec("a", [step(j, f"s{j}", -0.1) for j in range(8)]))
    prefixes, n = bad.pop("prefixes", [(1, 2, 3)]), bad.pop("n", 4)
    early = (lambda s: False) if bad.pop("early_stop", False) else None
    with pytest.raises(ValueError):
        asyncio.run(gen.extend(prefixes, n, params(**bad), early_stop=early))


def test_recorded_step_round_trips_through_json_exactly():
    s = Step(token_ids=(5, 6), logprobs=(-0.123456789012345, -1e-9), entropies=(0.5, 0.25),
             top_logprobs=(((5, -0.123456789012345), (7, -2.0)), ((6, -1e-9),)), text="a\n", finish_reason="length")
    r = rec("x", [s])
    back = Recording.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back == r


# ---------------------------------------------------------------- scoring (hand-computed)

ITEM_A = Item(id="a", question="What is 2 + 3?", gold="5")
ITEM_B = Item(id="b", question="What is 1 + 2?", gold="3")


def tiny_recordings() -> dict[str, Recording]:
    """2 items x 4 samples (the first 2 are K = 2's)."""
    # item a (gold 5): answers 5, 5, 7 and none
    a = [step(0, "2 + 3 = 5\n\\boxed{5}", -0.5, 3), step(1, "2 + 3 = 5.\n\\boxed{5}", -0.5, 3),
         step(2, "2 + 3 = 7\n\\boxed{7}", -0.1, 3), step(3, "No idea.", -0.2, 3)]
    # item b (gold 3): answers 4, 4, 3 and none
    b = [step(4, "1 + 2 = 4\n\\boxed{4}", -2.0), step(5, "1 + 2 = 4.\n\\boxed{4}", -2.0),
         step(6, "1 + 2 = 3\n\\boxed{3}", -0.05), step(7, "I cannot tell.", -3.0)]
    return {"a": rec("a", a), "b": rec("b", b)}


def test_sc_and_pc_scored_from_a_tiny_recording_by_hand():
    scored = asyncio.run(sweep.score_setting([ITEM_A, ITEM_B], tiny_recordings(), ks=(2, 4),
                                             selectors=(("SC", "self_consistency"), ("PC", "ppl_consistency"))))
    # samples right: a = [1, 1, 0, 0] (a's 4th states no number), b = [0, 0, 1, 0]
    assert [s["correct"] for s in scored[0]["samples"]] == [True, True, False, False]
    assert [s["correct"] for s in scored[1]["samples"]] == [False, False, True, False]
    k4, k2 = sweep.setting_summary(scored, 4), sweep.setting_summary(scored, 2)
    # mean@4 = (2/4 + 1/4) / 2 = 0.375; pass@4 = (1 + 1) / 2 = 1.0
    assert k4["mean_at_k"] == pytest.approx(0.375) and k4["pass_at_k"] == 1.0
    # mean@2 = (2/2 + 0/2) / 2 = 0.5; pass@2 = (1 + 0) / 2 = 0.5
    assert k2["mean_at_k"] == pytest.approx(0.5) and k2["pass_at_k"] == 0.5
    # SC@4: a: 5 has 2 votes against 7's 1 (and "No idea."'s at most 1) -> right; b: 4 has 2 votes, 3 one -> wrong
    # PC@4: a: 5 weighs 2 exp(-0.5) = 1.213 > 7's exp(-0.1) = 0.905 (> "No idea."'s exp(-0.2) = 0.819) -> right;
    #       b: 3 weighs exp(-0.05) = 0.951 > 4's 2 exp(-2) = 0.271 -> right
    assert [r["k"][4]["SC"]["correct"] for r in scored] == [True, False]
    assert [r["k"][4]["PC"]["correct"] for r in scored] == [True, True]
    assert k4["selectors"]["SC"]["accuracy"] == 0.5 and k4["selectors"]["PC"]["accuracy"] == 1.0
    assert k4["selectors"]["SC"]["gap_to_pass"] == 0.5 and k4["selectors"]["PC"]["gap_to_pass"] == 0.0
    # K = 2: a's [5, 5] -> right for both; b's [4, 4] -> wrong for both
    assert k2["selectors"]["SC"]["accuracy"] == 0.5 and k2["selectors"]["PC"]["accuracy"] == 0.5
    # tokens: a's samples 3 tokens, b's 2: K = 4 (12 + 8) / 2 = 10, K = 2 (6 + 4) / 2 = 5
    assert k4["selectors"]["SC"]["tokens_per_query"] == 10 and k2["selectors"]["PC"]["tokens_per_query"] == 5
    assert math.isclose(2 * math.exp(-2.0), 0.2707, abs_tol=1e-4)  # the weights above, checked


def test_every_selector_runs_on_the_replay_and_deepconf_is_offline():
    scored = asyncio.run(sweep.score_setting([ITEM_A, ITEM_B], tiny_recordings(), ks=(4,)))
    assert set(scored[0]["k"][4]) == {"SC", "PC", "RPC", "DeepConf"}
    assert all(r["k"][4][label]["tokens"] == (12 if r["id"] == "a" else 8) for r in scored for label in r["k"][4])
    with pytest.raises(ValueError):  # online DeepConf cannot replay: refused when the params are built
        sweep.search_params("deepconf", 4, tiny_recordings()["a"],
                            type("P", (), {"defaults_for": lambda self, s, raw: {"mode": "online"}})())


def test_choice_and_vs_greedy_columns():
    scored = asyncio.run(sweep.score_setting([ITEM_A, ITEM_B], tiny_recordings(), ks=(4,),
                                             selectors=(("SC", "self_consistency"), ("PC", "ppl_consistency"))))
    summaries = {"t0.7-p1.0": {4: sweep.setting_summary(scored, 4)}}
    greedy = [{"id": "a", "correct": True, "tokens": 3}, {"id": "b", "correct": False, "tokens": 2}]
    md, table, chosen = sweep.render(summaries, greedy, {"dataset": "d", "n": 2, "model": "m", "samples": 4,
                                                                  "best_temperature": 0.7})
    # PC@4 is more accurate (1.0 > 0.5): chosen for PC; SC's only setting is chosen for SC
    assert chosen["chosen"]["PC"]["4"]["accuracy"] == 1.0 and chosen["chosen"]["SC"]["4"]["setting"] == "t0.7-p1.0"
    pc = next(r for r in table["rows"] if r["selector"] == "PC")
    # PC - greedy: a 1 - 1, b 1 - 0 -> +0.5; McNemar: one discordant pair -> p = 1
    assert pc["vs_greedy"]["accuracy"]["estimate"] == 0.5 and pc["vs_greedy"]["accuracy"]["p"] == 1.0
    assert pc["vs_greedy"]["better"] == "inconclusive" and "| t0.7-p1.0 | 4 | 0.375 | 1.000 | PC | 1.000 |" in md


def test_best_temperature_ties_go_to_fewer_tokens():
    def s(acc, tok):
        return {8: {"selectors": {"SC": {"accuracy": acc, "tokens_per_query": tok}}}}
    summaries = {"t0.3-p1.0": s(0.5, 100), "t0.5-p1.0": s(0.6, 120), "t0.7-p1.0": s(0.6, 110), "t0.7-p0.95": s(0.9, 1)}
    assert sweep.best_temperature(summaries) == 0.7  # 0.5 and 0.7 tie on accuracy; 0.7 has fewer tokens; top_p 0.95 ignored


# ---------------------------------------------------------------- recording resumes


def test_a_partial_recording_is_continued_not_redone(tmp_path):
    engine = FakeEngine(max_model_len=1024)
    items = [Item(id=f"q{i}", question=f"What is {i} + 1?", gold=str(i + 1)) for i in range(3)]
    for it in items:
        prompt = engine.chat_prompt(("user", sweep.user_message(it)))
        engine.gen.script(prompt, *[cont(f"\\boxed{{{int(it.gold) + j}}}", logprob=-0.1 * (j + 1)) for j in range(4)])
    path = tmp_path / "t0.7-p1.0.jsonl"
    stats = asyncio.run(sweep.record_setting(engine, items[:2], T07, path, n_samples=4, seed=3))
    assert stats["recorded"] == 2 and len(engine.gen.calls) == 2
    with open(path, "a") as f:
        f.write('{"id": "q2", "prompt_ids": [')  # an interrupted write: ignored, the item is recorded again
    stats = asyncio.run(sweep.record_setting(engine, items, T07, path, n_samples=4, seed=3))
    # only q2 was asked for: 3 calls in all, not 2 + 3
    assert stats == {**stats, "recorded": 1, "skipped": 2} and len(engine.gen.calls) == 3
    call = engine.gen.calls[-1]
    assert call.n == 4 and call.params.seed == 3 and call.params.temperature == 0.7 and call.params.top_logprobs == 20
    recs = sweep.read_recordings(path)
    assert sorted(recs) == ["q0", "q1", "q2"] and recs["q2"].samples[1].text == "\\boxed{4}" and recs["q2"].seed == 3
    assert recs["q0"].prompt_text == engine.decode(recs["q0"].prompt_ids)


def test_greedy_is_recorded_as_a_plain_temperature_zero_request(tmp_path):
    engine = FakeEngine(max_model_len=1024)
    it = Item(id="g", question="What is 1 + 1?", gold="2")
    engine.gen.script(engine.chat_prompt(("user", sweep.user_message(it))), cont("\\boxed{2}"))
    asyncio.run(sweep.record_setting(engine, [it], Setting(0.0), tmp_path / "greedy.jsonl"))
    call = engine.gen.calls[0]
    assert call.n == 1 and call.params.temperature == 0.0 and call.params.seed is None
    assert sweep.greedy_rows([it], sweep.read_recordings(tmp_path / "greedy.jsonl")) == [
        {"id": "g", "correct": True, "tokens": 1}]


def test_meta_mismatch_refuses_to_mix_sweeps(tmp_path):
    sweep.check_meta(tmp_path, {"model": "a", "seed": 0})
    sweep.check_meta(tmp_path, {"model": "a", "seed": 0})  # the same sweep resumes
    with pytest.raises(SystemExit):
        sweep.check_meta(tmp_path, {"model": "b", "seed": 0})


def test_sweep_end_to_end_on_the_fake_engine_then_resumes_without_an_engine(tmp_path, monkeypatch):
    """record -> score -> top_p 0.95 at SC@4's best temperature -> tables; a second run only scores."""
    items = [Item(id="a", question="What is 2 + 3?", gold="5"), Item(id="b", question="What is 1 + 2?", gold="3")]
    engine = FakeEngine(max_model_len=1024)
    for it in items:  # every call of a prompt gets these 4 paths (the fake cycles through them): 3 of 4 right
        wrong = str(int(it.gold) + 1)
        engine.gen.script(engine.chat_prompt(("user", sweep.user_message(it))),
                          *[cont(f"\\boxed{{{it.gold if j < 3 else wrong}}}", logprob=-0.1) for j in range(4)])
    made = []
    monkeypatch.setattr(sweep, "load_items", lambda limit, seed=0, split="dev": ("arith:toy@dev", items[:limit]))
    monkeypatch.setattr(sweep, "make_engine", lambda model: made.append(model) or engine)
    model, out, recs = tmp_path / "model", tmp_path / "out", tmp_path / "rec"
    model.mkdir()
    chosen = sweep.sweep(model, limit=2, out=out, recordings=recs, temperatures=(0.3, 0.7), ks=(2, 4))
    assert len(made) == 1
    # all of SC@4's settings tie at 1.0 with 4 tokens per query: the lower temperature, 0.3, gets top_p 0.95
    assert sorted(p.name for p in recs.glob("*.jsonl")) == ["greedy.jsonl", "t0.3-p0.95.jsonl", "t0.3-p1.0.jsonl",
                                                            "t0.7-p1.0.jsonl"]
    assert chosen["chosen"]["SC"]["4"] == {"setting": "t0.3-p1.0", "temperature": 0.3, "top_p": 1.0, "accuracy": 1.0,
                                           "tokens_per_query": 4.0}
    table = json.loads((out / "table.json").read_text())
    # 3 settings x 2 K x 4 selectors; greedy is the first path: right on both items
    assert len(table["rows"]) == 24 and table["greedy"]["accuracy"] == 1.0
    # mean@4 = 3/4 on both items, pass@4 = 1
    assert {(r["mean_at_k"], r["pass_at_k"]) for r in table["rows"] if r["k"] == 4} == {(0.75, 1.0)}
    assert (out / "table.md").read_text().startswith("Dev sampling sweep") and (out / "scored.jsonl").exists()
    calls = len(engine.gen.calls)
    sweep.sweep(model, limit=2, out=out, recordings=recs, temperatures=(0.3, 0.7), ks=(2, 4))
    assert len(made) == 1 and len(engine.gen.calls) == calls  # everything recorded: no engine, no generation


def test_the_driver_never_trains(tmp_path, monkeypatch):
    from lab.recipe import sft
    from lab.recipe import sweep as driver

    monkeypatch.setattr(sft, "sft_dir", lambda: tmp_path / "sft-unfinished")
    with pytest.raises(SystemExit, match="make lab-sft"):
        driver.sampling_sweep(5)


def test_top_p_1_records_no_extra_setting(tmp_path, monkeypatch):
    it = Item(id="a", question="What is 2 + 3?", gold="5")
    engine = FakeEngine(max_model_len=1024)
    engine.gen.script(engine.chat_prompt(("user", sweep.user_message(it))), cont("\\boxed{5}"))
    monkeypatch.setattr(sweep, "load_items", lambda limit, seed=0, split="dev": ("arith:toy@dev", [it]))
    monkeypatch.setattr(sweep, "make_engine", lambda model: engine)
    (tmp_path / "m").mkdir()
    sweep.sweep(tmp_path / "m", limit=1, out=tmp_path / "out", recordings=tmp_path / "rec", temperatures=(0.5,),
                ks=(2,), top_p_alt=1.0)
    assert sorted(p.name for p in (tmp_path / "rec").glob("*.jsonl")) == ["greedy.jsonl", "t0.5-p1.0.jsonl"]
    assert "every setting has top_p 1" in (tmp_path / "out" / "table.md").read_text()


def test_test_split_reports_each_selector_at_its_dev_choice(tmp_path, monkeypatch):
    """--split test: the dev-chosen settings only; the table ends with the dev-chosen rows vs greedy (own Holm)."""
    items = [Item(id="a", question="What is 2 + 3?", gold="5"), Item(id="b", question="What is 1 + 2?", gold="3")]
    engine = FakeEngine(max_model_len=1024)
    for it in items:  # 3 of 4 paths right, as in the end-to-end test above; greedy (the first path) right
        wrong = str(int(it.gold) + 1)
        engine.gen.script(engine.chat_prompt(("user", sweep.user_message(it))),
                          *[cont(f"\\boxed{{{it.gold if j < 3 else wrong}}}", logprob=-0.1) for j in range(4)])
    monkeypatch.setattr(sweep, "load_items", lambda limit, seed=0, split="dev": (f"arith:toy@{split}", items[:limit]))
    monkeypatch.setattr(sweep, "make_engine", lambda model: engine)
    model, out, recs = tmp_path / "model", tmp_path / "out", tmp_path / "rec"
    model.mkdir()
    dev_chosen = {"dataset": "arith:toy@dev", "n": 2, "chosen": {
        "SC": {"4": {"setting": "t0.3-p1.0", "temperature": 0.3, "top_p": 1.0}},
        "PC": {"4": {"setting": "t0.5-p0.95", "temperature": 0.5, "top_p": 0.95}}}}
    sweep.sweep(model, limit=2, out=out, recordings=recs, temperatures=(0.3,), ks=(4,), split="test",
                top_p_alt=0.95, top_p_temperature=0.5, dev_chosen=dev_chosen)
    # only the chosen settings are recorded: t0.3 at top_p 1, and top_p 0.95 at dev's t0.5 (not a test choice)
    assert sorted(p.name for p in recs.glob("*.jsonl")) == ["greedy.jsonl", "t0.3-p1.0.jsonl", "t0.5-p0.95.jsonl"]
    md = (out / "table.md").read_text()
    assert md.startswith("Sampling on the test split at the settings chosen on dev")
    assert "top_p 0.95 was recorded at t = 0.5, the temperature the dev sweep chose" in md
    # SC@4 and PC@4 right on both items, as greedy: Δacc 0, no discordant pair (p = 1)
    assert "| SC@4 | t0.3-p1.0 | 1.000 | 4.0 | +0.000 [+0.000, +0.000], p = 1.000 |" in md
    assert "| PC@4 | t0.5-p0.95 | 1.000 |" in md
    assert md.rstrip().endswith("No selector at its dev-chosen setting is better than greedy (1.000) after Holm "
                                "(closest: SC@4 Δacc +0.000 [+0.000, +0.000], p = 1.000, Holm p = 1.000); "
                                "≥ greedy (2-point margin) held for: SC@4, PC@4.")
    table = json.loads((out / "table.json").read_text())
    assert [r["strategy"] for r in table["at_dev_choice"]] == ["SC@4", "PC@4"]
    assert "Best setting per selector" not in md and not (out / "chosen.json").exists()  # nothing chosen on test
