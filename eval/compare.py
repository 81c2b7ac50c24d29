"""Paired comparison of two eval runs on the items both answered: ``cat-eval compare RUN_A RUN_B``.

Two runs on the same items are paired data: item difficulty is shared, so the *per-item* differences
carry far less noise than two independent accuracies (whose 95 % intervals overlap long before the
difference is really zero). Everything here resamples items, never rows of one run alone:

* accuracy difference A - B with a paired bootstrap percentile interval (items resampled with
  replacement, ``resamples`` >= 2,000, a fixed seed so reports regenerate byte for byte) and the exact
  McNemar p (two-sided binomial test on the discordant pairs: b items only A got right, c only B);
* ratios A / B of tokens per query and of p50 latency, each with a bootstrap interval;
* the ECE difference A - B (and the ratio, for "halves ECE") with a bootstrap interval.

Verdict rules (fixed before the runs; lab/README.md states them) are the small pure functions at the
end: ``non_inferior``, ``better``, ``tokens_at_most``, ``halves``, ``holm_alphas`` and ``combine``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eval import metrics, runner

RESAMPLES = 2000
SEED = 0
LEVEL = 0.95
MARGIN = 0.02  # non-inferiority margin of "≥ X": two accuracy points


# ---------------------------------------------------------------- statistics (pure)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p: P(a split of the b + c discordant pairs at least as uneven as
    observed) under Binomial(b + c, 1/2); 1.0 when there are no discordant pairs."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def bootstrap_indices(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, n) item indices drawn with replacement; one draw shared by every statistic."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def percentile_interval(samples: Sequence[float], level: float = LEVEL) -> tuple[float | None, float | None]:
    """Percentile interval of the finite bootstrap values (numpy's linear interpolation)."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if not len(s):
        return None, None
    tail = (1 - level) / 2 * 100
    return float(np.percentile(s, tail)), float(np.percentile(s, 100 - tail))


@dataclass
class Stat:
    """A point estimate, its bootstrap interval and (for accuracy) the McNemar p. ``samples`` keeps the
    bootstrap values so that a caller can ask for another level (Holm)."""

    estimate: float | None
    lo: float | None
    hi: float | None
    p: float | None = None
    samples: np.ndarray | None = field(default=None, repr=False)

    def interval(self, level: float) -> tuple[float | None, float | None]:
        return (None, None) if self.samples is None else percentile_interval(self.samples, level)

    def as_dict(self) -> dict:
        return {"estimate": self.estimate, "lo": self.lo, "hi": self.hi, "p": self.p}


def _stat(estimate: float | None, samples: np.ndarray, p: float | None = None) -> Stat:
    lo, hi = percentile_interval(samples)
    return Stat(estimate, lo, hi, p, samples)


def accuracy_difference(ya: Sequence[bool], yb: Sequence[bool], idx: np.ndarray) -> Stat:
    """mean(ya) - mean(yb), paired bootstrap interval over ``idx``, exact McNemar p."""
    a, b = np.asarray(ya, dtype=float), np.asarray(yb, dtype=float)
    d = a - b
    only_a, only_b = int(np.sum((a == 1) & (b == 0))), int(np.sum((a == 0) & (b == 1)))
    return _stat(float(d.mean()), d[idx].mean(axis=1), mcnemar_exact(only_a, only_b))


def ratio_of_means(xa: Sequence[float], xb: Sequence[float], idx: np.ndarray) -> Stat:
    """mean(xa) / mean(xb) (e.g. tokens per query), bootstrap interval; resamples with a zero mean
    in B are dropped."""
    a, b = np.asarray(xa, dtype=float), np.asarray(xb, dtype=float)
    if not len(a) or b.mean() == 0:
        return Stat(None, None, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _stat(float(a.mean() / b.mean()), a[idx].mean(axis=1) / b[idx].mean(axis=1))


def ratio_of_medians(xa: Sequence[float], xb: Sequence[float], idx: np.ndarray) -> Stat:
    """median(xa) / median(xb) (p50 latency), bootstrap interval."""
    a, b = np.asarray(xa, dtype=float), np.asarray(xb, dtype=float)
    if not len(a) or np.median(b) == 0:
        return Stat(None, None, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _stat(float(np.median(a) / np.median(b)),
                     np.median(a[idx], axis=1) / np.median(b[idx], axis=1))


def _ece_rows(conf: np.ndarray, correct: np.ndarray, idx: np.ndarray, n_bins: int = metrics.N_BINS) -> np.ndarray:
    """ECE of every resample at once (the same binning as ``metrics.ece``)."""
    bins = metrics.bin_index(conf, n_bins)[idx]  # (R, n)
    c, y = conf[idx], correct[idx]
    total = np.zeros(len(idx))
    for i in range(n_bins):
        m = bins == i
        total += np.abs((y * m).sum(axis=1) - (c * m).sum(axis=1))  # n_b |acc_b - conf_b|
    return total / idx.shape[1]


def ece_difference(ca, ya, cb, yb, idx: np.ndarray) -> tuple[Stat, Stat]:
    """(ECE(A) - ECE(B), ECE(A) / ECE(B)) with bootstrap intervals over the same items."""
    ca, ya, cb, yb = (np.asarray(v, dtype=float) for v in (ca, ya, cb, yb))
    ea, eb = metrics.ece(ca, ya), metrics.ece(cb, yb)
    ra, rb = _ece_rows(ca, ya, idx), _ece_rows(cb, yb, idx)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = _stat(ea / eb if eb else None, ra / rb)
    return _stat(ea - eb, ra - rb), ratio


# ---------------------------------------------------------------- two runs


def pair_rows(rows_a: Sequence[dict], rows_b: Sequence[dict]) -> list[tuple[dict, dict]]:
    """(row of A, row of B) for the ids both runs have, in A's order; the latest row of an id wins."""
    a, b = runner.latest_by_id(rows_a), runner.latest_by_id(rows_b)
    return [(a[i], b[i]) for i in a if i in b]


def compare_rows(rows_a: Sequence[dict], rows_b: Sequence[dict], *, resamples: int = RESAMPLES,
                 seed: int = SEED) -> dict[str, Stat | int]:
    """Every paired statistic of A against B.

    Accuracy uses every shared item (an errored row counts as wrong, as in ``metrics.summarize``);
    tokens and latency the items neither run errored on; ECE the items where both returned a confidence.
    """
    pairs = pair_rows(rows_a, rows_b)
    out: dict = {"n": len(pairs)}
    if not pairs:
        return out
    idx = bootstrap_indices(len(pairs), resamples, seed)
    out["accuracy"] = accuracy_difference([bool(a.get("correct")) for a, _ in pairs],
                                          [bool(b.get("correct")) for _, b in pairs], idx)
    out["accuracy_a"] = float(np.mean([bool(a.get("correct")) for a, _ in pairs]))
    out["accuracy_b"] = float(np.mean([bool(b.get("correct")) for _, b in pairs]))
    ok = [(a, b) for a, b in pairs if not a.get("error") and not b.get("error")]
    out["n_cost"] = len(ok)
    if ok:
        idx_ok = bootstrap_indices(len(ok), resamples, seed)
        out["tokens_ratio"] = ratio_of_means([a.get("tokens") or 0 for a, _ in ok], [b.get("tokens") or 0 for _, b in ok], idx_ok)
        lat = [(a["latency_s"], b["latency_s"]) for a, b in ok
               if a.get("latency_s") is not None and b.get("latency_s") is not None]
        if lat:
            out["p50_ratio"] = ratio_of_medians(*zip(*lat), bootstrap_indices(len(lat), resamples, seed))
    conf = [(a["confidence"], a["correct"], b["confidence"], b["correct"]) for a, b in ok
            if a.get("confidence") is not None and b.get("confidence") is not None]
    out["n_ece"] = len(conf)
    if conf:
        out["ece_diff"], out["ece_ratio"] = ece_difference(*zip(*conf), bootstrap_indices(len(conf), resamples, seed))
    return out


def compare_runs(dir_a: Path, dir_b: Path, **kw) -> dict:
    return compare_rows(runner.read_rows(Path(dir_a) / runner.RESULTS), runner.read_rows(Path(dir_b) / runner.RESULTS), **kw)


def _num(x, digits: int = 3, sign: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def fmt_stat(s: Stat | None, digits: int = 3, sign: bool = False) -> str:
    """'+0.057 [-0.010, 0.123]' (and ', p = 0.125' when the statistic has a p)."""
    if s is None or s.estimate is None:
        return "–"
    text = f"{_num(s.estimate, digits, sign)} [{_num(s.lo, digits, sign)}, {_num(s.hi, digits, sign)}]"
    return text + (f", p = {fmt_p(s.p)}" if s.p is not None else "")


def fmt_p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def render(name_a: str, name_b: str, c: dict, *, resamples: int = RESAMPLES, seed: int = SEED) -> str:
    """The text ``cat-eval compare`` prints."""
    if not c.get("n"):
        return f"{name_a} vs {name_b}: no shared items"
    return "\n".join([
        f"{name_a} vs {name_b}: {c['n']} shared items (paired bootstrap, {resamples} resamples by item, seed {seed}; "
        "95 % percentile intervals)",
        f"  accuracy               {c['accuracy_a']:.3f} vs {c['accuracy_b']:.3f}",
        f"  accuracy A - B         {fmt_stat(c['accuracy'], sign=True)} (exact McNemar)",
        f"  tokens/query A / B     {fmt_stat(c.get('tokens_ratio'))} ({c['n_cost']} items without errors)",
        f"  p50 latency A / B      {fmt_stat(c.get('p50_ratio'))}",
        f"  ECE A - B              {fmt_stat(c.get('ece_diff'), sign=True)} ({c['n_ece']} items with confidences)",
        f"  ECE A / B              {fmt_stat(c.get('ece_ratio'))}",
    ])


def as_json(c: dict) -> dict:
    return {k: (v.as_dict() if isinstance(v, Stat) else v) for k, v in c.items()}


# ---------------------------------------------------------------- verdict rules (pure)

HELD, NOT_HELD, INCONCLUSIVE = "held", "did not hold", "inconclusive"


def non_inferior(lo: float | None, hi: float | None, margin: float = MARGIN) -> str:
    """"A ≥ B": the accuracy difference's lower bound is above -margin; did not hold when the whole
    interval is at or below -margin."""
    if lo is None or hi is None:
        return INCONCLUSIVE
    return HELD if lo > -margin else NOT_HELD if hi <= -margin else INCONCLUSIVE


def better(lo: float | None, hi: float | None) -> str:
    """"A better than B": lower bound above 0 (pass the Holm-adjusted interval's bound); did not hold when
    the (unadjusted) upper bound is at or below 0."""
    if lo is None or hi is None:
        return INCONCLUSIVE
    return HELD if lo > 0 else NOT_HELD if hi <= 0 else INCONCLUSIVE


def tokens_at_most(lo: float | None, hi: float | None, r: float) -> str:
    """"≤ r× tokens": the ratio's upper bound is ≤ r; did not hold when its lower bound is above r."""
    if lo is None or hi is None:
        return INCONCLUSIVE
    return HELD if hi <= r else NOT_HELD if lo > r else INCONCLUSIVE


def halves(lo: float | None, hi: float | None) -> str:
    """"halves ECE": the ECE ratio's upper bound is ≤ 0.5."""
    return tokens_at_most(lo, hi, 0.5)


def holm_alphas(pvalues: Sequence[float], alpha: float = 1 - LEVEL) -> list[float]:
    """Holm's step-down levels: the comparison with the i-th smallest p (0-based) is tested at
    alpha / (m - i), and once one is not rejected every later one gets level 0 (not rejectable).
    The per-comparison interval for "better than" is then the (1 - level) bootstrap interval."""
    m = len(pvalues)
    out = [0.0] * m
    for rank, i in enumerate(sorted(range(m), key=lambda j: pvalues[j])):
        level = alpha / (m - rank)
        if pvalues[i] > level:
            break
        out[i] = level
    return out


def holm_adjusted(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p values: max over earlier ranks of (m - rank) * p, capped at 1."""
    m, out, running = len(pvalues), [1.0] * len(pvalues), 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: pvalues[j])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def combine(*verdicts: str) -> str:
    """A claim of several parts: held if all hold, did not hold if any did not, else inconclusive."""
    if any(v == NOT_HELD for v in verdicts):
        return NOT_HELD
    return HELD if all(v == HELD for v in verdicts) else INCONCLUSIVE
