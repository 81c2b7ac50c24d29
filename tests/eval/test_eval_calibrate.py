"""cat-eval calibrate's fitting pieces on hand-computed data (no server)."""

from __future__ import annotations

import pytest

from cat_serve.calibration import ScoreMap
from eval.calibrate import cat_thresholds, evaluate, fit_map, labelled, labelled_features, split


def test_single_class_gets_the_smoothed_base_rate():
    m, report = fit_map([0.1, 0.5, 0.9, 0.3], [False] * 4)
    assert report["chosen"] == "constant" and report["folds"] == 0
    assert m(0.0) == pytest.approx(0.5 / 5) and m(1.0) == pytest.approx(0.1)  # (0 + 0.5) / (4 + 1)


def test_informative_scores_get_an_increasing_map():
    scores = [0.1, 0.15, 0.2, 0.25, 0.3, 0.7, 0.75, 0.8, 0.85, 0.9] * 2
    correct = [s > 0.5 for s in scores]
    m, report = fit_map(scores, correct)
    assert report["chosen"] in ("isotonic", "platt") and report["folds"] == 5
    assert report["cv_log_loss"][report["chosen"]] < report["cv_log_loss"]["constant"]
    assert m(0.15) < 0.5 < m(0.85)
    values = [m(i / 50) for i in range(51)]
    assert all(b >= a for a, b in zip(values, values[1:]))


def test_a_feature_the_raw_score_misses_gets_the_logistic_map():
    # issue 20 item 4's case: the raw score is the same uninformative 0.5 everywhere; the vote share decides.
    # Correct exactly when vote_share = 1: no monotone map of the raw score can do better than the base rate
    shares = [0.25, 0.5, 0.75, 1.0] * 10
    correct = [v == 1.0 for v in shares]
    feats = [{"vote_share": v, "distinct_answers": 1.0 if v == 1.0 else 2.0} for v in shares]
    m, report = fit_map([0.5] * 40, correct, feats)
    assert report["chosen"] == "logistic" and report["features"] == ["raw", "distinct_answers", "vote_share"]
    assert report["cv_log_loss"]["logistic"] < report["cv_log_loss"]["constant"]
    assert m(0.5, {"vote_share": 1.0, "distinct_answers": 1.0}) > 0.5 > m(0.5, {"vote_share": 0.5, "distinct_answers": 2.0})
    out = evaluate(m, [0.5] * 40, correct, feats)
    assert out["calibrated"]["ece"] < out["raw"]["ece"]
    # rows without features get no logistic candidate
    _, report = fit_map([0.5] * 40, correct)
    assert "logistic" not in report["cv_log_loss"] and "features" not in report


def test_labelled_features_follow_labelled_rows():
    rows = [{"raw_confidence": 0.4, "correct": True, "search": {"answer": "3", "features": {"vote_share": 0.5}}},
            {"raw_confidence": 0.0, "correct": False, "search": {"answer": None, "features": {"vote_share": 0.0}}},
            {"raw_confidence": 0.9, "correct": False, "search": {"answer": "1", "features": {"vote_share": 1.0}}}]
    assert labelled_features(rows) == [{"vote_share": 0.5}, {"vote_share": 1.0}]
    rows[2]["search"].pop("features")  # a row without features: none for any (the committed runs' rows)
    assert labelled_features(rows) is None


def row(*samples):
    return {"samples": [{"correct": ok, "step_confidences": confs} for ok, confs in samples]}


def test_cat_thresholds_by_hand():
    rows = [row((True, [0.5, 0.4]), (False, [0.2, 0.6])), row((True, [0.9, 0.8, 0.3]))]
    out = cat_thresholds(rows, branching_rate=0.5, min_correct=2)
    # steps sorted: 0.2 0.3 0.4 0.5 0.6 0.8 0.9 -> median 0.5
    assert out["confident_threshold"] == pytest.approx(0.5)
    # correct paths' C before their answer step: 0.5 and 0.9 * 0.8 = 0.72; 5 % of 2 paths = 0 may be
    # pruned -> tau = the smallest, 0.5 (C == tau survives)
    assert out["tau"] == pytest.approx(0.5) and out["fit"]["paths_pruned_at_tau"] == 0
    # with fewer correct paths than min_correct, every answer path counts: C = 0.5, 0.2, 0.72 -> 0.2
    out = cat_thresholds(rows, branching_rate=0.5, min_correct=3)
    assert out["tau"] == pytest.approx(0.2) and "all answer paths" in out["fit"]["tau_basis"]


def test_tau_prunes_at_most_five_percent_of_correct_paths():
    rows = [row(*[(True, [k / 20, 1.0]) for k in range(1, 21)])]
    out = cat_thresholds(rows, branching_rate=0.1)
    # 20 correct paths, C = 0.05, 0.10, ..., 1.0: one (5 %) may be pruned -> tau = 0.10
    assert out["tau"] == pytest.approx(0.10) and out["fit"]["paths_pruned_at_tau"] == 1
    no_correct = cat_thresholds([row((False, [0.3, 0.9]))], branching_rate=0.1)
    assert no_correct["tau"] == pytest.approx(0.3) and "all answer paths" in no_correct["fit"]["tau_basis"]


def test_evaluate_raw_vs_calibrated_ece():
    half = ScoreMap("platt", a=0.0, b=0.0)  # always 0.5
    out = evaluate(half, [0.9, 0.9], [True, False])
    assert out["raw"]["ece"] == pytest.approx(0.4) and out["calibrated"]["ece"] == pytest.approx(0.0)
    assert out["meets_target"] is True


def test_split_and_labelled_rows():
    fit, hold = split(list(range(6)), 1 / 3)
    assert fit == [0, 1, 2, 3] and hold == [4, 5]
    rows = [{"raw_confidence": 0.4, "correct": True, "search": {"answer": "3"}},
            {"raw_confidence": 0.0, "correct": False, "search": {"answer": None}},  # no answer: not mapped
            {"raw_confidence": 0.2, "correct": False, "search": {"answer": "1"}, "error": "boom"}]
    assert labelled(rows) == ([0.4], [True])


def test_summaries_report_the_raw_score_calibration_too():
    from eval.metrics import raw_calibration

    rows = [{"raw_confidence": 0.9, "correct": True}, {"raw_confidence": 0.9, "correct": False}]
    out = raw_calibration(rows)
    assert out["raw_ece"] == pytest.approx(0.4) and out["raw_brier"] == pytest.approx((0.01 + 0.81) / 2)


def test_collection_params_and_carried_step_delimiters():
    from pathlib import Path

    from eval import runner
    from eval.calibrate import CalibrateConfig, build_profile

    base = runner.RunConfig(base_url="http://x/v1", out_dir=Path("/nonexistent"), dataset="arith")
    cfg = CalibrateConfig(base=base, strategies=("cat", "self_consistency"), holdout=0.5, folds=2,
                          search_params={"cat": {"step_delimiters": ["\n"], "branches": 4},
                                         "self_consistency": {"n": 4}})
    # the user's params go over the built-in collection params (pruning stays off, candidates on)
    assert cfg.collect_params("cat")["tau"] == 0.0 and cfg.collect_params("cat")["step_delimiters"] == ["\n"]
    assert cfg.collect_params("self_consistency") == {"n": 4}

    def r(conf, ok, steps):
        return {"raw_confidence": conf, "correct": ok, "search": {"answer": "1"},
                "samples": [{"correct": ok, "step_confidences": steps}]}

    rows = {"cat": [r(0.9, True, [0.9, 1.0]), r(0.2, False, [0.2, 1.0])] * 4,
            "self_consistency": [r(0.75, True, []), r(0.25, False, [])] * 4}
    profile = build_profile(cfg, rows, {"id": "m", "fingerprint": "f"})
    # step_delimiters is served as a default beside the fitted thresholds; SC gets no defaults
    assert profile.search_defaults["cat"]["step_delimiters"] == ["\n"]
    assert {"confident_threshold", "tau"} <= set(profile.search_defaults["cat"])
    assert "self_consistency" not in profile.search_defaults
    assert profile.provenance["collection"]["params"]["self_consistency"] == {"n": 4}
    # and a request that names its own delimiters keeps them
    assert "step_delimiters" not in profile.defaults_for("cat", {"step_delimiters": ["\n\n"]})


def test_cat_eval_sigterm_runs_exit_handlers(tmp_path):
    """cat-eval turns SIGTERM into SystemExit, so `calibrate --serve-model` leaves through ServerProcess.stop
    (a ``finally``) and stops its server's process group (seen: a SIGTERMed collection left its vLLM
    server running)."""
    from tests.sigterm import assert_sigterm_runs_finally, blocking_body

    assert_sigterm_runs_finally(tmp_path, blocking_body("run") + "import eval.cli as cli\n"
                                "cli.cmd_report = run\ncli.main(['report', '--out', 'x'])\n")
