"""CASPO pairing rules (arXiv 2605.07353, Algorithm 1)."""

from __future__ import annotations

from training.pairs import INCORRECT, UNCONFIDENT, Competitor, StepSample, caspo_pair, caspo_pairs

CTX = "Q: 48 clips in April, half as many in May. Total?\n"
REF = "In May she sold 48/2 = 24 clips."
RIVALS = (
    Competitor("In May she sold 48*2 = 96 clips.", logprob=-0.4, correct=False),
    Competitor("In May she sold 48/2 = 24 clips.", logprob=-0.2, correct=True),  # known correct: never rejected
    Competitor("In May  she sold 48/2 = 24 clips.", logprob=-0.1),  # same text as s_j up to spaces
    Competitor("May: 48 - 2 = 46.", logprob=-0.9),
)


def sample(correct: bool, confidence: float, candidate: str = REF, competitors=RIVALS) -> StepSample:
    return StepSample(CTX, candidate, correct, confidence, REF, competitors)


def test_correct_and_confident_is_skipped():
    assert caspo_pair(sample(True, 0.95), threshold=0.9) is None


def test_correct_unconfident_rejects_most_probable_competitor():
    pair = caspo_pair(sample(True, 0.5), threshold=0.9)
    assert pair.kind == UNCONFIDENT and pair.prompt == CTX
    assert pair.chosen == REF
    assert pair.rejected == "In May she sold 48*2 = 96 clips."  # -0.4: best rival not correct, not s_j


def test_correct_unconfident_without_competitor_is_skipped():
    assert caspo_pair(sample(True, 0.5, competitors=()), threshold=0.9) is None


def test_incorrect_prefers_reference_over_sample_even_when_confident():
    wrong = "In May she sold 48*2 = 96 clips."
    pair = caspo_pair(sample(False, 0.99, candidate=wrong), threshold=0.9)
    assert (pair.chosen, pair.rejected, pair.kind) == (REF, wrong, INCORRECT)
    assert pair.to_dict() == {"prompt": CTX, "chosen": REF, "rejected": wrong, "kind": INCORRECT, "confidence": 0.99}


def test_incorrect_identical_to_reference_is_skipped():
    assert caspo_pair(sample(False, 0.3), threshold=0.9) is None


def test_caspo_pairs_keeps_order_and_drops_skips():
    samples = [sample(True, 0.95), sample(False, 0.2, candidate="x"), sample(True, 0.1)]
    assert [p.kind for p in caspo_pairs(samples, threshold=0.9)] == [INCORRECT, UNCONFIDENT]
