"""CASPO step-level preference pairs (the CaT/CASPO paper, arXiv 2605.07353, §3.2 and Algorithm 1) -- pure, no torch.

For every reasoning-step context ``q_j`` (question + reference steps so far) the policy samples a
candidate step ``s_j``, and we know whether it is correct and how confident the model was (``c_j``,
an entropy-based step confidence, higher = more certain). Then:

* correct and confident (``c_j > threshold``)  -> skip: nothing to teach;
* correct but unconfident                        -> chosen = ``s_j``, rejected = the most probable
  *competing* candidate for the same context (a different text, not known to be correct):
  sharpen the model's preference for the right step it was unsure of;
* incorrect                                      -> chosen = the reference step, rejected = ``s_j``.

Pairs come out in TRL's DPO "prompt / chosen / rejected" format (``PreferencePair.to_dict``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

UNCONFIDENT = "correct_unconfident"
INCORRECT = "incorrect"


@dataclass(frozen=True)
class Competitor:
    """Another candidate step sampled for the same context."""

    text: str
    logprob: float  # its (length-normalised) log-probability under the policy: ranks competitors
    correct: bool | None = None  # None: not judged


@dataclass(frozen=True)
class StepSample:
    """One sampled step ``s_j`` for context ``q_j`` with its judgement."""

    context: str  # q_j: the prompt the step continues
    candidate: str  # s_j
    correct: bool
    confidence: float  # c_j
    reference: str  # the reference (correct) step for this context
    competitors: tuple[Competitor, ...] = ()


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    kind: str  # UNCONFIDENT or INCORRECT
    confidence: float

    def to_dict(self) -> dict:
        return asdict(self)


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def best_competitor(sample: StepSample) -> Competitor | None:
    """The most probable competitor whose text differs from ``s_j`` and is not known correct."""
    rivals = [c for c in sample.competitors if c.correct is not True and not _same(c.text, sample.candidate)]
    return max(rivals, key=lambda c: c.logprob, default=None)


def caspo_pair(sample: StepSample, *, threshold: float) -> PreferencePair | None:
    """Algorithm 1's decision for one step; None when the step yields no pair."""
    if sample.correct:
        if sample.confidence > threshold:
            return None
        rival = best_competitor(sample)
        if rival is None:
            return None
        return PreferencePair(sample.context, sample.candidate, rival.text, UNCONFIDENT, sample.confidence)
    if _same(sample.reference, sample.candidate):  # a judge that calls the reference wrong: skip
        return None
    return PreferencePair(sample.context, sample.reference, sample.candidate, INCORRECT, sample.confidence)


def caspo_pairs(samples: Iterable[StepSample], *, threshold: float) -> list[PreferencePair]:
    """All pairs of a collection round, in input order."""
    pairs = (caspo_pair(s, threshold=threshold) for s in samples)
    return [p for p in pairs if p is not None]
