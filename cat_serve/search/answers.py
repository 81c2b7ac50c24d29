"""Final-answer extraction, normalisation and equivalence: the ONE grader of the project.

Used by the search strategies (answer sets, votes), by ``eval`` (accuracy) and by ``training``
(rewards), so that "correct" means the same thing everywhere.

Extraction order (the first that yields a non-empty answer wins):

1. the last ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces, so ``\\boxed{\\frac{1}{2}}`` works);
2. the last GSM8K ``#### ...`` line;
3. the last "the (final) answer is ..." phrase, or a line starting "Answer: ..." (rest of the line);
4. only with ``fallback=True``: the last number in the text.

Equivalence (:func:`answers_equivalent`) tries a cheap path first (normalised string equality,
exact rational equality) and only then math-verify, whose exceptions never escape.
"""

from __future__ import annotations

import re
import threading
from fractions import Fraction
from functools import lru_cache

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_GSM8K = re.compile(r"####\s*([^\n]*)")
# "the (final) answer is X" anywhere; "Answer: X" / "**Final Answer:** X" only at the start of a line
_ANSWER_IS = re.compile(
    r"(?:answer\s+is\s*:?|^[\s*#]*(?:final\s+)?answer[\s*]*:)[\s*]*([^\n]*)", re.IGNORECASE | re.MULTILINE
)
_NUMBER = re.compile(r"-?(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)(?:\s*/\s*\d+)?")
_LEADING_NUMBER = re.compile(r"^(-?(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+))\s+[A-Za-z]")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
_SIMPLE_FRAC = re.compile(r"^(-?)\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}$")
_SPACING = re.compile(r"\\[,;:! ]|\\left|\\right|\s+")

_PARSE_TIMEOUT_S = 5  # math-verify's own signal.alarm timeouts, main thread only


def _boxed_contents(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` with balanced braces, or None."""
    for match in reversed(list(_BOXED.finditer(text))):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i]
    return None


def _clean(answer: str) -> str:
    """Strip math delimiters, a nested ``\\boxed``, trailing periods and thousands separators."""
    s = answer.strip().rstrip(".").strip()
    inner = _boxed_contents(s)
    if inner is not None:
        s = inner.strip()
    for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
            s = s[len(left) : len(s) - len(right)].strip()
    s = s.strip("$ *").rstrip(".").strip()
    return _THOUSANDS.sub("", s)


def _marker_answer(text: str) -> str | None:
    """Answer behind an explicit marker (boxed, ``####``, "the answer is"), or None."""
    boxed = _boxed_contents(text)
    if boxed is not None and _clean(boxed):
        return _clean(boxed)
    for pattern in (_GSM8K, _ANSWER_IS):
        matches = pattern.findall(text)
        if matches and _clean(matches[-1]):
            answer = _clean(matches[-1])
            leading = _LEADING_NUMBER.match(answer)  # "42 apples" -> "42"
            return _THOUSANDS.sub("", leading.group(1)) if leading else answer
    return None


def extract_answer(text: str, *, fallback: bool = True) -> str | None:
    """The final answer of a completion, or None when there is none (never a guess without ``fallback``)."""
    answer = _marker_answer(text)
    if answer is None and fallback:
        numbers = _NUMBER.findall(text)
        answer = _THOUSANDS.sub("", numbers[-1]).replace(" ", "") if numbers else None
    return answer


def has_final_answer(text: str) -> bool:
    """True iff ``text`` holds a marker answer (boxed / ``####`` / "the answer is"); no number fallback."""
    return _marker_answer(text) is not None


def _as_fraction(s: str) -> Fraction | None:
    frac = _SIMPLE_FRAC.match(s)
    if frac:
        sign, num, den = frac.groups()
        s = f"{sign}{num}/{den}"
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def normalize_answer(s: str | None) -> str:
    """A canonical key for clustering: exact rationals as ``p/q`` (or ``p``), else squashed LaTeX.

    ``"1,234" -> "1234"``, ``"0.50" -> "1/2"``, ``"\\dfrac{1}{2}" -> "1/2"``,
    ``"\\text{ Tuesday }" -> "tuesday"``.
    """
    if s is None:
        return ""
    t = _clean(s)
    t = _TEXT_CMD.sub(r"\1", t)
    t = _SPACING.sub("", t).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    t = t.rstrip(".").lower()
    value = _as_fraction(t)
    return str(value) if value is not None else t


def _timeout_s() -> int | None:
    """math-verify's timeouts use ``signal.alarm``: only allowed in the main thread."""
    return _PARSE_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


@lru_cache(maxsize=4096)
def _parse(answer: str, timeout: int | None) -> tuple:
    from math_verify import parse

    return tuple(parse(f"${answer}$", parsing_timeout=timeout))


def _math_verify_equal(a: str, b: str) -> bool:
    from math_verify import verify

    timeout = _timeout_s()
    try:
        gold, pred = _parse(a, timeout), _parse(b, timeout)
        return bool(gold and pred and verify(list(gold), list(pred), timeout_seconds=timeout))
    except BaseException as err:  # noqa: BLE001 -- math-verify's TimeoutException is a BaseException
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        return False


def answers_equivalent(a: str | None, b: str | None) -> bool:
    """Whether two extracted answers denote the same value (``a`` is treated as the reference)."""
    if a is None or b is None:
        return False
    na, nb = normalize_answer(a), normalize_answer(b)
    if not na or not nb:
        return False
    if na == nb:
        return True
    fa, fb = _as_fraction(na), _as_fraction(nb)
    if fa is not None and fb is not None:
        return fa == fb
    return _math_verify_equal(_clean(a), _clean(b))


def grade(completion_text: str, gold: str) -> bool:
    """True iff the completion's final answer equals ``gold`` (a plain answer or a GSM8K ``#### x`` string)."""
    reference = _marker_answer(gold) or _clean(gold)
    return answers_equivalent(reference, extract_answer(completion_text))


def cluster_answers(answers: list[str | None]) -> list[list[int]]:
    """Group indices of equivalent answers (None never joins a group), in order of first occurrence.

    Exact normalised keys are merged first; distinct keys are then merged when their first
    members are equivalent (math-verify), so the expensive check runs once per pair of keys.
    """
    by_key: dict[str, list[int]] = {}
    for i, answer in enumerate(answers):
        key = normalize_answer(answer)
        if answer is not None and key:
            by_key.setdefault(key, []).append(i)
    clusters: list[list[int]] = []
    for members in by_key.values():
        home = next((c for c in clusters if answers_equivalent(answers[c[0]], answers[members[0]])), None)
        if home is None:
            clusters.append(list(members))
        else:
            home.extend(members)
    for c in clusters:
        c.sort()
    clusters.sort(key=lambda c: c[0])
    return clusters
