"""lab.profile_scope on a hand-made run: served, raw and own-map ECE worked out in the comments."""

import json

import pytest

from lab.profile_scope import render, scope_rows


def test_served_vs_own_map_ece(tmp_path):
    # 6 items, right/wrong alternating; raw score 0.7 and served confidence 0.9 on every item.
    # raw ECE = |0.5 - 0.7| = 0.2, served ECE = |0.5 - 0.9| = 0.4. Cross-fitting in 3 contiguous folds of 2:
    # each map is fitted on 4 items (2 right, 2 wrong) of one raw value, so every candidate map predicts
    # 0.5 (isotonic/Platt: the base rate; constant: (2 + 0.5) / (4 + 1) = 0.5) -> own ECE 0, cost +0.4
    folder = tmp_path / "test-k4"
    run = folder / "PC_k4"
    run.mkdir(parents=True)
    ids = [f"i{i}" for i in range(6)]
    (folder / "settings.json").write_text(json.dumps({"k": 4, "item_ids": ids}))
    (run / "summary.json").write_text("{}")
    (run / "results.jsonl").write_text("".join(json.dumps(
        {"id": i, "correct": n % 2 == 0, "raw_confidence": 0.7, "confidence": 0.9}) + "\n" for n, i in enumerate(ids)))
    [row] = scope_rows(tmp_path)
    assert row["n"] == 6 and row["accuracy"] == 0.5
    assert (row["raw_ece"], row["served_ece"], row["own_ece"]) == (pytest.approx(0.2), pytest.approx(0.4), pytest.approx(0.0))
    assert "| test-k4/PC_k4 | 4 | 6 | 0.500 | 0.200 | 0.400 | 0.000 | +0.400 | fitted at n = 4 |" in render([row])


def test_chosen_runs_name_their_sampling():
    from lab.profile_scope import chosen_mismatch

    assert chosen_mismatch("PC", 8, {"temperature": 0.5, "top_p": 1.0}) == "fitted at n = 8, T 0.7; served at T 0.5"
    assert chosen_mismatch("RPC", 4, {"temperature": 0.7, "top_p": 0.95}) == (
        "fitted at n = 4, T 0.7; served at T 0.7, top_p 0.95")
    assert chosen_mismatch("CaT-stream", 8, {"temperature": 0.5}) == (
        "fitted on stream mode, sampled trunk T 0.7, n = 4; served stream at branch T 0.5, greedy trunk, K = 8")
    assert chosen_mismatch("CaT-faithful", 4, {"temperature": 0.7}).endswith("served faithful at branch T 0.7, dedup")
