"""Answer formats: what a completion's final answer is, when it is not (only) a number.

Every search reads its paths' answers through one :class:`AnswerReader`, built from the search
params (``answer_format``, ``reasoning_start``/``reasoning_end``) and the prompt's text.

Reasoning blocks. A path's answer is read only from its CONTENT: the text after the reasoning block
``<think> ... </think>`` (markers configurable). A path may begin inside the block, when the chat
template put ``<think>`` at the end of the prompt (the decoded prompt's last start marker comes after
its last end marker); a path without any end marker then has no content, hence no answer. An end
marker with no start marker before it also ends a block that began before the path.

``answer_format`` (search param; a calibration profile may set it as a default):

* ``number``: an explicit marker (``\\boxed{}``, ``#### x``, "the answer is x", "Answer: x") as
  ``answers.extract_answer`` reads it, else the conclusion number (``answers.conclusion_number``).
* ``choice``: a multiple-choice letter A-J: a marker whose text starts with a letter ("B", "(B)",
  "B) apple", "**B**", ``"B" (carrot)``) or states an option's text (the options are parsed from
  the question: lines "A) ...", "(B) ...", "C. ..."); without a marker, a line that IS a letter
  ("B", "B) apple"), "option B" / "choice B" / "answer: B", "(B)", else the conclusion number when
  it is an option's value ("3 + 4 = 7" with "B) 7"). Letters are upper case only, so "I think a
  better answer" is not "a". With options in the question, only their letters count.
* ``text``: a marker's short phrase (at most 8 words, cut at the first sentence end: "Answer:
  Paris." -> "Paris"), yes/no as ``yes``/``no``; without a marker, a one-line content of at most 8
  words, or "Yes"/"No" opening the content of a yes/no question. Compared case- and
  punctuation-insensitively (``answers.normalize_answer``).
* ``none``: never an answer; every strategy returns its best path by path score.
* ``auto`` (default) decides per path, in this order:
    1. a marker: when the question lists options, only an option's letter (the text opens with
       one, or states an option's text or value, "x = 20" included); otherwise a letter when the
       text opens with one ("B", "B) apple"), else yes/no, else a number/LaTeX when it holds a digit
       or a backslash, else a short phrase (the ``text`` rule); a marker whose text is none of
       these (prose) does not count;
    2. no (usable) marker, and the question lists options: the unmarked ``choice`` rules, and
       nothing else (an answer to a multiple-choice question is a letter);
    3. a yes/no question (its last question sentence opens with is/are/does/can/...; or it says
       "yes or no"): "Yes"/"No" opening the content;
    4. the number fallback (conclusion number), ONLY when the question asks for a number (see
       :meth:`Question.parse`) or the path's content ends in a number;
    5. otherwise no answer: prose numbers never become votes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from cat_serve.search import answers

AUTO, NUMBER, CHOICE, TEXT, NONE = "auto", "number", "choice", "text", "none"
ANSWER_FORMATS = (AUTO, NUMBER, CHOICE, TEXT, NONE)
MAX_PHRASE_WORDS = 8
LETTERS = "ABCDEFGHIJ"

# ---- the question --------------------------------------------------------------------------------
_ASKS_NUMBER = re.compile(
    r"\bhow\s+(?:many|much|far|long|old|tall|big|large|fast|often|heavy)\b"
    r"|\bwhat\s+(?:number|percent(?:age)?)\b"
    r"|\b(?:calculate|compute|evaluate|solve|simplify|sum|product|difference|quotient|remainder|average|"
    r"percent(?:age)?|probability|ratio)\b"
    r"|\d\s*[+*/×÷^]\s*\d|\d\s+-\s+\d|\d\s*[x×]\s*\d"  # 7*6, 3 - 2, 7x6 (not a date 2024-06)
    r"|\d\s+(?:plus|minus|times|divided\s+by|multiplied\s+by)\s+\d"
    r"|\\boxed|####",
    re.IGNORECASE,
)
_OPTION_LINE = re.compile(r"^[ \t*]*[(\[]?([A-J])[)\].:][ \t]+(\S[^\n]*)$", re.MULTILINE)
_OPTION_INLINE = re.compile(r"(?:^|\s)[(\[]([A-J])[)\]][ \t]*([^()\[\]\n]+?)(?=\s+[(\[][A-J][)\]]|\n|$)")
_QUESTION_SENTENCE = re.compile(r"[^.!?\n]*\?")
_AUXILIARY = re.compile(
    r"^\W*(?:is|are|am|was|were|do|does|did|can|could|will|would|should|shall|has|have|had|may|might|must)\b",
    re.IGNORECASE,
)
_YES_OR_NO = re.compile(r"\byes\s+or\s+no\b", re.IGNORECASE)


def _consecutive_options(found: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Options A, B, C... in order (at least two, starting at A); the last list in the text wins."""
    best: dict[str, str] = {}
    current: dict[str, str] = {}
    for letter, text in found:
        if letter == "A":
            current = {"A": text.strip()}
        elif current and letter == LETTERS[len(current)]:
            current[letter] = text.strip()
        else:
            continue
        if len(current) >= 2:
            best = dict(current)
    return best


@dataclass(frozen=True)
class Question:
    """What a prompt asks for, as far as answer reading cares."""

    asks_number: bool = False
    options: dict[str, str] = field(default_factory=dict)  # letter -> option text; {} if none
    yes_no: bool = False

    @classmethod
    def parse(cls, text: str) -> Question:
        """Read the cues of a question (the user's message, or the decoded prompt).

        * asks for a number: "how many/much/far/long/old/...", "what number/percentage", a maths verb
          or noun (calculate, compute, solve, sum, product, average, probability...), an arithmetic
          expression ("7*6", "3 - 2", "7 times 6"), or a request for ``\\boxed{}`` / ``####``;
        * options: lines "A) ...", "(B) ...", "C. ...", "D: ..." or inline "(A) x (B) y", letters in
          order from A, at least two;
        * yes/no: the last sentence ending in "?" opens with an auxiliary verb (is, are, does, can...),
          or the text says "yes or no".
        """
        options = _consecutive_options(_OPTION_LINE.findall(text)) or _consecutive_options(
            _OPTION_INLINE.findall(text))
        questions = _QUESTION_SENTENCE.findall(text)
        yes_no = bool(_YES_OR_NO.search(text)) or bool(questions and _AUXILIARY.match(questions[-1].strip()))
        return cls(asks_number=bool(_ASKS_NUMBER.search(text)), options=options, yes_no=yes_no)


# ---- reasoning blocks ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Reasoning:
    """The markers of a reasoning block; an empty ``end`` turns reasoning handling off."""

    start: str = "<think>"
    end: str = "</think>"

    def split(self, text: str, inside: bool = False) -> tuple[str, str, bool]:
        """``(reasoning, content, inside_after)`` of ``text``, which begins inside a block iff ``inside``."""
        if not self.end:
            return "", text, False
        reasoning, content, pos = [], [], 0
        while pos < len(text):
            end = text.find(self.end, pos)
            start = text.find(self.start, pos) if self.start else -1
            if not inside and start >= 0 and (end < 0 or start < end):
                content.append(text[pos:start])
                pos, inside = start + len(self.start), True
            elif end >= 0:  # inside, or a stray end marker: a block opened before this text
                reasoning.append(text[pos:end])
                pos, inside = end + len(self.end), False
            else:
                (reasoning if inside else content).append(text[pos:])
                break
        return "".join(reasoning), "".join(content), inside

    def prompt_ends_inside(self, prompt_text: str) -> bool:
        """True when the prompt opened a block it did not close (a template that adds ``<think>``)."""
        if not self.end or not self.start:
            return False
        return prompt_text.rfind(self.start) > prompt_text.rfind(self.end)


# ---- classifying one answer text -----------------------------------------------------------------
_WRAP_OPEN = "\\s*\"'“‘`"
_LETTER_HEAD = re.compile(
    r"^[" + _WRAP_OPEN + r"]*[(\[]?([A-J])[)\]]?(?=$|[)\].:,;\"'”’*`]|\s+[-–—(]|\s*$)"
)
_YES_NO = re.compile(r"^[\s*\"'“‘`]*(yes|no)\b(?!['’]t)", re.IGNORECASE)
_PHRASE_END = re.compile(r"(?<!\d)[.!?;](?=\s|$)|\n")
_PHRASE_STRIP = " \t*\"'“”‘’`_"
_UNMARKED_CHOICE = re.compile(r"\b(?i:option|choice|answer)\s*(?i:is\s*)?:?\s*[(\[]?([A-J])\b")
_PAREN_LETTER = re.compile(r"(?<![A-Za-z])\(([A-J])\)")


def choice_letter(text: str, options: dict[str, str] | None = None) -> str | None:
    """The letter a text opens with ("B", "(B)", "B) apple", "**B**", ``"B" (carrot)``), or None."""
    m = _LETTER_HEAD.match(answers._TEXT_CMD.sub(r"\1", text).strip())
    if m is None or (options and m.group(1) not in options):
        return None
    return m.group(1)


def yes_no(text: str) -> str | None:
    """``yes``/``no`` when the text opens with that word ("No, because..."), else None."""
    m = _YES_NO.match(text)
    return m.group(1).lower() if m else None


def short_phrase(text: str) -> str | None:
    """The first sentence of ``text`` when it is a short phrase (1-8 words), cleaned, else None."""
    t = answers._TEXT_CMD.sub(r"\1", text).strip(_PHRASE_STRIP)
    cut = _PHRASE_END.search(t)
    t = (t[:cut.start()] if cut else t).strip(_PHRASE_STRIP).rstrip(".,;:!?").strip(_PHRASE_STRIP)
    words = t.split()
    if not words or len(words) > MAX_PHRASE_WORDS or not any(ch.isalnum() for ch in t):
        return None
    return t


def looks_mathematical(text: str) -> bool:
    return any(ch.isdigit() for ch in text) or "\\" in text


def option_letter(text: str, options: dict[str, str]) -> str | None:
    """The letter of the option whose text the answer states ("14" or "apple" for "B) 14"/"B) apple")."""
    phrase = short_phrase(text)
    number = answers.leading_number(text)
    for letter, option in options.items():
        if phrase is not None and answers.answers_equivalent(short_phrase(option) or option, phrase):
            return letter
        if looks_mathematical(option) and answers.answers_equivalent(option, number):
            return letter
    return None


# ---- the reader ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnswerReader:
    """Reads final answers of one search's paths (see the module docstring)."""

    answer_format: str = AUTO
    question: Question = field(default_factory=Question)
    reasoning: Reasoning = field(default_factory=Reasoning)
    starts_in_reasoning: bool = False

    @classmethod
    def for_search(cls, params, prompt_text: str, question: str | None = None) -> AnswerReader:
        """The reader of a search: ``params`` give the format and markers, ``prompt_text`` (the decoded
        prompt) whether paths begin inside a reasoning block, ``question`` (default: the prompt text)
        the cues of :meth:`Question.parse`."""
        reasoning = Reasoning(getattr(params, "reasoning_start", "<think>"), getattr(params, "reasoning_end", "</think>"))
        return cls(answer_format=getattr(params, "answer_format", AUTO),
                   question=Question.parse(prompt_text if question is None else question),
                   reasoning=reasoning, starts_in_reasoning=reasoning.prompt_ends_inside(prompt_text))

    def content(self, text: str) -> str:
        """The part of a whole path's text after its reasoning block(s)."""
        return self.reasoning.split(text, self.starts_in_reasoning)[1]

    def thinking(self, text: str) -> str:
        """The reasoning part of a whole path's text."""
        return self.reasoning.split(text, self.starts_in_reasoning)[0]

    def read(self, text: str) -> str | None:
        """The final answer of a whole path's text, or None."""
        if self.answer_format == NONE:
            return None
        content = self.content(text)
        return self.marked(content) or self.unmarked(content)

    def marked(self, content: str) -> str | None:
        """The answer behind an explicit marker in ``content`` (CaT's "this step holds an answer")."""
        fmt, options = self.answer_format, self.question.options
        if fmt == NONE:
            return None
        if fmt == NUMBER:
            return answers.extract_answer(content, fallback=False)
        text = answers.marker_text(content)
        if text is None:
            return None
        if fmt == CHOICE:
            return choice_letter(text, options) or (option_letter(text, options) if options else None)
        if fmt == TEXT:
            return yes_no(text) or short_phrase(text)
        if options:  # auto, a multiple-choice question: only an option's letter is an answer
            number = answers.conclusion_number(text)
            return (choice_letter(text, options) or option_letter(text, options)
                    or (option_letter(number, options) if number is not None else None))
        letter = choice_letter(text)  # auto
        if letter is not None:
            return letter
        if yes_no(text):
            return yes_no(text)
        if looks_mathematical(text):
            return answers.extract_answer(content, fallback=False)
        return short_phrase(text)

    def unmarked(self, content: str) -> str | None:
        """The answer of a content without a (usable) marker."""
        fmt, q = self.answer_format, self.question
        if fmt == NUMBER:
            return answers.conclusion_number(content)
        if fmt == CHOICE:
            return self._unmarked_choice(content)
        if fmt == TEXT:
            if q.yes_no and yes_no(content):
                return yes_no(content)
            lines = [ln for ln in content.strip().splitlines() if ln.strip()]
            return short_phrase(lines[0]) if len(lines) == 1 else None
        if fmt == AUTO:
            if q.options:
                return self._unmarked_choice(content)
            if q.yes_no and yes_no(content):
                return yes_no(content)
            if q.asks_number or answers.ends_in_number(content):
                return answers.conclusion_number(content)
        return None

    def _unmarked_choice(self, content: str) -> str | None:
        options = self.question.options
        lines = [ln for ln in content.strip().splitlines() if ln.strip()]
        for line in (lines[-1:] + lines[:1]) if lines else []:
            letter = choice_letter(line, options)
            if letter is not None:
                return letter
        for pattern in (_UNMARKED_CHOICE, _PAREN_LETTER):
            found = [x for x in pattern.findall(content) if not options or x in options]
            if found:
                return found[-1]
        number = answers.conclusion_number(content) if options else None
        return option_letter(number, options) if number is not None else None


def split_reasoning(text: str, params, prompt_text: str) -> tuple[str, str]:
    """``(reasoning, content)`` of a returned path's text, split as its answer was read: what the API
    edge returns as ``reasoning_content`` and ``content`` when a search ran on a reasoning model."""
    reader = AnswerReader.for_search(params, prompt_text)
    reasoning, content, _ = reader.reasoning.split(text, reader.starts_in_reasoning)
    return reasoning, content


# ---- grading against a gold answer ---------------------------------------------------------------
def gold_format(gold: str) -> str:
    """How to read a completion graded against ``gold``: ``choice`` for a letter ("B", "(C)",
    "\\text{(C)}"), ``text`` for words ("Paris", "yes"), else ``number`` (numbers and LaTeX)."""
    reference = answers._marker_answer(gold) or answers._clean(gold)
    if len(answers._TEXT_CMD.sub(r"\1", reference).strip("()[]*. ")) == 1 and choice_letter(reference):
        return CHOICE
    return TEXT if answers.is_word_answer(reference) else NUMBER


def read_for_gold(text: str, gold: str, question: str = "") -> tuple[str, str | None]:
    """``(reference, answer)``: the gold's answer and the completion's, read in the gold's format."""
    reference = answers._marker_answer(gold) or answers._clean(gold)
    fmt = gold_format(gold)
    if fmt == NUMBER:
        return reference, answers.extract_answer(text)
    if fmt == CHOICE:
        reference = choice_letter(reference) or reference
    reader = AnswerReader(answer_format=fmt, question=Question.parse(question), reasoning=Reasoning())
    return reference, reader.read(text)


def grade(completion_text: str, gold: str, question: str = "") -> bool:
    """True iff the completion's final answer equals ``gold`` (a plain answer or a GSM8K ``#### x`` string).

    The gold decides how the completion is read (``formats.gold_format``): a letter gold ("B",
    "(C)") reads a multiple-choice letter, a word gold ("Paris", "yes") a short phrase or yes/no, any
    other gold a number or LaTeX (markers, then the conclusion number). ``question`` (optional) lets
    a multiple-choice completion that states an option's text count as that option's letter.
    """
    reference, answer = read_for_gold(completion_text, gold, question)
    return answers.answers_equivalent(reference, answer)
