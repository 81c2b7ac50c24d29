"""Pure metric functions (numpy + sklearn); no I/O, no server.

Conventions
-----------
* ``correct`` is a sequence of bools (1 = correct), ``conf`` a sequence of floats in [0, 1].
* Undefined values are ``None``: an empty input, or AUROC when only one class is present
  (all correct or all wrong), since a ranking cannot then be judged.
* ECE uses ``n_bins`` (15) equal-width bins over [0, 1]: bin ``i`` holds confidences in
  ``[i/n, (i+1)/n)``; the last bin is closed, ``[(n-1)/n, 1]``. ECE is the bin-count-weighted
  mean of ``|accuracy(bin) - mean confidence(bin)|``; empty bins are skipped (weight 0).
* Selective prediction: sort by confidence, highest first; at coverage ``k/n`` the precision is
  the accuracy of the ``k`` most confident answers. Tied confidences are only split at the end
  of a tie group, so the curve does not depend on the order of tied items.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np

N_BINS = 15


def _arrays(conf: Sequence[float], correct: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(conf, dtype=float)
    y = np.asarray(correct, dtype=float)
    if c.shape != y.shape:
        raise ValueError(f"conf and correct differ in length: {c.shape} vs {y.shape}")
    return c, y


def accuracy(correct: Sequence[bool]) -> float | None:
    """pass@1: the fraction correct."""
    return float(np.mean(np.asarray(correct, dtype=float))) if len(correct) else None


def mean_at_k(samples_correct: Sequence[Sequence[bool]]) -> float | None:
    """mean@k: per item the fraction of its k samples that are correct, averaged over items."""
    per_item = [float(np.mean(s)) for s in samples_correct if len(s)]
    return float(np.mean(per_item)) if per_item else None


def majority_correct(samples: Sequence[tuple[Hashable, bool]]) -> bool | None:
    """Is the most frequent answer (ties: the one seen first) correct? ``None`` answers abstain."""
    votes = Counter(a for a, _ in samples if a is not None)
    if not votes:
        return False if samples else None
    top = max(votes.values())
    winner = next(a for a, _ in samples if a is not None and votes[a] == top)
    return any(ok for a, ok in samples if a == winner)


def maj_at_k(samples_per_item: Sequence[Sequence[tuple[Hashable, bool]]]) -> float | None:
    """maj@k: fraction of items whose majority answer over their k samples is correct."""
    votes = [majority_correct(s) for s in samples_per_item]
    votes = [v for v in votes if v is not None]
    return float(np.mean(votes)) if votes else None


def bin_index(conf: Sequence[float], n_bins: int = N_BINS) -> np.ndarray:
    """Bin ``i`` = ``[i/n, (i+1)/n)``, last bin closed (``conf == 1`` falls in bin ``n-1``)."""
    c = np.clip(np.asarray(conf, dtype=float), 0.0, 1.0)
    return np.minimum((c * n_bins).astype(int), n_bins - 1)


def reliability_bins(
    conf: Sequence[float], correct: Sequence[bool], n_bins: int = N_BINS
) -> list[dict]:
    """One dict per bin: lo, hi, count, mean confidence, accuracy (None when empty)."""
    c, y = _arrays(conf, correct)
    idx = bin_index(c, n_bins)
    out = []
    for i in range(n_bins):
        m = idx == i
        n = int(m.sum())
        out.append({
            "lo": i / n_bins, "hi": (i + 1) / n_bins, "count": n,
            "confidence": float(c[m].mean()) if n else None,
            "accuracy": float(y[m].mean()) if n else None,
        })
    return out


def ece(conf: Sequence[float], correct: Sequence[bool], n_bins: int = N_BINS) -> float | None:
    """Expected calibration error: sum_b (n_b / N) * |acc_b - conf_b| over non-empty bins."""
    if len(conf) == 0:
        return None
    bins = reliability_bins(conf, correct, n_bins)
    total = sum(b["count"] for b in bins)
    return float(sum(
        b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]
    ))


def brier(conf: Sequence[float], correct: Sequence[bool]) -> float | None:
    """Brier score: mean of (confidence - correct)^2."""
    c, y = _arrays(conf, correct)
    return float(np.mean((c - y) ** 2)) if len(c) else None


def auroc(scores: Sequence[float], correct: Sequence[bool]) -> float | None:
    """P(score of a random correct item > score of a random wrong one), ties count 1/2.

    ``None`` when only one class is present (all correct / all wrong) or the input is empty.
    """
    s, y = _arrays(scores, correct)
    if len(y) == 0 or y.min() == y.max():
        return None
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415  (slow import, only when needed)

    return float(roc_auc_score(y.astype(int), s))


def ppl_auc(perplexity: Sequence[float], correct: Sequence[bool]) -> float | None:
    """PPL-AUC: does lower perplexity rank correct answers above wrong ones (AUROC of -ppl)."""
    return auroc([-p for p in perplexity], correct)


def auc_mean(groups: Sequence[tuple[Sequence[float], Sequence[bool]]]) -> float | None:
    """AUC-mean (CAPO, "Calibration-Aware Policy Optimization", arXiv 2604.12632).

    ``groups`` holds one ``(mean_logprobs, correct)`` pair per question: the sequence mean token
    log-probabilities of its n sampled answers and whether each is correct. Per question, the AUROC of
    mean log-prob against correctness over its own samples; the mean over the questions that have both
    outcomes (the others cannot rank). ``None`` when no question has both. Unlike ``ppl_auc``, which
    pools single answers across questions, this asks whether the model ranks its own answers to the
    *same* question.
    """
    per_question = [auroc(scores, correct) for scores, correct in groups]
    defined = [a for a in per_question if a is not None]
    return float(np.mean(defined)) if defined else None


def auc_mean_all(groups: Sequence[tuple[Sequence[float], Sequence[bool]]]) -> float | None:
    """AUC-mean over *every* question: one whose samples are all right or all wrong counts as AUROC 0.5 (it
    cannot rank). ``auc_mean`` averages only the questions with both outcomes, a set that shrinks as accuracy
    rises; this variant keeps the denominator fixed, so the selection effect shows as the gap between the two."""
    per_question = [auroc(scores, correct) for scores, correct in groups]
    return float(np.mean([0.5 if a is None else a for a in per_question])) if per_question else None


def precision_coverage(
    conf: Sequence[float], correct: Sequence[bool]
) -> list[tuple[float, float, float]]:
    """(coverage, precision, threshold) at every distinct confidence, highest first.

    Keeping the answers with confidence >= threshold covers ``coverage`` of the items with
    accuracy ``precision``.
    """
    c, y = _arrays(conf, correct)
    if len(c) == 0:
        return []
    order = np.argsort(-c, kind="stable")
    c, y = c[order], y[order]
    hits = np.cumsum(y)
    out = []
    for k in range(1, len(c) + 1):
        if k == len(c) or c[k] != c[k - 1]:  # end of a tie group
            out.append((k / len(c), float(hits[k - 1] / k), float(c[k - 1])))
    return out


def selective_accuracy(
    conf: Sequence[float], correct: Sequence[bool], coverage: float
) -> float | None:
    """Accuracy of the answers kept at the first curve point whose coverage >= ``coverage``."""
    for cov, prec, _ in precision_coverage(conf, correct):
        if cov >= coverage - 1e-12:
            return prec
    return None


def area_under_precision_coverage(conf: Sequence[float], correct: Sequence[bool]) -> float | None:
    """Mean precision over coverages 1/n..n/n (ties share their group's precision)."""
    curve = precision_coverage(conf, correct)
    if not curve:
        return None
    n = len(conf)
    total, prev_k = 0.0, 0
    for cov, prec, _ in curve:
        k = round(cov * n)
        total += prec * (k - prev_k)
        prev_k = k
    return total / n


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolation percentile (numpy's default); ``None`` when empty."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


def latency_stats(latencies_s: Sequence[float]) -> dict:
    return {
        "latency_p50_s": percentile(latencies_s, 50),
        "latency_p95_s": percentile(latencies_s, 95),
        "latency_mean_s": float(np.mean(latencies_s)) if len(latencies_s) else None,
    }


def throughput(n_items: int, total_tokens: int, wall_time_s: float) -> dict:
    ok = wall_time_s > 0 and math.isfinite(wall_time_s)
    return {
        "items_per_s": n_items / wall_time_s if ok else None,
        "tokens_per_s": total_tokens / wall_time_s if ok else None,
    }


def calibration_summary(conf: Sequence[float], correct: Sequence[bool]) -> dict:
    """ECE, Brier, AUROC and selective accuracies over items that have a confidence."""
    return {
        "n_with_confidence": len(conf),
        "mean_confidence": float(np.mean(conf)) if len(conf) else None,
        "ece": ece(conf, correct),
        "brier": brier(conf, correct),
        "auroc": auroc(conf, correct),
        "selective_acc@50": selective_accuracy(conf, correct, 0.5),
        "selective_acc@80": selective_accuracy(conf, correct, 0.8),
        "aupc": area_under_precision_coverage(conf, correct),
    }


def raw_calibration(rows: Sequence[dict]) -> dict:
    """ECE and Brier of ``raw_confidence`` (the uncalibrated score) over rows that have it."""
    conf = [float(r["raw_confidence"]) for r in rows]
    correct = [bool(r["correct"]) for r in rows]
    return {"raw_ece": ece(conf, correct), "raw_brier": brier(conf, correct)}


def _vote(sample: dict) -> Hashable:
    """A sample's vote: its equivalence ``group`` when graded with one, else its answer text."""
    return sample["group"] if "group" in sample else sample.get("answer")


def summarize(rows: Sequence[dict]) -> dict:
    """All metrics of a run from its result rows (see ``eval.runner`` for the row schema).

    Errored rows count as wrong for accuracy and are left out of the calibration and cost
    metrics (they have no confidence, tokens or latency worth averaging).
    """
    ok = [r for r in rows if not r.get("error")]
    correct = [bool(r.get("correct")) for r in rows]
    with_conf = [r for r in ok if r.get("confidence") is not None]
    with_ppl = [r for r in ok if r.get("perplexity") is not None]
    samples = [r["samples"] for r in ok if r.get("samples")]
    tokens = [r.get("tokens") or 0 for r in ok]
    out = {
        "n": len(rows),
        "n_errors": len(rows) - len(ok),
        "accuracy": accuracy(correct),
        "n_abstained": sum(1 for r in ok if (r.get("search") or {}).get("abstained")),
        **calibration_summary([r["confidence"] for r in with_conf],
                              [bool(r["correct"]) for r in with_conf]),
        # with a calibrated server, the strategy's own score too (rows graded before it lack it)
        **raw_calibration([r for r in with_conf if r.get("raw_confidence") is not None]),
        "ppl_auc": ppl_auc([r["perplexity"] for r in with_ppl], [bool(r["correct"]) for r in with_ppl]),
        "maj@k": maj_at_k([[(_vote(s), bool(s.get("correct"))) for s in ss] for ss in samples]),
        "mean@k": mean_at_k([[bool(s.get("correct")) for s in ss] for ss in samples]),
        "tokens_per_query": float(np.mean(tokens)) if tokens else None,
        "total_tokens": int(sum(tokens)),
        **latency_stats([r["latency_s"] for r in ok if r.get("latency_s") is not None]),
    }
    return out
