"""GSM8K parsing and exact arithmetic checks."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from cat_serve import files as F
from training import data as D

NATALIA = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                "How many clips did Natalia sell altogether in April and May?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
              "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
}


def test_split_steps_gold_and_notes():
    ex = D.parse_example(NATALIA["question"], NATALIA["answer"])
    assert ex.steps == ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.",
                        "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.")
    assert ex.gold == "72"
    assert ex.clean_steps[0] == "Natalia sold 48/2 = 24 clips in May."
    assert D.parse_calc_notes(ex.steps[1]) == [D.CalcNote("48+24", "72")]
    assert D.gold_answer("so\n#### 1,234") == "1234"
    with pytest.raises(ValueError):
        D.gold_answer("no final mark")


@pytest.mark.parametrize("expr,value", [
    ("48/2", Fraction(24)), ("(2+3)*4", Fraction(20)), ("12/60", Fraction(1, 5)), ("0.2*50", Fraction(10)),
    ("-3+1", Fraction(-2)), ("1,000*2", Fraction(2000)), ("3 x 4", Fraction(12)), ("6 ÷ 4 × 2", Fraction(3)),
    ("0.1+0.2", Fraction(3, 10)),  # exact, no float error
])
def test_safe_eval_exact(expr, value):
    assert D.safe_eval(expr) == value


@pytest.mark.parametrize("expr", ["2**3", "__import__('os')", "abs(-1)", "1/0", "a+1", "2//3", "3%2", ""])
def test_safe_eval_rejects_everything_else(expr):
    with pytest.raises(ValueError):
        D.safe_eval(expr)


def test_check_calc_notes():
    assert D.check_calc_notes("so <<48/2=24>>24 and <<24+1=25>>25") is True
    assert D.check_calc_notes("so <<2*3=7>>7") is False
    assert D.check_calc_notes("<<10/3=3.33>>3.33") is False  # rounded: not exact
    assert D.check_calc_notes("<<8*18=144.00>>144") is True
    assert D.check_calc_notes("<<2*3=6>> but <<2*3=7>>") is False
    assert D.check_calc_notes("no notes here") is None
    assert D.check_calc_notes("<<560//10=56>>") is None  # cannot check floor division


def test_check_step_arithmetic_inline_text():
    assert D.check_step_arithmetic("Working 50 minutes, she earned 0.2 x 50 = $10.") is True
    assert D.check_step_arithmetic("So 3 x 4 = 13 apples") is False
    assert D.check_step_arithmetic("She has 5 apples.") is None
    assert D.check_step_arithmetic("The answer = 5") is None  # restatement, not arithmetic
    assert D.step_results("Total: 12 + 3 = 15 apples, 15 * 2 = 30") == [Fraction(15), Fraction(30)]
    assert D.step_results("<<48/2=24>>24") == [Fraction(24)]


def test_load_gsm8k_from_explicit_path(tmp_path):
    path = tmp_path / "gsm8k_mini.jsonl"
    path.write_text(json.dumps(NATALIA) + "\n\n" + json.dumps(NATALIA) + "\n")
    rows = D.load_gsm8k(path)
    assert len(rows) == 2 and rows[0].gold == "72"
    assert len(D.load_gsm8k(path, limit=1)) == 1
    assert D.load_gsm8k(split="mini", data_dir=tmp_path)[0].steps[0].startswith("Natalia")
    assert D.load_gsm8k(path, max_solution_steps=1) == []  # NATALIA has 2 steps
    assert len(D.load_gsm8k(path, max_solution_steps=2)) == 2


def test_default_data_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv(F.DATA_ENV, str(tmp_path))
    assert D.default_data_dir() == tmp_path
    monkeypatch.delenv(F.DATA_ENV)
    assert D.default_data_dir() == F.REPO_ROOT.parent / "shared" / "data"


def test_shared_gsm8k_notes_check_out():
    path = D.gsm8k_path("test")
    if not path.exists():
        pytest.skip(f"{path} not present")
    rows = D.load_gsm8k(path, limit=200)
    checks = [D.check_calc_notes(s) for r in rows for s in r.steps]
    assert len(rows) == 200 and checks.count(False) == 0 and checks.count(True) > 300
