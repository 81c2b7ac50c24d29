"""lab.report: verdict rules on hand-made numbers, and a byte-identical rebuild."""

import json

from lab.report import build, cat_verdict, rl_verdict

SC = {"accuracy": 0.50, "acc_lo95": 0.44, "acc_hi95": 0.56}


def test_cat_verdicts():
    assert cat_verdict({"tokens_vs_sc": 0.30, "accuracy": 0.52, "acc_lo95": 0.46, "acc_hi95": 0.58}, SC) == "held"
    assert cat_verdict({"tokens_vs_sc": 0.50, "accuracy": 0.60, "acc_lo95": 0.54, "acc_hi95": 0.66}, SC).startswith(
        "did not hold (tokens")
    assert cat_verdict({"tokens_vs_sc": 0.30, "accuracy": 0.30, "acc_lo95": 0.25, "acc_hi95": 0.40}, SC).startswith(
        "did not hold (accuracy")
    assert cat_verdict({"tokens_vs_sc": 0.30, "accuracy": 0.48, "acc_lo95": 0.42, "acc_hi95": 0.54}, SC).startswith(
        "inconclusive")


def test_rl_verdicts():
    # step-to-step changes -0.1 each: std 0, so any change counts
    assert rl_verdict([0.7, 0.6, 0.5], [0.5, 0.6, 0.7]).startswith("held")
    assert rl_verdict([0.5, 0.6, 0.7], [0.5, 0.6, 0.7]).startswith("did not hold")
    # noisy flat curves: changes within 2 std of the step-to-step changes
    assert rl_verdict([0.6, 0.7, 0.5, 0.6, 0.58], [0.6, 0.5, 0.7, 0.6, 0.62]).startswith("inconclusive")
    assert rl_verdict([], [0.5]).startswith("inconclusive")


def test_report_is_reproducible_and_reads_results(tmp_path):
    folder = tmp_path / "search" / "test-k4"
    folder.mkdir(parents=True)
    rows = [{"strategy": "SC@4", "tokens_per_query": 400.0, "tokens_vs_sc": 1.0, "acc_minus_sc": 0.0,
             "latency_p50_s": 1.0, "latency_p95_s": 2.0, "ece": 0.1, "brier": 0.2, "auroc": 0.7, **SC},
            {"strategy": "CaT-stream@4", "tokens_per_query": 120.0, "tokens_vs_sc": 0.3, "acc_minus_sc": 0.02,
             "latency_p50_s": 1.0, "latency_p95_s": 2.0, "ece": 0.1, "brier": 0.2, "auroc": 0.7,
             "accuracy": 0.52, "acc_lo95": 0.46, "acc_hi95": 0.58}]
    (folder / "table.json").write_text(json.dumps(rows))
    (folder / "settings.json").write_text(json.dumps({"k": 4, "dataset": "arith@test", "item_ids": ["a"] * 300}))
    text = build(tmp_path)
    assert text == build(tmp_path)
    assert "| CaT-stream@4 | 0.520 [0.460, 0.580] | 120.0 | 0.30 |" in text
    assert "- test-k4 CaT-stream ≥ SC@4 at ≤ 0.35x tokens: held" in text
    assert "No RL results yet." in text and "No CASPO results yet." in text
    assert "Not finished" not in text
    # a run stopped part-way is named with its progress, and stays out of the table and the verdicts
    (folder / "CaT-faithful_k4").mkdir()
    (folder / "CaT-faithful_k4" / "results.jsonl").write_text('{"id": "a"}\n{"id": "b"}\n')
    text = build(tmp_path)
    assert "Not finished (resumed by the same command): CaT-faithful_k4 (2 of 300 items)" in text
    assert "CaT-faithful ≥" not in text


def _profile(ece_raw: float, ece_cal: float, met: bool) -> dict:
    e = {"n": 333, "accuracy": 0.5, "meets_target": met, "raw": {"ece": ece_raw, "brier": 0.3},
         "calibrated": {"ece": ece_cal, "brier": 0.2, "auroc": 0.7}}
    return {"provenance": {"dataset": "arith@dev", "fits": {"cat": {"chosen": "platt"}}},
            "evaluation": {"cat": e, "deepconf": {**e, "meets_target": True}}}


def test_large_calibration_profile_gets_its_own_table_and_verdict(tmp_path):
    (tmp_path / "calibration" / "large").mkdir(parents=True)
    (tmp_path / "calibration" / "sft_profile.json").write_text(json.dumps(_profile(0.3, 0.2, False)))
    text = build(tmp_path)
    assert "- Lab profile: calibrated ECE <= half raw or <= 0.05 (issue #9): did not hold for cat" in text
    assert "on 1000 dev items" not in text
    (tmp_path / "calibration" / "large" / "profile.json").write_text(json.dumps(_profile(0.3, 0.1, True)))
    text = build(tmp_path)
    assert "| cat | 333 | 0.500 | 0.300 | 0.100 | 0.300 | 0.200 | 0.700 | platt | True |" in text
    assert ("- Lab profile on 1000 dev items: calibrated ECE <= half raw or <= 0.05 (issue #9): "
            "held for every strategy") in text
    # a large profile fitted on some strategies only says which are missing, and claims nothing for them
    partial = _profile(0.3, 0.1, True)
    del partial["evaluation"]["deepconf"]
    (tmp_path / "calibration" / "large" / "profile.json").write_text(json.dumps(partial))
    text = build(tmp_path)
    assert ("- Lab profile on 1000 dev items: calibrated ECE <= half raw or <= 0.05 (issue #9): "
            "held for every fitted strategy; deepconf not fitted yet") in text
    assert "Not fitted yet (their collection is part-way; `make lab-calibrate-large` resumes it): deepconf." in text


def test_transfer_verdicts():
    from lab.report import transfer_verdict

    sft = {"accuracy": 0.50, "acc_lo95": 0.44, "acc_hi95": 0.56, "tokens_per_query": 100.0}
    assert transfer_verdict({"accuracy": 0.65, "acc_lo95": 0.58, "acc_hi95": 0.71, "tokens_per_query": 80.0},
                            sft) == "buys accuracy, tokens 0.80x SFT's"
    assert transfer_verdict({"accuracy": 0.35, "acc_lo95": 0.30, "acc_hi95": 0.41, "tokens_per_query": 100.0},
                            sft).startswith("costs accuracy")
    assert transfer_verdict({"accuracy": 0.52, "acc_lo95": 0.46, "acc_hi95": 0.58}, sft) == \
        "accuracy within noise (+0.020)"
    assert transfer_verdict({}, sft) == "missing"


def test_identical_rl_curves_are_called_out():
    from lab.report import same_curves

    a = [{"eval_step": 0, "dev_accuracy": 0.5, "dev_ece": 0.4, "dev_auc_mean": 0.8},
         {"eval_step": 10, "dev_accuracy": 0.6, "dev_ece": 0.3, "dev_auc_mean": 0.9}]
    b = [{**r, "dev_ece": r["dev_ece"] + 1e-8} for r in a]  # float rounding of the log-probs only
    c = [a[0], {**a[1], "dev_auc_mean": 0.85}]
    notes = same_curves({"grpo": a, "gspo": b, "capo": c})
    assert len(notes) == 2 and notes[0].startswith("gspo's dev evaluations equal grpo's") and "ratio is 1" in notes[0]
    assert same_curves({"grpo": a, "capo": c}) == []


def test_transfer_verdict_against_another_base():
    from lab.report import transfer_verdict

    grpo = {"accuracy": 0.50, "acc_lo95": 0.44, "acc_hi95": 0.56, "tokens_per_query": 50.0}
    assert transfer_verdict({"accuracy": 0.52, "acc_lo95": 0.46, "acc_hi95": 0.58, "tokens_per_query": 40.0},
                            grpo, "GRPO") == "accuracy within noise (+0.020), tokens 0.80x GRPO's"


def test_sft_segments_are_grouped_into_trainings():
    from lab.report import trainings

    segs = [{"from_step": 0, "to_step": 20, "wall_s": 100.0}, {"from_step": 20, "to_step": 45, "wall_s": 50.0},
            {"from_step": 0, "to_step": 45, "wall_s": 200.0}]
    assert [[s["wall_s"] for s in g] for g in trainings(segs)] == [[100.0, 50.0], [200.0]]
    assert trainings([]) == []


def test_large_split_check_tables_are_quoted(tmp_path):
    (tmp_path / "calibration" / "large").mkdir(parents=True)
    (tmp_path / "calibration" / "sft_profile.json").write_text(json.dumps(_profile(0.3, 0.2, False)))
    (tmp_path / "calibration" / "large" / "profile.json").write_text(json.dumps(_profile(0.3, 0.1, True)))
    (tmp_path / "calibration" / "large" / "split_check.md").write_text(
        "# t\n\n## Each kind of map fitted on the fit split, scored on the held-out items\n\n"
        "| strategy | chosen (CV log-loss) | isotonic ECE | Platt ECE |\n|---|---|---|---|\n| cat | platt | 0.086 | 0.080 |\n"
        "\n## The profile's maps on fresh items 1000-1199 and pooled\n\nCollected...\n\n| strategy | items |\n"
        "|---|---|\n| cat | 1000-1199 (fresh) |\n"
        "\n## 3-fold cross-fitting (pooled out-of-fold ECE)\n\n| strategy | items |\n|---|---|\n| cat | 1000 |\n"
        "\n## ECE of a perfect map on n items (simulated)\n\nOutcomes drawn...\n\n"
        "| strategy | n | mean ECE | 90th percentile |\n|---|---|---|---|\n| cat | 333 | 0.067 | 0.085 |\n")
    text = build(tmp_path)
    kinds = text.index("| cat | platt | 0.086 | 0.080 |")
    assert kinds < text.index("| cat | 1000-1199 (fresh) |") < text.index("| cat | 1000 |")
    assert text.index("| cat | 1000 |") < text.index("| cat | 333 | 0.067 | 0.085 |")
    assert "Outcomes drawn..." not in text and "Collected..." not in text
