"""CASPO's step judges: is a sampled reasoning step correct?

* ``exact`` (default): GSM8K's own notes. A step is correct when its arithmetic is not wrong
  (``check_step_arithmetic``) and it states the reference step's result (the value of its last
  ``<<expr=value>>`` note); for the last step of a solution, the gold final answer. A reference step
  without a note (prose) is matched by normalised text.
* ``critic``: a model behind any OpenAI-compatible endpoint (``--critic-base-url``, e.g. a
  ``make serve`` of a larger model) answers yes/no for the step, given the problem, the steps so far
  and the reference step. An unusable reply (an error, a timeout, neither yes nor no) falls back to the
  exact judgement for that step and is counted (``critic_fallbacks`` in the round's metrics), so a
  flaky critic never stops a round and never silently decides.
"""

from __future__ import annotations

import re
from fractions import Fraction

from training.data import check_step_arithmetic, step_results

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
JUDGES = ("exact", "critic")


def _numbers(text: str) -> set[Fraction]:
    out = set()
    for m in NUMBER.finditer(text):
        try:
            out.add(Fraction(m.group(0).replace(",", "")))
        except ValueError:
            pass
    return out


def judge_step(candidate: str, reference: str, *, gold: str | None = None) -> bool:
    """The exact judge. ``reference`` keeps its calculator notes; ``gold`` is given for the last step."""
    if check_step_arithmetic(candidate) is False:
        return False
    if gold is not None:
        try:
            return Fraction(gold.replace(",", "")) in _numbers(candidate)
        except ValueError:
            return " ".join(candidate.split()).lower().endswith(gold.lower())
    results = step_results(reference)
    if not results:
        return " ".join(candidate.split()).lower() == " ".join(reference.split()).lower()
    return results[-1] in _numbers(candidate)


def parse_verdict(text: str | None) -> bool | None:
    """``"Yes."`` -> True, ``"no, because"`` -> False, anything else -> None (first word decides)."""
    words = re.findall(r"[a-z]+", (text or "").lower())
    if not words:
        return None
    return {"yes": True, "no": False, "correct": True, "incorrect": False}.get(words[0])


CRITIC_PROMPT = """You check one step of a grade-school math solution.

Problem: {question}
Solution so far:
{prefix}
Reference next step (known to be correct): {reference}
Candidate next step: {candidate}

Is the candidate step correct (right arithmetic, and it reaches the same result as the reference)? Answer yes or no."""


class CriticJudge:
    """yes/no verdicts from a chat model behind an OpenAI-compatible endpoint."""

    def __init__(self, base_url: str, model: str, *, api_key: str = "EMPTY", timeout: float = 60.0):
        from openai import OpenAI

        self.client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=1)
        self.model = model
        self.calls = 0
        self.fallbacks = 0

    def __call__(self, *, question: str, prefix: str, candidate: str, reference: str, exact: bool) -> bool:
        import openai

        self.calls += 1
        prompt = CRITIC_PROMPT.format(question=question, prefix=prefix or "(none yet)", reference=reference,
                                      candidate=candidate)
        try:
            reply = self.client.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": prompt}], temperature=0.0, max_tokens=4)
            verdict = parse_verdict(reply.choices[0].message.content)
        except openai.OpenAIError:
            verdict = None
        if verdict is None:
            self.fallbacks += 1
            return exact
        return verdict
