"""lab.calib_features (issue 20 item 4) end to end on the fake engine: record, score at n = 4 and 8, fit per width,
write the table and a profile the server loads; a second run only scores (no engine)."""

import json

import pytest

from cat_serve.calibration import CalibrationProfile
from eval.datasets import Item
from lab import calib_features
from tests.fakes import FakeEngine, cont


def test_record_score_fit_per_width_then_resume_without_an_engine(tmp_path, monkeypatch):
    # 40 items: even ones get 8 right paths (vote share 1: SC right), odd ones alternate wrong/right
    # (2 : 2 at n = 4 and 4 : 4 at n = 8, the tie goes to the earliest answer, the wrong one: vote share 0.5)
    items = [Item(id=f"i{j}", question=f"What is {j} + 1?", gold=str(j + 1)) for j in range(40)]
    engine = FakeEngine(max_model_len=1024)
    for j, it in enumerate(items):
        answers = [it.gold] * 4 if j % 2 == 0 else [str(j + 2), it.gold] * 2
        engine.gen.script(engine.chat_prompt(("user", calib_features.lab_sweep_user_message(it))),
                          *[cont(f"{j} + 1 = {a}\n\\boxed{{{a}}}", logprob=-0.1 * (i + 1)) for i, a in enumerate(answers)])
    made = []
    monkeypatch.setattr(calib_features, "PARTS", {"fit": (0, 20), "held-out": (20, 30), "fresh": (30, 40)})
    monkeypatch.setattr(calib_features, "load_items", lambda dataset, limit, seed=0: items[:limit])
    monkeypatch.setattr(calib_features, "make_engine", lambda model: made.append(model) or engine)
    model, out, recs = tmp_path / "model", tmp_path / "out", tmp_path / "rec"
    model.mkdir()
    kw = dict(out=out, recordings=recs, large=tmp_path / "no-large", dataset="arith:toy@dev", limit=40)
    reports = calib_features.run(model, **kw)
    assert len(made) == 1 and set(reports) == {f"{s}@{k}" for s in ("SC", "PC", "RPC", "DeepConf") for k in (4, 8)}
    sc = reports["SC@4"]
    # SC's raw score is its vote share: 1.0 on the right items, 0.5 on the wrong ones, half of each part
    assert sc["fit"]["n"] == 20 and sc["fit"]["features"] == ["raw", "distinct_answers", "distinct_paths", "vote_share"]
    held = sc["held-out"]["chosen"]
    assert held["n"] == 10 and held["accuracy"] == 0.5
    # raw ECE: 15 equal-width bins; 5 items at 1.0 (acc 1) and 5 at 0.5 (acc 0): (5 * 0 + 5 * 0.5) / 10 = 0.25
    assert held["raw_ece"] == pytest.approx(0.25)
    assert held["ece"] < 0.1 and held["meets_target"]  # the separable case: any fitted map is near 0 and 1
    table = (out / "table.md").read_text()
    assert "| SC@8 |" in table and "- PC@4 with its" in table and "held (" in table
    profile = CalibrationProfile.load(out / "profile.json")
    assert {"self_consistency@4", "self_consistency@8", "self_consistency", "ppl_consistency@8"} <= set(profile.maps)
    assert profile.maps["self_consistency"] == profile.maps["self_consistency@4"]
    scored = [json.loads(line) for line in (out / "scored.jsonl").read_text().splitlines()]
    # item 1 at n = 8: the wrong answer's 4 paths are one text (the same tokens 4 times): 1 distinct path
    assert len(scored) == 40 and scored[1]["k"]["8"]["SC"]["features"] == {
        "vote_share": 0.5, "distinct_answers": 2.0, "distinct_paths": 1.0}
    calls = len(engine.gen.calls)
    assert calib_features.run(model, **kw) == reports  # recorded: the same numbers, no engine, no generation
    assert len(made) == 1 and len(engine.gen.calls) == calls
    assert calib_features.refit(out, items, tmp_path / "no-large") == reports
    assert not (model / "cat_calibration.json").exists()  # the checkpoint gets the profile only when asked
    calib_features.run(model, **kw, install=True)
    assert CalibrationProfile.load(model / "cat_calibration.json").maps == profile.maps


def test_ece_floor_by_hand():
    # certain predictions: outcomes are fixed, a perfect map shows ECE 0
    assert calib_features.ece_floor([0.0, 1.0, 1.0]) == 0.0
    # two items at 0.5, one bin: ECE = |mean(y) - 0.5| = 0.5 when both outcomes agree (probability 1/2), else 0:
    # expected 0.25 (500 draws: standard error 0.25 / sqrt(500) = 0.011)
    assert calib_features.ece_floor([0.5, 0.5]) == pytest.approx(0.25, abs=0.035)


def test_extended_items_keep_the_base_collection_first():
    """A seeded order permutes the whole collection, so the first 30 of 100 shuffled are not the 30-item
    collection's; with ``base`` they are, in its order, and the rest follow (each item once)."""
    base, ext = "arith:ops=2,digits=1,n=30@dev", "arith:ops=2,digits=1,n=100@dev"
    small, plain = calib_features.load_items(base, 30), calib_features.load_items(ext, 100)
    assert [it.id for it in plain[:30]] != [it.id for it in small]
    items = calib_features.load_items(ext, 100, base=base)
    assert [it.id for it in items[:30]] == [it.id for it in small]
    assert sorted(it.id for it in items) == sorted(it.id for it in plain)
    assert calib_features.item_ids(items, {"a": [(0, 2), (30, 31)]})["a"] == [items[0].id, items[1].id, items[30].id]
    with pytest.raises(ValueError, match="not inside"):
        calib_features.load_items("arith:ops=2,digits=1,n=30@dev", 30, base="arith:ops=3,digits=1,n=30@dev")
