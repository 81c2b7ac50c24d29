"""Answer extraction, normalisation, math-verify equivalence and grading."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cat_serve.search.answers import (
    answers_equivalent,
    cluster_answers,
    extract_answer,
    has_final_answer,
    normalize_answer,
)
from cat_serve.search.formats import grade


@pytest.mark.parametrize(("text", "answer", "marker"), [
    ("so \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}", True),  # balanced braces
    ("first \\boxed{3}, then \\boxed{4}", "4", True),  # the last box
    ("The answer is 42.", "42", True),
    ("the final answer is $1,234$.", "1234", True),
    ("Answer: 42 apples", "42", True),
    ("**Final Answer:** 12", "12", True),
    ("To find the answer: add 3 and 4", "4", False),  # "answer:" mid-sentence is no marker
    ("Natalia sold 48 clips.\n#### 1,234", "1234", True),
    ("The answer is $\\boxed{5}$", "5", True),
    ("we get 3 and then 17.5.", "17.5", False),  # last-number fallback
    ("a total of -2,500 dollars", "-2500", False),
    ("no number here", None, False),
])
def test_extract_answer(text, answer, marker):
    assert extract_answer(text) == answer
    assert has_final_answer(text) is marker
    assert extract_answer(text, fallback=False) == (answer if marker else None)


def test_normalize_answer_keys():
    assert normalize_answer("0.50") == normalize_answer("1/2") == normalize_answer("\\dfrac{1}{2}") == "1/2"
    assert normalize_answer("$1,234$.") == "1234"
    assert normalize_answer("\\text{ Tuesday }") == "tuesday"
    assert normalize_answer(None) == ""


@pytest.mark.parametrize(("a", "b", "same"), [
    ("1/2", "0.5", True),
    ("\\frac{1}{2}", "0.5", True),
    ("\\frac{1}{2}", "1/2", True),
    ("\\frac{\\pi}{2}", "\\pi/2", True),  # math-verify
    ("3\\sqrt{2}", "\\sqrt{18}", True),  # math-verify
    ("3", "4", False),
    ("3", None, False),
    ("", "", False),
    ("\\frac{1}{", "}}", False),  # unparsable: False, never an exception
])
def test_answers_equivalent(a, b, same):
    assert answers_equivalent(a, b) is same


def test_equivalence_works_off_the_main_thread():
    # math-verify's signal.alarm timeouts would raise here; they are disabled outside the main thread
    out = []
    worker = threading.Thread(target=lambda: out.append(answers_equivalent("\\frac{\\pi}{3}", "\\pi/3")))
    worker.start()
    worker.join()
    assert out == [True]


def test_grade_with_gsm8k_and_plain_gold():
    assert grade("so the answer is 1234.", "She pays 1,000 + 234.\n#### 1,234")
    assert grade("\\boxed{1,234}", "1234")
    assert grade("\\boxed{0.5}", "\\frac{1}{2}")
    assert not grade("\\boxed{1235}", "#### 1,234")
    assert not grade("nothing", "#### 7")


def test_cluster_answers_merges_equivalent_keys_in_first_seen_order():
    assert cluster_answers(["0.5", "3", None, "1/2", "\\frac12", "3.0"]) == [[0, 3, 4], [1, 5]]


def test_search_core_imports_no_heavy_framework():
    code = (
        "import sys, importlib\n"
        "for m in ['cat_serve.search', 'cat_serve.search.types', 'cat_serve.search.generator',\n"
        "          'cat_serve.search.confidence', 'cat_serve.search.answers', 'cat_serve.search.params',\n"
        "          'cat_serve.search.registry', 'cat_serve.search.cat', 'cat_serve.search.self_consistency',\n"
        "          'cat_serve.search.perplexity', 'cat_serve.search.deepconf']:\n"
        "    importlib.import_module(m)\n"
        "from cat_serve.search.answers import answers_equivalent\n"
        "assert answers_equivalent('\\\\frac{\\\\pi}{2}', '\\\\pi/2')\n"
        "print(sorted(m for m in ('torch', 'vllm', 'fastapi', 'pydantic') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
