"""The shipped multiple-choice set (eval/choice.py) and letter grading (eval/grading.py)."""

from __future__ import annotations

import json

import pytest

from eval import choice
from eval import datasets as D
from eval.grading import grade_row

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?\nA) 6\nB) 7\nC) 8\nD) 12\n" + choice.INSTRUCTION


def test_distractor_pool_by_hand():
    # integer 4: 4-3..4+3 without 4, 14, -6 (dropped), 2*4 = 8 (already there), 4 // 2 = 2 (already there)
    assert choice.distractor_pool(4.0) == [1, 2, 3, 5, 6, 7, 8, 14]
    # integer 0: 1, 2, 3, 10 (negatives dropped; 2*0 and 0//2 are 0 itself)
    assert choice.distractor_pool(0.0) == [1, 2, 3, 10]
    # decimal 1.25: 0.25, 0.75, 1.75, 2.25, 2.5, 0.625
    assert choice.distractor_pool(1.25) == [0.25, 0.625, 0.75, 1.75, 2.25, 2.5]


def test_rows_are_deterministic_and_the_gold_letter_holds_the_answer():
    rows = [{"input": "Q1?", "target": 14.0}, {"input": "Q2?", "target": 1.25}, {"input": "Q3?", "target": 0.0}]
    built = choice.build_rows(rows)
    assert built == choice.build_rows(rows)  # same seed, same file
    for row, src in zip(built, rows):
        options = dict(line.split(") ", 1) for line in row["question"].splitlines()[1:5])
        assert list(options) == ["A", "B", "C", "D"] and len(set(options.values())) == 4
        assert options[row["answer"]] == choice.fmt(src["target"]) == row["value"]
        assert row["question"].endswith(choice.INSTRUCTION)


def test_shipped_file_is_what_the_script_makes_and_loads_by_name():
    shipped = choice.SHIPPED[choice.NAME]
    rows = [json.loads(line) for line in shipped.read_text().splitlines()]
    data = D.default_data_dir() / choice.SOURCE
    if data.exists():
        from cat_serve.files import read_jsonl

        assert rows == choice.build_rows(read_jsonl(data))
    items = D.load_dataset(choice.NAME)
    assert len(items) == len(rows) == 562
    assert items[0].id == "singleop_choice-0" and items[0].gold in "ABCD" and "\nA) " in items[0].question


@pytest.mark.parametrize(("content", "extracted", "correct"), [
    ("3 + 4 = 7, so the answer is B.", "B", True),
    ("\\boxed{B}", "B", True),
    ("The answer is (C) 8.", "C", False),
    ("3 + 4 = 7", "B", True),  # no letter: the conclusion number is option B's value
    ("He has 3 + 4 = 7 apples.\n\\boxed{7}", "B", True),  # a boxed option value
    ("I think a better answer needs more apples.", None, False),  # "a" is no letter
])
def test_letter_golds_are_graded_as_letters(content, extracted, correct):
    response = {"choices": [{"message": {"content": content}, "finish_reason": "stop"}]}
    row = grade_row(response, "B", QUESTION)
    assert row["extracted"] == extracted and row["correct"] is correct


def test_number_golds_grade_as_before():
    response = {"choices": [{"message": {"content": "So, 7 * 6 = 42, which is 6 times 7."}, "finish_reason": "stop"}]}
    row = grade_row(response, "42")
    assert row["extracted"] == "42" and row["correct"] is True
