"""Final-answer extraction, normalisation and equivalence: the ONE grader of the project.

Used by the search strategies (answer sets, votes), by ``eval`` (accuracy) and by ``training``
(rewards), so that "correct" means the same thing everywhere. This module reads NUMBERS (and LaTeX);
``formats.py`` builds the other answer formats (multiple-choice letters, yes/no, short phrases) and
the per-search ``answer_format`` on top of it.

Extraction order of :func:`extract_answer` (the first that yields a non-empty answer wins):

1. the last ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces, so ``\\boxed{\\frac{1}{2}}`` works);
2. the last GSM8K ``#### ...`` line;
3. the last "the (final) answer is ..." phrase, or a line starting "Answer: ..." (rest of the line);
4. only with ``fallback=True``: the CONCLUSION number (:func:`conclusion_number`): in the last
   sentence that holds a number, the last "= N", else the first number after a result verb
   ("is", "are", "has", "equals", "a total of", ...), else that sentence's last number. So
   "7 * 6 = 42, which is the result of 6 multiplied by 7." reads 42, not the literal last 7.

Equivalence (:func:`answers_equivalent`) tries a cheap path first (normalised string equality,
exact rational equality) and only then math-verify, whose exceptions never escape. Two WORD answers
("Paris", "the Eiffel Tower") are compared only by their normalised keys (case and punctuation
ignored): math-verify would read "paris" as the product p*a*r*i*s and call it equal to "sirap".
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


def marker_text(text: str) -> str | None:
    """The cleaned text behind the last explicit marker (boxed, ``####``, "the answer is", "Answer:"),
    or None. Boxed content wins over the others; this is the raw material of every answer format."""
    boxed = _boxed_contents(text)
    if boxed is not None and _clean(boxed):
        return _clean(boxed)
    for pattern in (_GSM8K, _ANSWER_IS):
        matches = pattern.findall(text)
        if matches and _clean(matches[-1]):
            return _clean(matches[-1])
    return None


def leading_number(answer: str) -> str:
    """``"42 apples" -> "42"``: a marker answer that starts with a number followed by words."""
    leading = _LEADING_NUMBER.match(answer)
    return _THOUSANDS.sub("", leading.group(1)) if leading else answer


def _marker_answer(text: str) -> str | None:
    """Answer behind an explicit marker (boxed, ``####``, "the answer is"), or None."""
    boxed = _boxed_contents(text)
    if boxed is not None and _clean(boxed):
        return _clean(boxed)
    answer = marker_text(text)
    return None if answer is None else leading_number(answer)


# a sentence ends at . ! ? followed by white space, or at a line break ("7.5" and "Mr.Smith" do not split)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_NUM = r"-?(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)"
_NUM_FRAC = _NUM + r"(?:\s*/\s*\d+)?"
# "= N" where N is not the start of a longer expression ("= 7 * 6")
_EQUALS_NUMBER = re.compile(r"=\s*\$?\s*(" + _NUM_FRAC + r")(?!\.?\d)(?!\s*[-+*/x×÷^]\s*\d)")
# a conclusion inside a sentence: "there are 25 cows and 12 pigs, so 37 animals"
_CONNECTIVE = re.compile(r"\b(?:so|therefore|thus|hence|in\s+total|altogether|overall)\b", re.IGNORECASE)
# "is N", "has N", "a total of N" ... but not "is 2 more than", "are 3 times"
_RESULT_VERB_NUMBER = re.compile(
    r"\b(?:is|are|was|were|be|equals?|equal\s+to|makes?|gives?|has|have|had|total(?:s|\s+of)?|"
    r"left\s+with|comes?\s+to|results?\s+in)\s+(?:a\s+total\s+of\s+|about\s+|approximately\s+|exactly\s+|"
    r"only\s+|now\s+|still\s+)?\$?(" + _NUM_FRAC + r")(?![\d.]?\d)(?!\s*(?:more|less|fewer|times|than|[-+*/x×÷^]\s*\d)\b)",
    re.IGNORECASE,
)


def conclusion_number(text: str) -> str | None:
    """The number a text concludes with, or None when it holds no number.

    In the last sentence (or line) that holds a number, from its last connective on ("so", "therefore",
    "thus", "hence", "in total", ...) when a number follows one: the last ``= N`` (a computation's result),
    else the first number right after a result verb ("is", "are", "has", "equals", "a total of",
    "left with", ...; not "is 2 more than"), else the sentence's last number. Thousands separators
    are dropped. Why not simply the last number: explanations often trail the result ("7 * 6 = 42,
    which is the result of 6 multiplied by 7.", "She has 6 apples left after giving 2 away.").
    """
    for sentence in reversed(_SENTENCE_END.split(text)):
        numbers = _NUMBER.findall(sentence)
        if not numbers:
            continue
        tails = [sentence[m.end():] for m in _CONNECTIVE.finditer(sentence)]
        tail = next((t for t in reversed(tails) if _NUMBER.search(t)), None)
        if tail is not None:
            sentence, numbers = tail, _NUMBER.findall(tail)
        equals = _EQUALS_NUMBER.findall(sentence)
        verb = _RESULT_VERB_NUMBER.search(sentence)
        pick = equals[-1] if equals else verb.group(1) if verb else numbers[-1]
        return _THOUSANDS.sub("", pick).replace(" ", "")
    return None


_ENDS_IN_NUMBER = re.compile(_NUM + r"[\s.!)*$}\]\"'’”]*$")


def ends_in_number(text: str) -> bool:
    """True when the text's last word is a number (only punctuation, ``*``, ``$``, ``}`` may follow)."""
    return _ENDS_IN_NUMBER.search(text.rstrip()) is not None


def extract_answer(text: str, *, fallback: bool = True) -> str | None:
    """The final NUMBER-format answer of a completion: a marker answer, else (``fallback``) the
    conclusion number; None when there is none (never a guess without ``fallback``)."""
    answer = _marker_answer(text)
    if answer is None and fallback:
        answer = conclusion_number(text)
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


# an answer made of words only (letters, spaces, punctuation; no digit, no LaTeX): "Paris", "New York."
_WORDY = re.compile(r"^[^\W\d_]+(?:[\s'’\-.,!?;:\"]+[^\W\d_]+)*[\s'’.,!?;:\"]*$")
_NON_WORD = re.compile(r"[^\w]+")


def is_word_answer(s: str) -> bool:
    """True for an answer made of words only ("Paris", "the Eiffel Tower"), False for maths and numbers."""
    return _WORDY.match(_TEXT_CMD.sub(r"\1", s).strip()) is not None


def normalize_answer(s: str | None) -> str:
    """A canonical key for clustering: exact rationals as ``p/q`` (or ``p``), words lower-cased
    without punctuation, else squashed LaTeX.

    ``"1,234" -> "1234"``, ``"0.50" -> "1/2"``, ``"\\dfrac{1}{2}" -> "1/2"``,
    ``"\\text{ Tuesday }" -> "tuesday"``, ``"New York!" -> "new york"``.
    """
    if s is None:
        return ""
    t = _clean(s)
    t = _TEXT_CMD.sub(r"\1", t)
    if is_word_answer(t):
        return _NON_WORD.sub(" ", t).strip().lower()
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
    if is_word_answer(a) and is_word_answer(b):
        return False  # words are equal by their keys only (see the module docstring)
    fa, fb = _as_fraction(na), _as_fraction(nb)
    if fa is not None and fb is not None:
        return fa == fb
    return _math_verify_equal(_clean(a), _clean(b))


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
