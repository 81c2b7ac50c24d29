"""lab.report: verdict rules on hand-made numbers, and a byte-identical rebuild."""

import json

import numpy as np
import pytest

from eval.compare import Stat
from lab.report import better_family, build, cat_verdict, rl_verdict

SC = {"accuracy": 0.50, "acc_lo95": 0.44, "acc_hi95": 0.56}


def _c(acc: tuple, tok: tuple, n: int = 300) -> dict:
    """A hand-made ``eval.compare.compare_rows`` result: accuracy difference and token ratio (estimate, lo, hi)."""
    return {"n": n, "accuracy": Stat(*acc, p=0.5), "tokens_ratio": Stat(*tok)}


def test_cat_verdicts():
    # "≥ SC@K at ≤ 0.35x tokens": accuracy lower bound above -0.02 and token upper bound <= 0.35
    assert cat_verdict(_c((0.02, -0.01, 0.05), (0.30, 0.28, 0.32))).startswith("held (Δacc +0.020 [-0.010, +0.050]")
    assert cat_verdict(_c((0.10, 0.04, 0.16), (0.50, 0.45, 0.55))).startswith("did not hold")  # tokens above 0.35
    assert cat_verdict(_c((-0.20, -0.25, -0.15), (0.30, 0.28, 0.32))).startswith("did not hold")  # wholly below -0.02
    assert cat_verdict(_c((-0.02, -0.06, 0.02), (0.30, 0.28, 0.32))).startswith("inconclusive")
    # the committed CaT-stream@4 case: accuracy fine, token ratio 0.349 [0.334, 0.364] straddles the cap
    assert cat_verdict(_c((0.057, 0.017, 0.097), (0.349, 0.334, 0.364))).startswith("inconclusive")
    assert cat_verdict({"n": 0}).startswith("inconclusive (no paired rows)")


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
    # per-item rows: both right on all 50 items (Δacc 0 [0, 0], no discordant pair: McNemar p = 1), CaT 30
    # tokens against SC's 100 on every item (ratio 0.3 in every resample)
    for label, tok in (("SC_k4", 100), ("CaT-stream_k4", 30)):
        (folder / label).mkdir()
        (folder / label / "results.jsonl").write_text("".join(json.dumps(
            {"id": f"i{i}", "correct": True, "tokens": tok, "latency_s": 1.0, "confidence": 0.9}) + "\n" for i in range(50)))
        (folder / label / "summary.json").write_text("{}")  # finished runs
    text = build(tmp_path)
    assert text == build(tmp_path)
    assert "| CaT-stream@4 | 0.520 [0.460, 0.580] | 120.0 | 0.30 |" in text
    assert "- test-k4 CaT-stream ≥ SC@4 at ≤ 0.35x tokens: held" in text
    assert ("- test-k4 CaT-stream ≥ SC@4 at ≤ 0.35x tokens: held (Δacc +0.000 [+0.000, +0.000], p = 1.000; "
            "tokens 0.300 [0.300, 0.300]× SC, cap 0.35; 50 paired items)") in text
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

    c = {"n": 300, "accuracy": Stat(0.05, 0.01, 0.09, p=0.02), "tokens_ratio": Stat(0.8, 0.75, 0.85)}
    assert transfer_verdict(c, ("held", 0.04)) == ("held (Δacc +0.050 [+0.010, +0.090], p = 0.020, Holm p = 0.040; "
                                                   "tokens 0.800 [0.750, 0.850]× SFT's; 300 paired items)")
    assert transfer_verdict({}, None) == "missing"


def test_better_family_uses_holm():
    # two comparisons: p = 0.01 and 0.04. Holm: 0.01 <= 0.05/2 is tested at 0.025, 0.04 <= 0.05/1 at 0.05.
    # Hand-made bootstrap samples -0.01, 0.00, ..., 0.99 (step 0.01): the 1.25 % quantile (the 97.5 % interval's
    # lower bound, level 0.025) is -0.01 + 0.0125 * 100 * 0.01 = 0.0025 > 0; the 2.5 % quantile is 0.015 > 0.
    # Adjusted p: 2 * 0.01 = 0.02 and max(0.02, 0.04) = 0.04
    samples = np.linspace(-0.01, 0.99, 101)
    first = {"accuracy": Stat(0.5, 0.015, 0.965, p=0.01, samples=samples)}
    second = {"accuracy": Stat(0.5, 0.015, 0.965, p=0.04, samples=samples)}
    out = better_family({"a": first, "b": second})
    assert out["a"][0] == "held" and out["a"][1] == pytest.approx(0.02)
    assert out["b"] == ("held", pytest.approx(0.04))
    # p = 0.5 fails Holm's first step: level 0, not "held" even with a positive 95 % bound
    out = better_family({"a": {"accuracy": Stat(0.5, 0.015, 0.965, p=0.5, samples=samples)}})
    assert out["a"][0] == "inconclusive"


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
    c = {"n": 300, "accuracy": Stat(0.02, -0.02, 0.06, p=0.3), "tokens_ratio": Stat(0.8, 0.75, 0.85)}
    assert transfer_verdict(c, ("inconclusive", 0.6), "GRPO").endswith("tokens 0.800 [0.750, 0.850]× GRPO's; 300 paired items)")
    assert grpo["accuracy"] == 0.50


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


def test_sampling_sweep_table_is_quoted_only_when_present(tmp_path):
    without = build(tmp_path)
    assert "Dev sampling sweep" not in without
    folder = tmp_path / "search" / "sampling-sweep"
    folder.mkdir(parents=True)
    (folder / "table.md").write_text("Dev sampling sweep text.\n\n| setting | K |\n|---|---|\n| t0.3-p1.0 | 4 |\n")
    (folder / "segments.jsonl").write_text('{"command": "python -m lab.recipe sweep", "wall_s": 12.5}\n')
    text = build(tmp_path)
    assert "### Dev sampling sweep (make lab-sweep)\n\nDev sampling sweep text.\n\n| setting | K |" in text
    assert "| search/sampling-sweep | `python -m lab.recipe sweep` | 1 | 12 |" in text
    assert text == build(tmp_path)


def test_dedup_table_and_verdict_hand_computed(tmp_path):
    """4 items: dedup right on one item exact missed (Δacc +0.25, McNemar p = 1 with one discordant item), at
    half of exact's tokens on every item (ratio 0.5 in every resample); the bootstrap's lower bound is 0 (a
    resample misses that item with probability 0.75^4 = 0.32), above -0.02: "≥ exact" held."""
    from lab.report import dedup_section

    def rows(correct, tokens):
        return [{"id": f"q{i}", "correct": bool(c), "tokens": t} for i, (c, t) in enumerate(zip(correct, tokens))]

    def setting(correct, tokens, share):
        return {"k": 4, "items": 4, "accuracy": sum(correct) / 4, "tokens_per_query": sum(tokens) / 4,
                "steps_generated_per_query": 3.0, "duplicate_share": share, "rows": rows(correct, tokens)}

    d = tmp_path / "search" / "dedup"
    d.mkdir(parents=True)
    (d / "k4.json").write_text(json.dumps({"dedup=False": setting([1, 0, 1, 0], [100, 200, 100, 200], 0.9),
                                           "dedup=True": setting([1, 1, 1, 0], [50, 100, 50, 100], 0.0)}))
    body, verdicts = dedup_section(tmp_path)
    row = next(line for line in body if line.startswith("| 4 |"))
    assert "| 0.500 | 0.750 | +0.250 [+0.000, " in row and ", p = 1.000 |" in row
    assert "| 150 | 75 | 0.500 [0.500, 0.500] |" in row and row.endswith("| 0.90 |")
    assert verdicts == ["- Faithful CaT dedup ≥ exact at K = 4: held (Δacc " + row.split(" | ")[4]
                        + ", 4 items; tokens 0.500 [0.500, 0.500]× exact's)"]
    assert dedup_section(tmp_path / "nothing") == ([], [])


def test_test_split_sampling_and_feature_maps_are_quoted_with_their_verdicts(tmp_path):
    without = build(tmp_path)
    assert "dev-chosen sampling" not in without and "more than one score" not in without
    test = tmp_path / "search" / "sampling-test"
    test.mkdir(parents=True)
    (test / "table.md").write_text("Sampling on the test split.\n\n| a |\n|---|\n\nNo selector beats greedy.\n")
    feats = tmp_path / "calibration" / "features"
    feats.mkdir(parents=True)
    (feats / "table.md").write_text("# Title\n\nBody.\n\n- PC@4 with its logistic map meets the target: held (x).\n")
    (feats / "segments.jsonl").write_text('{"command": "python -m lab.recipe calibrate-features", "wall_s": 60}\n')
    text = build(tmp_path)
    assert "### Test split at the dev-chosen sampling\n\nSampling on the test split." in text
    assert "- sampling on test vs greedy: No selector beats greedy." in text
    assert "### Calibration maps on more than one score (make lab-calibrate-features)\n\nBody." in text
    # the PC line is in the table's body and again among the verdicts
    assert text.count("- PC@4 with its logistic map meets the target: held (x).") == 2
    assert "| calibration/features | `python -m lab.recipe calibrate-features` | 1 | 60 |" in text
    assert text == build(tmp_path)


def test_cat_temperature_table_is_quoted_with_its_verdict(tmp_path):
    assert "branch temperature" not in build(tmp_path)
    folder = tmp_path / "search" / "cat-temperature"
    folder.mkdir(parents=True)
    (folder / "table.md").write_text("Intro.\n\n| a |\n|---|\n\nNo branch temperature makes CaT stream better.\n")
    text = build(tmp_path)
    assert "### CaT's branch temperature on dev (make lab-cat-temperature)\n\nIntro." in text
    assert "- CaT stream (greedy trunk) vs greedy on dev: No branch temperature makes CaT stream better." in text


def test_capo_auc_claim_hand_computed(tmp_path):
    """Issue 21's claim from per-question dev rows: the estimate is the seeds' mean difference at the last common
    evaluation, AUC-mean over the questions with both outcomes in each run; written into the report."""
    from lab.report import capo_auc_claim, rl800_runs

    def row(step, aurocs, correct):
        return {"eval_step": step, "dev_accuracy": sum(correct) / (8 * len(correct)), "dev_ece": 0.1,
                "dev_auc_mean": 0.6, "dev_auc_all": 0.55, "dev_questions_with_both": 3,
                "dev_q_auroc": aurocs, "dev_q_correct": correct}

    # four questions; GRPO: AUROCs 0.5, 0.6, None (all right), 0.7 -> AUC-mean 0.6; accuracy (4+4+8+4)/32 = 0.625
    grpo = [row(0, [0.5, 0.5, None, 0.5], [4, 4, 8, 4]), row(10, [0.5, 0.6, None, 0.7], [4, 4, 8, 4])]
    # CAPO: 0.9, 0.8, None, 1.0 -> 0.9 (+0.30); accuracy (4+4+8+5)/32 = 0.65625 (+0.03125: not matched)
    capo = [row(0, [0.5, 0.5, None, 0.5], [4, 4, 8, 4]), row(10, [0.9, 0.8, None, 1.0], [4, 4, 8, 5]),
            row(20, [0.1, 0.1, None, 0.1], [4, 4, 8, 4])]  # step 20: GRPO never got there, so it is not compared
    for name, rows in (("grpo-s0", grpo), ("capo-s0", capo)):
        (tmp_path / "rl800" / name).mkdir(parents=True)
        (tmp_path / "rl800" / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    runs = rl800_runs(tmp_path)
    assert set(runs) == {("grpo", 0), ("capo", 0)}
    line = capo_auc_claim(runs, resamples=200)
    assert line.startswith("inconclusive (accuracy not matched)") and "ΔAUC-mean (CAPO - GRPO) +0.300" in line
    assert "Δacc +0.031" in line and "seed 0 (step 10)" in line
    # matched accuracy; the defined questions move by +0.4, +0.2, +0.3, so every resample's difference of means
    # lies in [0.2, 0.4]: the lower bound clears the +0.10 margin
    capo[1]["dev_q_correct"] = [4, 4, 8, 4]
    assert capo_auc_claim(rl800_runs(tmp_path) | {("capo", 0): capo[:2]}, resamples=200).startswith("held")
    # two seeds: seed 1 repeats seed 0, then moves by only +0.05 on every question; the pooled interval
    # ([0.2, 0.4] and 0.05 averaged: within [0.125, 0.225]) clears +0.10, but the seeds sit on both sides of it
    runs2 = {("capo", 0): capo[:2], ("grpo", 0): grpo, ("capo", 1): capo[:2], ("grpo", 1): grpo}
    assert capo_auc_claim(runs2, resamples=200).startswith("held: ΔAUC-mean (CAPO - GRPO) +0.300 [+0.200, +0.400] "
                                                           "(seeds from +0.300 to +0.300)")
    small = [row(0, [0.5, 0.5, None, 0.5], [4, 4, 8, 4]), row(10, [0.55, 0.65, None, 0.75], [4, 4, 8, 4])]
    # a seed whose CAPO run has only its step-0 evaluation (both runs are SFT there) does not count yet
    assert capo_auc_claim({**runs2, ("capo", 1): capo[:1]}, resamples=200) == capo_auc_claim(
        {("capo", 0): capo[:2], ("grpo", 0): grpo}, resamples=200)
    line = capo_auc_claim({**runs2, ("capo", 1): small}, resamples=200)
    assert line.startswith("inconclusive (the seeds disagree): ΔAUC-mean (CAPO - GRPO) +0.175") and \
        "(seeds from +0.050 to +0.300)" in line and "2 seed(s)" in line
    # the dev curves: a row per evaluation step, a column per run, "–" where a run has no evaluation at that step;
    # AUC-mean with the number of questions it averaged at that point
    from lab.report import rl_curves

    capo[2]["dev_questions_with_both"] = 2
    curves = "\n".join(rl_curves({("capo", 0): capo, ("grpo", 0): grpo}))
    assert "| step | capo s0 | grpo s0 |" in curves
    # accuracy as each row recorded it: CAPO 21/32 at step 10, 20/32 at step 20; GRPO 20/32, no step 20
    assert "| 10 | 0.656 | 0.625 |" in curves and "| 20 | 0.625 | – |" in curves
    assert "| 10 | 0.600 (3) | 0.600 (3) |" in curves and "| 20 | 0.600 (2) | – |" in curves
    assert curves.count("| 0 |") == 4  # one table per metric: accuracy, ECE, AUC-mean, AUC-all
    # a margin above 0.4: the interval excludes the claim
    assert capo_auc_claim({("capo", 0): capo[:2], ("grpo", 0): grpo}, margin=0.45, resamples=200).startswith(
        "did not hold")
    # runs of one seed that started from different SFT checkpoints are not paired; the table names each start
    assert capo_auc_claim({("capo", 0): capo[:2], ("grpo", 0): grpo}, resamples=200,
                          starts={("capo", 0): "aaaa", ("grpo", 0): "bbbb"}).startswith("not run")
    for name, fp in (("grpo-s0", "sha256:d770f2321234"), ("capo-s0", "sha256:0123456789ab")):
        (tmp_path / "rl800" / name / "segments.jsonl").write_text(json.dumps({"command": "x", "wall_s": 1.0, "model_fingerprint": fp}) + "\n")
    report = build(tmp_path)
    assert "## RL at 800 prompts" in report and "| grpo seed 0 | d770f232 |" in report
    assert "CAPO's AUC-mean ≥ GRPO's + 0.10 at matched accuracy: not run" in report
    # GRPO restarted from scratch on CAPO's checkpoint: paired again; the earlier run is named, not summed
    (tmp_path / "rl800" / "grpo-s0" / "segments.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
        {"command": "x", "wall_s": 3243.0, "started_utc": "2026-12-03T20:08:56Z"},
        {"command": "x", "wall_s": 100.0, "model_fingerprint": "sha256:0123456789ab"})))
    report = build(tmp_path)
    assert "| grpo seed 0 | 01234567 |" in report and "matched accuracy: not run" not in report
    assert ("grpo-s0: restarted from scratch on the SFT checkpoint above; the earlier run (1 segment(s), 3243 s, "
            "started 2026-12-03T20:08:56Z, checkpoint not recorded) is superseded") in report
    assert "| rl800/grpo-s0 | `x` | 1 | 100 |" in report and "interrupted" not in report
    (tmp_path / "rl800" / "grpo-s0" / "segments.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
        {"command": "x", "wall_s": 30.0, "model_fingerprint": "sha256:0123456789ab", "interrupted": True, "note": "OOM"},
        {"command": "x", "wall_s": 100.0, "model_fingerprint": "sha256:0123456789ab", "note": "two threads"})))
    report = build(tmp_path)
    # finished: the last segment ran to the end, so the run was resumed (past tense), not waiting to be
    assert ("- grpo-s0: interrupted 1 time(s) (OOM); the same command resumed it each time from its last saved "
            "step; 2 segment(s), 130 s in all.") in report
    assert "- grpo-s0: last segment: two threads" in report
    (tmp_path / "rl800" / "grpo-s0" / "segments.jsonl").write_text(json.dumps(
        {"command": "x", "wall_s": 30.0, "model_fingerprint": "sha256:0123456789ab", "interrupted": True,
         "note": "OOM"}) + "\n")
    assert ("- grpo-s0: interrupted 1 time(s) (OOM); the same command resumes it from its last saved step; "
            "1 segment(s), 30 s in all.") in build(tmp_path)


@pytest.mark.slow
def test_committed_lab_md_is_the_build_of_the_committed_results():
    """Issue 21's acceptance: docs/lab.md regenerates byte for byte from results/lab/ (make lab-report); a result
    committed without its report, or a report edited by hand, fails here (~25 s: the bootstraps run again)."""
    from lab.report import REPO

    assert build(REPO / "results" / "lab") == (REPO / "docs" / "lab.md").read_text()


def test_transfer800_section_pairs_each_checkpoint_with_sft_and_grpo(tmp_path):
    """make lab-transfer800's folder gets its own table and verdicts (paired on the shared items), beside the
    older transfer/ folder; the wall time is listed under its own name."""
    from lab.report import build, transfer_kinds

    kind = tmp_path / "transfer-rl800-s0"
    # 10 items; SFT right on 0-4, GRPO on 0-5, CAPO on 0-6: CAPO - GRPO = +0.1, CAPO - SFT = +0.2; C²GSPG on
    # 0-8: C²GSPG - GRPO = +0.3; GSPO on 0-5 (no calibration term: paired with SFT only)
    right = {"sft": 5, "grpo": 6, "capo": 7, "gspo": 6, "c2gspg": 9}
    data = {}
    for model, n_right in right.items():
        run = kind / model / "test-k4" / "PC_k4"
        run.mkdir(parents=True)
        run.joinpath("results.jsonl").write_text("".join(json.dumps(
            {"id": f"q{i}", "correct": i < n_right, "tokens": 100, "latency_s": 1.0, "confidence": 0.5}) + "\n"
            for i in range(10)))
        data[model] = {"PC@4": {"accuracy": n_right / 10, "acc_lo95": 0.2, "acc_hi95": 0.9, "tokens_per_query": 100.0,
                                "ece": 0.1, "auroc": 0.6}}
    (kind / "compare_test.json").write_text(json.dumps(data))
    (kind / "segments.jsonl").write_text(json.dumps({"command": "python -m lab.recipe transfer --rl-size 800",
                                                     "wall_s": 12.0, "cat_settings_from": "lab.json"}) + "\n")
    assert transfer_kinds(tmp_path) == ["transfer", "transfer-rl800-s0"]
    report = build(tmp_path)
    assert "### transfer-rl800-s0/compare_test" in report and "`make lab-transfer800 SEED=0`" in report
    assert "CaT's settings (τ, confident threshold): `lab.json`." in report
    assert "- transfer-rl800-s0/compare_test capo better than GRPO (the calibration term alone), PC@4: " in report
    assert "Δacc +0.100 [" in report and "Δacc +0.200 [" in report and "10 paired items" in report
    assert "- transfer-rl800-s0/compare_test c2gspg better than GRPO (the calibration term alone), PC@4: " in report
    assert "Δacc +0.300 [" in report and "gspo better than SFT, PC@4" in report and "gspo better than GRPO" not in report
    assert "| transfer-rl800-s0 | `python -m lab.recipe transfer --rl-size 800` | 1 | 12 |" in report


def test_transfer800_uses_the_rl800_checkpoints(tmp_path, monkeypatch):
    from lab.recipe import caspo_dir, rl800_recipe, rl_dir
    from lab.recipe.caspo import caspo1k_recipes
    from lab.recipe.transfer import transfer_folder, transfer_models

    monkeypatch.setenv("LAB_RESULTS", str(tmp_path))
    assert transfer_folder() == "transfer" and transfer_folder(800, 1) == "transfer-rl800-s1"
    models = transfer_models(800, 1)
    assert models["capo"] == rl_dir("capo", rl800_recipe("capo", 1)) != rl_dir("capo", rl800_recipe("capo", 0))
    assert models["grpo"] == rl_dir("grpo", rl800_recipe("grpo", 1)) and transfer_models()["grpo"] == rl_dir("grpo")
    assert models["c2gspg"] == rl_dir("c2gspg", rl800_recipe("c2gspg", 1)) and "gspo" in models
    assert set(transfer_models()) == {"caspo", "capo", "grpo"}  # the 40-prompt runs had no GSPO or C²GSPG transfer
    assert models["caspo"] == caspo_dir()  # before make lab-caspo1k has chosen: the 64-problem CASPO
    (tmp_path / "caspo1k").mkdir()
    (tmp_path / "caspo1k" / "chosen.json").write_text(json.dumps({"chosen": "lr1e-05"}))
    assert transfer_models(800, 1)["caspo"] == caspo_dir(caspo1k_recipes()["lr1e-05"]) != caspo_dir()
    assert transfer_models()["caspo"] == caspo_dir()  # the 40-prompt transfer keeps its CASPO


def test_transfer800_waits_for_an_rl800_run_to_finish(tmp_path):
    """A make lab-rl800 directory holds its last saved step's weights while the run is under way: transfer
    searches it only at the recipe's last step; the CASPO checkpoint (no step count) when it exists."""
    from lab.recipe import rl800_recipe
    from lab.recipe.transfer import not_ready

    run = tmp_path / "rl"
    run.mkdir()
    assert "no checkpoint at" in not_ready("c2gspg", run, 800, 0)
    (run / "config.json").write_text("{}")
    last = rl800_recipe("c2gspg", 0)["max_steps"]
    (run / "state.json").write_text(json.dumps({"step": 35}))
    assert not_ready("c2gspg", run, 800, 0) == (f"its make lab-rl800 run is at step 35 of {last} "
                                                 "(make lab-rl800 OBJECTIVE=c2gspg SEED=0)")
    assert not_ready("c2gspg", run) is None  # the 40-prompt transfer takes the checkpoint as it is
    assert not_ready("caspo", run, 800, 0) is None
    (run / "state.json").write_text(json.dumps({"step": last}))
    assert not_ready("c2gspg", run, 800, 0) is None


def _steps(rows):
    return [{"question": q, "confidence": c, "correct": ok, "mean_entropy": e} for q, c, ok, e in rows]


CASPO_BEFORE = _steps([(0, 0.9, True, 0.1), (0, 0.9, False, 0.3), (1, 0.7, True, 0.2), (1, 0.7, False, 0.4)])
CASPO_AFTER = _steps([(0, 0.9, True, 0.1), (0, 0.2, False, 0.9), (1, 0.7, True, 0.1), (1, 0.3, False, 0.8)])


def test_step_stats_by_question_hand_computed():
    from eval.metrics import ece
    from lab.report import step_stats_by_question

    stats = step_stats_by_question(CASPO_BEFORE, CASPO_AFTER, resamples=500)
    # entropy gap: before (0.3 + 0.4)/2 - (0.1 + 0.2)/2 = 0.20; after (0.9 + 0.8)/2 - 0.1 = 0.75
    b, a, d, lo, hi = stats["entropy gap"]
    assert (b, a, d) == pytest.approx((0.20, 0.75, 0.55))
    # a resample holds q0 only (+0.6), q1 only (+0.5) or both (+0.55): the interval lies in [0.5, 0.6]
    assert 0.5 - 1e-9 <= lo <= hi <= 0.6 + 1e-9
    # AUROC: before every right step ties its question's wrong one, and 0.9 > 0.7 across: (0.5+1+0+0.5)/4 = 0.5;
    # after every right step is above every wrong one: 1.0
    assert stats["step AUROC"][:3] == pytest.approx((0.5, 1.0, 0.5))
    assert stats["step ECE"][0] == pytest.approx(ece([0.9, 0.9, 0.7, 0.7], [True, False, True, False]))
    assert stats["step ECE"][1] == pytest.approx(ece([0.9, 0.2, 0.7, 0.3], [True, False, True, False]))
    assert stats["step accuracy"][:3] == pytest.approx((0.5, 0.5, 0.0))  # half the steps right, before and after


def test_caspo1k_section_reads_rounds_choice_and_test(tmp_path):
    from lab.report import build

    root = tmp_path / "caspo1k"
    for name, rows in (("test-sft", CASPO_BEFORE), ("test-lr2e-06", CASPO_AFTER)):
        (root / name).mkdir(parents=True)
        (root / name / "steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "train-lr2e-06").mkdir()
    (root / "train-lr2e-06" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
        {"round": 0, "temperature": 0.7, "steps": 3000, "step_accuracy": 0.8, "pairs": 520, "pairs_incorrect": 500,
         "pairs_unconfident": 20, "dpo_loss": 0.6, "collect_s": 600.0, "dpo_s": 300.0, "pairs_from": "/c/caspo-1"},
        {"round": 0, "loss": 0.69},
        {"round": 1, "temperature": 1.0, "steps": 3100, "step_accuracy": 0.7, "pairs": 700, "pairs_incorrect": 680,
         "pairs_unconfident": 20, "dpo_loss": 0.55, "collect_s": 610.0, "dpo_s": 310.0})))
    (root / "train-lr5e-07").mkdir()  # a smaller rate: listed before 2e-06 (numeric, not string, order)
    (root / "train-lr5e-07" / "metrics.jsonl").write_text(json.dumps(
        {"round": 0, "temperature": 0.7, "steps": 3000, "step_accuracy": 0.8, "pairs": 520, "pairs_incorrect": 500,
         "pairs_unconfident": 20, "dpo_loss": 0.68, "collect_s": 600.0, "dpo_s": 300.0}) + "\n")
    for name, e in (("lr2e-06", 0.09), ("sft", 0.15), ("lr5e-07", 0.12)):
        (root / f"dev-{name}").mkdir()
        (root / f"dev-{name}" / "summary.json").write_text(json.dumps(
            {"steps": 250, "step_accuracy": 0.75, "ece": e, "entropy_gap": 0.14, "auroc_max_prob": 0.9}))
    (root / "chosen.json").write_text(json.dumps({"chosen": "lr2e-06", "rule": "lowest dev step ECE",
                                                  "dev_ece": {"sft": 0.15, "lr2e-06": 0.09}}))
    report = build(tmp_path)
    assert "## CASPO at 1,000 pairs (make lab-caspo1k)" in report
    assert "| lr2e-06 | 1 | 1.0 | 3100 | 0.700 | 700 (680 / 20) | 610 | 310 | 0.550 |" in report
    assert "| lr2e-06 | 0 | 0.7 | 3000 | 0.800 | 520 (500 / 20) | reused | 300 | 0.600 |" in report
    assert "Pairs per learning rate: lr5e-07 520, lr2e-06 1,220." in report and "chosen: **lr2e-06**" in report
    assert report.index("| lr5e-07 | 0 | 0.7 |") < report.index("| lr2e-06 | 0 | 0.7 |")
    # SFT's dev row first, then the learning rates from the smallest
    assert ("| sft | 250 | 0.750 | 0.150 | 0.140 | 0.900 |\n| lr5e-07 | 250 | 0.750 | 0.120 | 0.140 | 0.900 |\n"
            "| lr2e-06 | 250 | 0.750 | 0.090 | 0.140 | 0.900 |") in report
    assert "| entropy gap | 0.200 | 0.750 | +0.550 [+0.5" in report and "| step accuracy | 0.500 | 0.500 | +0.000 [" in report
    assert "Test (2 questions; SFT 4 steps, CASPO 4):" in report
    assert "- caspo1k: CASPO halves step ECE: " in report and "- caspo1k: entropy gap (paper 0.04 → 0.66): 0.200 → 0.750" in report


def test_transfer_cat_settings_from_the_sft_profile_or_the_lab_one(tmp_path, monkeypatch):
    """A retrained SFT checkpoint without a profile of its own searches with the lab's committed settings."""
    from cat_serve.calibration import PROFILE_FILE
    from lab.recipe.transfer import cat_settings

    monkeypatch.setenv("LAB_RESULTS", str(tmp_path / "results"))
    (tmp_path / "results" / "calibration").mkdir(parents=True)
    lab = {"search_defaults": {"cat": {"tau": 0.67, "confident_threshold": 0.82, "aggregation": "entropy"}}}
    (tmp_path / "results" / "calibration" / "sft_profile.json").write_text(json.dumps(lab))
    sft = tmp_path / "sft"
    sft.mkdir()
    assert cat_settings(sft) == ({"tau": 0.67, "confident_threshold": 0.82},
                                 str(tmp_path / "results" / "calibration" / "sft_profile.json"))
    (sft / PROFILE_FILE).write_text(json.dumps({"search_defaults": {"cat": {"tau": 0.5, "aggregation": "mean"}}}))
    assert cat_settings(sft) == ({"tau": 0.5}, str(sft / PROFILE_FILE))


def test_a_rerun_is_shown_beside_the_committed_run(tmp_path):
    """make lab-rl800-rerun's folder: wall time, threads and median step, and the dev curve against the
    committed run's (values by hand: the step-10 accuracies differ by 0.05, the step-0 ones not at all)."""
    from lab.report import build

    def write(folder, rows, segs=()):
        run = tmp_path / folder / "capo-s0"
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        if segs:
            (run / "segments.jsonl").write_text("".join(json.dumps(s) + "\n" for s in segs))

    def dev(step, acc, ece, auc):
        return {"eval_step": step, "dev_accuracy": acc, "dev_ece": ece, "dev_auc_mean": auc}

    write("rl800", [dev(0, 0.4, 0.5, 0.8), dev(10, 0.6, 0.3, 0.7)])
    write("rl800-alone", [dev(0, 0.4, 0.5, 0.8), *({"step": i, "step_time_s": t} for i, t in enumerate((40, 50, 44))),
                          dev(10, 0.65, 0.25, 0.75)],
          [{"command": "x", "wall_s": 100.0, "omp_num_threads": "2", "interrupted": True},
           {"command": "x", "wall_s": 200.0, "omp_num_threads": "2"}])
    report = build(tmp_path)
    assert "### Reruns (make lab-rl800-rerun)" in report
    assert ("| rl800-alone/capo-s0 | 2 | 300 | 2 | 44.0 | 10 | 0.600 → 0.650 | 0.300 → 0.250 | 0.700 → 0.750 | "
            "0.050 |") in report
    assert "| rl800-alone/capo-s0 | `x` | 2 | 300 |" in report  # its wall time under Commands
