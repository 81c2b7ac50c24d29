"""Paired statistics of ``eval.compare``; every expected value is worked out by hand in a comment."""

import json

import numpy as np
import pytest

from eval import compare
from eval.cli import main


def test_mcnemar_exact_by_hand():
    # b=1, c=6: n=7 discordant pairs; P(X <= 1) under Bin(7, 1/2) = (C(7,0) + C(7,1)) / 2^7 = 8/128
    # = 0.0625; two-sided: 0.125
    assert compare.mcnemar_exact(1, 6) == pytest.approx(0.125)
    assert compare.mcnemar_exact(6, 1) == pytest.approx(0.125)
    # b=0, c=5: 2 * 1/32 = 0.0625
    assert compare.mcnemar_exact(0, 5) == pytest.approx(0.0625)
    # b=c: the tail reaches the middle, 2 * P(X <= b) > 1 is capped at 1
    assert compare.mcnemar_exact(3, 3) == 1.0
    assert compare.mcnemar_exact(0, 0) == 1.0


def test_bootstrap_is_seeded():
    a, b = compare.bootstrap_indices(5, 100, 0), compare.bootstrap_indices(5, 100, 0)
    assert a.shape == (100, 5) and (a == b).all()
    assert not (a == compare.bootstrap_indices(5, 100, 1)).all()


# Two items throughout: a resample draws {0,0} w.p. 1/4, {1,1} w.p. 1/4 and one of each w.p. 1/2, so with
# 4,000 resamples the 2.5 % and 97.5 % percentiles are the {0,0} and {1,1} values (each ~1,000 draws).
IDX = compare.bootstrap_indices(2, 4000, 0)


def test_accuracy_difference_two_items():
    # A right on both, B right on item 0 only: per-item differences d = [0, 1]; estimate 0.5;
    # resample means 0 ({0,0}), 0.5, 1 ({1,1}) -> interval [0, 1]; discordant b=1 (only A), c=0 ->
    # McNemar p = 2 * 1/2 = 1.0
    s = compare.accuracy_difference([True, True], [True, False], IDX)
    assert (s.estimate, s.lo, s.hi, s.p) == (0.5, 0.0, 1.0, 1.0)


def test_token_and_latency_ratios_two_items():
    # tokens A = [10, 30], B = [20, 20]: 40/40 = 1.0; {0,0}: 10/20 = 0.5, {1,1}: 30/20 = 1.5 -> [0.5, 1.5]
    s = compare.ratio_of_means([10, 30], [20, 20], IDX)
    assert (s.estimate, s.lo, s.hi) == (1.0, 0.5, 1.5)
    # p50: median A = 20 over median B = 20 -> 1.0; {0,0}: 10/20, {1,1}: 30/20
    s = compare.ratio_of_medians([10, 30], [20, 20], IDX)
    assert (s.estimate, s.lo, s.hi) == (1.0, 0.5, 1.5)


def test_ece_difference_two_items():
    # A: conf 0.9, 0.9, correct 1, 0 -> one bin, |0.5 - 0.9| = 0.4; B: conf 0.5, 0.5 -> |0.5 - 0.5| = 0.
    # {0,0}: A |1 - 0.9| = 0.1, B |1 - 0.5| = 0.5 -> -0.4; {1,1}: A 0.9, B 0.5 -> +0.4; mixed: 0.4 - 0 = 0.4.
    # Differences: -0.4 w.p. 1/4, +0.4 w.p. 3/4 -> interval [-0.4, 0.4]
    diff, ratio = compare.ece_difference([0.9, 0.9], [1, 0], [0.5, 0.5], [1, 0], IDX)
    assert diff.estimate == pytest.approx(0.4)
    assert (diff.lo, diff.hi) == (pytest.approx(-0.4), pytest.approx(0.4))
    # ratio: B's ECE is 0 in the estimate and in the mixed resamples -> no estimate; finite resamples
    # {0,0}: 0.1/0.5 = 0.2 and {1,1}: 0.9/0.5 = 1.8
    assert ratio.estimate is None and (ratio.lo, ratio.hi) == (pytest.approx(0.2), pytest.approx(1.8))


def test_vectorised_ece_matches_metrics_ece():
    rng = np.random.default_rng(3)
    conf, y = rng.random(40), rng.random(40) < 0.5
    idx = compare.bootstrap_indices(40, 20, 1)
    from eval import metrics
    expect = [metrics.ece(conf[i], y[i]) for i in idx]
    assert compare._ece_rows(conf, y.astype(float), idx) == pytest.approx(expect)


def test_verdict_rules():
    assert compare.non_inferior(-0.019, 0.05) == "held"
    assert compare.non_inferior(-0.021, 0.05) == "inconclusive"
    assert compare.non_inferior(-0.08, -0.02) == "did not hold"
    assert compare.better(0.001, 0.1) == "held"
    assert compare.better(-0.01, 0.1) == "inconclusive"
    assert compare.better(-0.1, 0.0) == "did not hold"
    # CaT-stream@4's committed token ratio 0.349 [0.333, 0.365] against a 0.35 cap: not "held"
    assert compare.tokens_at_most(0.333, 0.365, 0.35) == "inconclusive"
    assert compare.tokens_at_most(0.30, 0.34, 0.35) == "held"
    assert compare.tokens_at_most(0.36, 0.40, 0.35) == "did not hold"
    assert compare.halves(0.2, 0.5) == "held" and compare.halves(0.51, 0.9) == "did not hold"
    assert compare.combine("held", "held") == "held"
    assert compare.combine("held", "inconclusive") == "inconclusive"
    assert compare.combine("inconclusive", "did not hold") == "did not hold"


def test_holm():
    # p = [0.01, 0.04, 0.02], m = 3: sorted 0.01 (<= 0.05/3), 0.02 (<= 0.05/2), 0.04 (<= 0.05/1) -> all rejected
    assert compare.holm_alphas([0.01, 0.04, 0.02]) == pytest.approx([0.05 / 3, 0.05, 0.025])
    # p = [0.01, 0.04, 0.03]: 0.03 > 0.05/2 stops the procedure -> 0.03 and 0.04 get level 0
    assert compare.holm_alphas([0.01, 0.04, 0.03]) == pytest.approx([0.05 / 3, 0.0, 0.0])
    # p = [0.02, 0.01, 0.5]: 0.01 <= 0.0167, 0.02 <= 0.025, 0.5 > 0.05 -> the last gets level 0
    assert compare.holm_alphas([0.02, 0.01, 0.5]) == pytest.approx([0.025, 0.05 / 3, 0.0])
    # p = [0.03, 0.02]: 0.02 > 0.025? no, 0.02 <= 0.025 rejected; 0.03 <= 0.05 rejected
    assert compare.holm_alphas([0.03, 0.02]) == pytest.approx([0.05, 0.025])
    # adjusted: [2*0.02=0.04, 0.03 -> max(0.04, 0.03) = 0.04]
    assert compare.holm_adjusted([0.03, 0.02]) == pytest.approx([0.04, 0.04])


def _write_run(folder, rows):
    folder.mkdir(parents=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_cli_compare_pairs_shared_items(tmp_path, capsys):
    # A has ids x, y, z; B has y, z, w; shared: y (A right, B wrong) and z (both right) -> 2 items,
    # accuracy 1.0 vs 0.5, difference +0.5; one discordant pair (b=1, c=0) -> p = 1.0; tokens
    # (20 + 30) / (10 + 30) = 1.25
    row = lambda i, ok, tok: {"id": i, "correct": ok, "tokens": tok, "latency_s": 1.0, "confidence": 0.5}
    _write_run(tmp_path / "a", [row("x", False, 5), row("y", True, 20), row("z", True, 30)])
    _write_run(tmp_path / "b", [row("y", False, 10), row("z", True, 30), row("w", True, 1)])
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(tmp_path / "c.json")]) == 0
    text = capsys.readouterr().out
    assert "2 shared items" in text and "+0.500" in text and "p = 1.000" in text
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["n"] == 2 and data["accuracy"]["estimate"] == 0.5 and data["tokens_ratio"]["estimate"] == 1.25


def test_bench_paired_table():
    # two items; cat right on both, none on item 0 only -> Δacc +0.5 [0, 1] (as in the two-item test
    # above, same seed-0 draw shape), McNemar b=1, c=0 -> p = 1.0; tokens (4+4)/(2+2) = 2.0
    from eval import bench
    rows = lambda oks, tok: [{"id": str(i), "correct": ok, "tokens": tok, "latency_s": 1.0} for i, ok in enumerate(oks)]
    paired = bench.paired_rows({"none": rows([True, False], 2), "cat": rows([True, True], 4)})
    assert [(p["strategy"], p["vs"]) for p in paired] == [("cat", "none")]
    assert paired[0]["accuracy"]["estimate"] == 0.5 and paired[0]["accuracy"]["p"] == 1.0
    assert paired[0]["tokens_ratio"]["estimate"] == 2.0
    md = bench.paired_markdown(paired)
    assert "| cat | none | 2 | +0.500 [" in md and "p = 1.000" in md and "| 2.000 [2.000, 2.000] |" in md
