"""Answer formats (cat_serve/search/formats.py) and the conclusion number (answers.py): hand-written
completions with hand-written expected answers, including the texts that must NOT yield an answer."""

from __future__ import annotations

import pytest

from cat_serve.search.answers import (
    answers_equivalent,
    cluster_answers,
    conclusion_number,
    ends_in_number,
    extract_answer,
    normalize_answer,
)
from cat_serve.search.formats import grade
from cat_serve.search.formats import AnswerReader, Question, Reasoning, gold_format, read_for_gold, split_reasoning
from cat_serve.search.params import SelfConsistencyParams

MC = "Which one is a vegetable?\nA) apple\nB) carrot\nC) pear\nD) banana"
MC_NUM = "Tom has 3 apples and buys 4 more. How many apples does he have?\nA) 6\nB) 7\nC) 8\nD) 12"


def reader(fmt: str = "auto", question: str = "") -> AnswerReader:
    return AnswerReader(answer_format=fmt, question=Question.parse(question))


# ---- the conclusion number ------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "number"), [
    # the README's example: the literal last number is 7, the result is 42
    ("So, 7 * 6 = 42, which is the result of 6 multiplied by 7.", "42"),
    ("3 + 4 = 7 and 7 * 2 = 14.", "14"),  # the last "= N" of a chain
    ("The total is 14, which is 2 more than 12.", "14"),  # "is 2 more than" is no result
    ("She has 6 apples left after giving 2 away.", "6"),  # result verb "has"
    ("So, Megan has a total of 51 markers, which is a mix of her own 49 markers.", "51"),
    ("there are 25 cows and 12 pigs, so 37 animals", "37"),  # after the connective "so"
    ("we get 3 and then 17.5.", "17.5"),  # no "=", no result verb: the sentence's last number
    ("First 3 + 4 = 7.\nThen she buys 5 more, so she has 12 apples.", "12"),  # the LAST sentence with a number
    ("x = 3 / 4", "3/4"),
    ("a total of -2,500 dollars", "-2500"),
    ("no number here", None),
])
def test_conclusion_number(text, number):
    assert conclusion_number(text) == number


@pytest.mark.parametrize(("text", "ends"), [
    ("So 7 * 6 = 42.", True), ("the answer: **42**", True), ("$\\frac{1}{2}$ or 0.5", True),
    ("She has 12 apples.", False), ("Paris is the capital.", False), ("", False),
])
def test_ends_in_number(text, ends):
    assert ends_in_number(text) is ends


def test_number_format_keeps_markers_first():
    assert extract_answer("so 7 * 6 = 42, i.e. 6 times 7. The answer is 41.") == "41"  # a marker wins
    assert extract_answer("\\boxed{\\frac{1}{2}} and 3") == "\\frac{1}{2}"


# ---- the question ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("question", "asks_number"), [
    ("What is 7*6?", True), ("What is 7 times 6?", True), ("How many apples does Tom have?", True),
    ("Compute the sum of the digits.", True), ("Solve for x: 2x = 4. Put it in \\boxed{}.", True),
    ("What is the capital of France?", False), ("Write a two-line poem about the sea.", False),
    ("Summarise the release notes of 2024-06-01.", False),  # a date is no subtraction
])
def test_question_asks_for_a_number(question, asks_number):
    assert Question.parse(question).asks_number is asks_number


def test_question_options_and_yes_no():
    assert Question.parse(MC).options == {"A": "apple", "B": "carrot", "C": "pear", "D": "banana"}
    assert Question.parse("Pick one: (A) red (B) blue (C) green").options == {"A": "red", "B": "blue", "C": "green"}
    assert Question.parse("Plan A is fine. B is not.").options == {}  # no option list
    assert Question.parse("Is Paris the capital of France?").yes_no
    assert Question.parse("Paris is the capital. Answer yes or no.").yes_no
    assert not Question.parse("What is the capital of France?").yes_no


# ---- auto ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("question", "text", "answer"), [
    # multiple-choice letters
    (MC, "The answer is B) carrot", "B"),
    (MC, "The answer is \"B\" (in the correct case of \"carrot\") to the above question", "B"),
    (MC, "Answer: C", "C"),
    (MC, "B", "B"),
    (MC, "(B)", "B"),
    (MC, "Let me think.\nB) carrot", "B"),
    (MC, "Carrots grow in soil, so option B fits.", "B"),
    (MC, "The answer is carrot.", "B"),  # the marker states option B's text
    (MC_NUM, "3 + 4 = 7, so the answer is 7.", "B"),  # a number equal to option B
    (MC, "The answer is E", None),  # not one of the options
    (MC_NUM, "The answer is: 3 + 4 = 7 apples", "B"),  # a marked equation whose result is option B
    (MC_NUM, "The answer is: 3 + 5 = 9", None),  # 9 is no option
    (MC_NUM, "So he has 3 + 5 = 9 apples.", None),  # a multiple-choice answer is a letter, not 9
    (MC, "I think a better answer would be to eat more greens.", None),  # "a" is no choice
    (MC, "A dog would not eat any of them.", None),  # "A" opening a sentence is no choice
    # yes / no
    ("Is Paris the capital of France?", "Yes, it is.", "yes"),
    ("Is Paris the capital of France?", "No. Lyon is.", "no"),
    ("Does it rain?", "Nothing certain about it.", None),  # "Nothing" is not "no"
    ("Write a poem.", "No problem! Here is a poem.", None),  # not a yes/no question
    ("Tell me about Paris.", "The answer is yes.", "yes"),  # a marker says yes
    # short phrases after a marker
    ("What is the capital of France?", "Answer: Paris", "Paris"),
    ("What is the capital of France?", "The answer is Paris.", "Paris"),
    ("What is the capital of France?", "The final answer is **Paris**. It is also the largest city.", "Paris"),
    ("What is the capital of France?", "The answer is that France, a large country in Europe, has "
     "many beautiful and historic cities to visit", None),  # prose, not a short phrase
    # numbers: only when the question asks for one or the path ends in one
    ("What is 7*6?", "So, 7 * 6 = 42, which is the result of 6 multiplied by 7.", "42"),
    ("How many apples?", "She has 12 apples now.", "12"),
    ("What is the capital of France?", "The capital of France is Paris. It has 20 districts and "
     "about 2,100,000 people.", None),  # prose numbers are no votes
    ("What is the capital of France?", "Paris. Its population was 17 in a joke I read.", None),
    ("Tell me something.", "The result is 42", "42"),  # the path ends in a number
    ("Write a two-line poem about the sea.", "Waves roll in at dawn,\nthe tide sings on and on.", None),
])
def test_auto_reads(question, text, answer):
    assert reader("auto", question).read(text) == answer


# ---- explicit formats ------------------------------------------------------------------------------
def test_number_format_always_falls_back_to_the_conclusion_number():
    text = "The capital of France is Paris. It has 20 districts."
    assert reader("number", "What is the capital of France?").read(text) == "20"
    assert reader("auto", "What is the capital of France?").read(text) is None


def test_choice_format_reads_letters_only():
    r = reader("choice", MC)
    assert r.read("The answer is (D)") == "D"
    assert r.read("answer: b") is None  # lower case is no letter
    assert r.read("The answer is 42") is None
    assert reader("choice").read("Option C.") == "C"  # no options in the question: any letter A-J


def test_text_format_reads_short_phrases():
    r = reader("text", "Name the largest planet.")
    assert r.read("Jupiter.") == "Jupiter"  # a one-line content is the phrase
    assert r.read("Answer: Jupiter!") == "Jupiter"
    assert r.read("It is big.\nIt is Jupiter.") is None  # two lines without a marker
    assert reader("text", "Is it big?").read("Yes, very.") == "yes"


def test_none_format_never_answers():
    assert reader("none", "What is 7*6?").read("The answer is \\boxed{42}") is None
    assert reader("none").marked("The answer is 42") is None


# ---- comparison ------------------------------------------------------------------------------------
def test_phrases_compare_case_and_punctuation_insensitively():
    assert normalize_answer("New York!") == normalize_answer("new york") == "new york"
    assert answers_equivalent("Paris", "paris.")
    assert answers_equivalent("St. Louis", "St Louis")
    # math-verify would read both as the product of their letters; words are compared as words
    assert not answers_equivalent("paris", "sirap")
    assert cluster_answers(["Paris", "B", "paris", "b", None, "Lyon"]) == [[0, 2], [1, 3], [5]]


# ---- reasoning blocks ------------------------------------------------------------------------------
def test_answers_are_read_after_the_reasoning_block():
    r = reader("auto", "What is 7*6?")
    assert r.read("<think>\nMaybe the answer is 41.\n\n7*6 = 42.\n</think>\n\nThe answer is 42.") == "42"
    assert r.read("<think>\nthe answer is 41, I think\n</think>\n\n") is None  # no content, no answer
    assert r.read("<think>\n7 * 6 = 42, so the answer is 42") is None  # still thinking: truncated
    # the template put <think> in the prompt: the path starts inside the block
    inside = AnswerReader(question=Question.parse("What is 7*6?"), starts_in_reasoning=True)
    assert inside.read("7*6 = 41? No: 42.") is None
    assert inside.read("7*6 = 41? No: 42.\n</think>\nThe answer is 42.") == "42"


def test_reasoning_split_and_custom_markers():
    assert Reasoning().split("a<think>b</think>c") == ("b", "ac", False)
    assert Reasoning().split("b</think>c") == ("b", "c", False)  # a block opened before the text
    assert Reasoning().split("x<think>y") == ("y", "x", True)
    assert Reasoning().split("y", inside=True) == ("y", "", True)
    assert Reasoning("[R]", "[/R]").split("[R]plan[/R]Answer: 5") == ("plan", "Answer: 5", False)
    assert Reasoning(end="").split("<think>a</think>b") == ("", "<think>a</think>b", False)  # off
    assert Reasoning().prompt_ends_inside("<user>Q<assistant><think>\n")
    assert not Reasoning().prompt_ends_inside("<user>Q<assistant><think></think>")


def test_split_reasoning_for_the_api_edge():
    params = SelfConsistencyParams.from_dict(None)
    assert split_reasoning("<think>7*6</think>\n42", params, "<user>Q<assistant>") == ("7*6", "\n42")
    assert split_reasoning("7*6</think>42", params, "<user>Q<assistant><think>") == ("7*6", "42")
    assert split_reasoning("7*6 thinking", params, "<user>Q<assistant><think>") == ("7*6 thinking", "")
    off = SelfConsistencyParams.from_dict({"reasoning_end": ""})
    assert split_reasoning("<think>a</think>b", off, "") == ("", "<think>a</think>b")


# ---- grading against a gold ------------------------------------------------------------------------
def test_grading_reads_the_completion_in_the_gold_format():
    assert gold_format("B") == "choice" and gold_format("\\text{(C)}") == "choice"
    assert gold_format("Paris") == "text" and gold_format("14") == "number" and gold_format("x^2") == "number"
    assert grade("The answer is (B).", "B") and not grade("The answer is (C).", "B")
    assert grade("\\boxed{B}", "B")
    assert grade("\\boxed{\\text{(C)}}", "\\text{(C)}")
    assert not grade("\\boxed{7}", "B")  # a number is no letter without the question ...
    assert grade("\\boxed{7}", "B", MC_NUM)  # ... but is option B's text with it
    assert read_for_gold("so the answer is 7", "B", MC_NUM) == ("B", "B")
    assert grade("Answer: paris.", "Paris")
    # numbers as before, plus the conclusion number
    assert grade("So, 7 * 6 = 42, which is the result of 6 multiplied by 7.", "42")
