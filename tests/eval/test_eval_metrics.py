"""Metric unit tests; every expected value is computed by hand in the comments."""

import math

import pytest

from eval import metrics as M


# --- accuracy, maj@k, mean@k ---------------------------------------------------------------

def test_accuracy():
    assert M.accuracy([True, False, True, True]) == pytest.approx(0.75)  # 3/4
    assert M.accuracy([True, True]) == 1.0
    assert M.accuracy([False, False]) == 0.0
    assert M.accuracy([]) is None


def test_maj_and_mean_at_k():
    items = [
        [("3", True), ("4", False), ("3", True)],   # majority "3" (2 votes) -> correct
        [("5", False), ("6", True)],                # 1-1 tie -> first seen "5" -> wrong
        [(None, False), (None, False), ("7", True)],  # None abstains; "7" wins -> correct
    ]
    # maj@k = 2/3
    assert M.maj_at_k(items) == pytest.approx(2 / 3)
    # mean@k = mean(2/3, 1/2, 1/3) = 1.5/3 = 0.5
    assert M.mean_at_k([[ok for _, ok in s] for s in items]) == pytest.approx(0.5)
    assert M.maj_at_k([]) is None and M.mean_at_k([]) is None
    assert M.majority_correct([(None, False)]) is False  # only abstentions -> wrong


# --- binning and ECE -------------------------------------------------------------------------

def test_bin_edges_left_closed_last_bin_closed():
    # bin i = [i/15, (i+1)/15): 0 -> 0, 1/15 -> 1, 0.0666 -> 0, 14/15 -> 14, 1.0 -> 14 (closed)
    idx = M.bin_index([0.0, 1 / 15, 0.0666, 14 / 15, 1.0, 0.5])
    # 0.5 * 15 = 7.5 -> bin 7
    assert idx.tolist() == [0, 1, 0, 14, 14, 7]


def test_ece_one_item_per_bin():
    # bins: 0.1*15=1.5 -> 1, 0.2*15=3 -> 3, 0.9*15=13.5 -> 13, 0.95*15=14.25 -> 14
    # |0-0.1| + |1-0.2| + |1-0.9| + |1-0.95| = 0.1+0.8+0.1+0.05 = 1.05; each weight 1/4 -> 0.2625
    assert M.ece([0.1, 0.2, 0.9, 0.95], [0, 1, 1, 1]) == pytest.approx(0.2625)


def test_ece_shared_bin_and_empty_bins():
    # 0.8*15=12 and 0.85*15=12.75 share bin 12: acc 1/2, conf 0.825, gap 0.325, weight 2/3
    # 0.3*15=4.5 -> bin 4: acc 0, conf 0.3, gap 0.3, weight 1/3; the 13 other bins are empty
    # ECE = 2/3*0.325 + 1/3*0.3 = 0.216667 + 0.1 = 0.316667
    assert M.ece([0.8, 0.85, 0.3], [1, 0, 0]) == pytest.approx(2 / 3 * 0.325 + 0.1)
    bins = M.reliability_bins([0.8, 0.85, 0.3], [1, 0, 0])
    assert [b["count"] for b in bins if b["count"]] == [1, 2]
    assert sum(1 for b in bins if b["count"] == 0) == 13
    assert bins[12]["accuracy"] == 0.5 and bins[0]["accuracy"] is None


def test_constant_confidence():
    conf, correct = [0.5] * 4, [1, 0, 1, 1]
    assert M.ece(conf, correct) == pytest.approx(0.25)  # one bin: |3/4 - 1/2|
    assert M.brier(conf, correct) == pytest.approx(0.25)  # every (0.5 - y)^2 = 0.25
    assert M.auroc(conf, correct) == pytest.approx(0.5)  # all ties count 1/2


def test_all_correct():
    conf, correct = [0.9, 0.6], [1, 1]
    # bins 13 (13.5) and 9 (9.0): 1/2*|1-0.9| + 1/2*|1-0.6| = 0.05 + 0.2 = 0.25
    assert M.ece(conf, correct) == pytest.approx(0.25)
    assert M.brier(conf, correct) == pytest.approx((0.01 + 0.16) / 2)  # 0.085
    assert M.auroc(conf, correct) is None  # one class: undefined


def test_all_wrong():
    conf, correct = [0.9, 0.6], [0, 0]
    assert M.ece(conf, correct) == pytest.approx(0.75)  # (0.9 + 0.6) / 2
    assert M.brier(conf, correct) == pytest.approx((0.81 + 0.36) / 2)  # 0.585
    assert M.auroc(conf, correct) is None
    assert M.ppl_auc([1.0, 2.0], correct) is None


def test_empty_inputs():
    assert M.ece([], []) is None and M.brier([], []) is None and M.auroc([], []) is None
    assert M.precision_coverage([], []) == [] and M.selective_accuracy([], [], 0.5) is None
    assert M.percentile([], 50) is None


def test_perfect_calibration_is_zero():
    # bin 7 (0.5*15=7.5) holds 2 items, one right: acc 1/2 = conf 1/2; bin 14 holds conf 1, right
    assert M.ece([0.5, 0.5, 1.0], [1, 0, 1]) == pytest.approx(0.0)


def test_length_mismatch_raises():
    with pytest.raises(ValueError):
        M.brier([0.1, 0.2], [1])


# --- ranking ---------------------------------------------------------------------------------

def test_auroc_hand_computed():
    # positives {0.9, 0.7}, negatives {0.8, 0.6}: 0.9>0.8, 0.9>0.6, 0.7<0.8, 0.7>0.6 -> 3/4
    assert M.auroc([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(0.75)
    # positive 0.5 vs negatives {0.5, 0.2}: tie 1/2 + win 1 -> 1.5/2 = 0.75
    assert M.auroc([0.5, 0.5, 0.2], [1, 0, 0]) == pytest.approx(0.75)


def test_ppl_auc_lower_perplexity_ranks_correct_higher():
    # correct ppl {1.2, 1.5} all below wrong {3.0, 2.0} -> every pair ordered -> 1.0
    assert M.ppl_auc([1.2, 3.0, 1.5, 2.0], [1, 0, 1, 0]) == pytest.approx(1.0)
    # correct {2.5, 1.5}, wrong {2.0, 1.0}: pairs (2.5 vs 2.0 no, vs 1.0 no, 1.5 vs 2.0 yes,
    # 1.5 vs 1.0 no) -> 1/4
    assert M.ppl_auc([2.5, 2.0, 1.5, 1.0], [1, 0, 1, 0]) == pytest.approx(0.25)


# --- selective prediction --------------------------------------------------------------------

def test_precision_coverage_with_ties():
    conf, correct = [0.9, 0.8, 0.8, 0.3], [1, 1, 0, 0]
    # k=1: 1/1; the 0.8 tie group ends at k=3: 2/3; k=4: 2/4
    assert M.precision_coverage(conf, correct) == [
        (0.25, 1.0, 0.9), (0.75, pytest.approx(2 / 3), 0.8), (1.0, 0.5, 0.3)]
    assert M.selective_accuracy(conf, correct, 0.25) == 1.0
    assert M.selective_accuracy(conf, correct, 0.5) == pytest.approx(2 / 3)  # first cov >= .5
    assert M.selective_accuracy(conf, correct, 1.0) == 0.5
    # area: (1.0*1 + 2/3*2 + 0.5*1) / 4 = 2.8333/4 = 0.708333
    assert M.area_under_precision_coverage(conf, correct) == pytest.approx((1 + 4 / 3 + 0.5) / 4)


def test_precision_coverage_order_of_ties_does_not_matter():
    a = M.precision_coverage([0.8, 0.8, 0.1], [1, 0, 0])
    b = M.precision_coverage([0.8, 0.8, 0.1], [0, 1, 0])
    assert a == b == [(pytest.approx(2 / 3), 0.5, 0.8), (1.0, pytest.approx(1 / 3), 0.1)]


# --- cost ------------------------------------------------------------------------------------

def test_latency_and_throughput():
    s = M.latency_stats([1, 2, 3, 4, 5])
    assert s["latency_p50_s"] == 3.0
    assert s["latency_p95_s"] == pytest.approx(4.8)  # 1 + 0.95 * (5-1) linear interpolation
    assert s["latency_mean_s"] == 3.0
    assert M.throughput(10, 500, 5.0) == {"items_per_s": 2.0, "tokens_per_s": 100.0}
    assert M.throughput(10, 500, 0.0) == {"items_per_s": None, "tokens_per_s": None}


# --- summarize ------------------------------------------------------------------------------

def test_summarize_rows():
    rows = [
        {"correct": True, "confidence": 0.9, "perplexity": 1.1, "tokens": 10, "latency_s": 1.0,
         "samples": [{"answer": "1", "correct": True}, {"answer": "2", "correct": False}]},
        {"correct": False, "confidence": 0.2, "perplexity": 3.0, "tokens": 30, "latency_s": 3.0,
         "search": {"abstained": True}},
        {"correct": False, "confidence": None, "error": "APIConnectionError: boom"},
    ]
    s = M.summarize(rows)
    assert s["n"] == 3 and s["n_errors"] == 1 and s["n_abstained"] == 1
    assert s["accuracy"] == pytest.approx(1 / 3)  # the errored row counts as wrong
    assert s["n_with_confidence"] == 2
    # bins 13 (0.9*15=13.5) and 3 (0.2*15=3): 1/2*0.1 + 1/2*0.2 = 0.15
    assert s["ece"] == pytest.approx(0.15)
    assert s["brier"] == pytest.approx((0.01 + 0.04) / 2)
    assert s["auroc"] == 1.0 and s["ppl_auc"] == 1.0
    assert s["maj@k"] == 1.0 and s["mean@k"] == 0.5  # one item with samples: "1"(T) vs "2"(F)
    assert s["tokens_per_query"] == 20.0 and s["total_tokens"] == 40
    assert s["latency_p50_s"] == 2.0
    assert not any(isinstance(v, float) and math.isnan(v) for v in s.values())


def test_auc_mean_hand_computed():
    # q1: correct at -0.1 and -0.5, wrong at -0.3 and -0.9: pairs (c, w) ordered right:
    #     (-0.1 > -0.3), (-0.1 > -0.9), (-0.5 > -0.9); wrong: (-0.5 < -0.3)  -> 3/4
    # q2 is (conf [-0.2, -0.2, -0.4], correct [1, 0, 0]): pairs (1 vs 2) tie 1/2, (1 vs 3) 1 -> 0.75
    # q3: one correct at -1.0 below one wrong at -0.1                         -> 0
    # q4: all correct, q5: all wrong -> skipped
    groups = [
        ([-0.1, -0.3, -0.5, -0.9], [True, False, True, False]),
        ([-0.2, -0.2, -0.4], [True, False, False]),
        ([-1.0, -0.1], [True, False]),
        ([-0.1, -0.2], [True, True]),
        ([-0.1, -0.2], [False, False]),
    ]
    assert M.auc_mean(groups) == pytest.approx((0.75 + 0.75 + 0.0) / 3)
    # every question kept, q4 and q5 at 0.5: (0.75 + 0.75 + 0 + 0.5 + 0.5) / 5
    assert M.auc_mean_all(groups) == pytest.approx(2.5 / 5)
    assert M.auc_mean_all([([-0.1, -0.2], [True, True])]) == 0.5 and M.auc_mean_all([]) is None
    # per question both rankings are perfect (1.0 each); pooled across questions (ppl_auc's way) the hard
    # question's correct answer (-2.0) ranks below the easy one's wrong answer (-0.5): 3 of 4 pairs -> 0.75
    hard, easy = ([-2.0, -3.0], [True, False]), ([-0.1, -0.5], [True, False])
    assert M.auc_mean([hard, easy]) == 1.0
    assert M.auroc(hard[0] + easy[0], hard[1] + easy[1]) == pytest.approx(0.75)
    assert M.auc_mean([([-0.1, -0.2], [True, True])]) is None
    assert M.auc_mean([]) is None
