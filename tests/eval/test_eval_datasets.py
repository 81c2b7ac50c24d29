"""Dataset registry on the real shared files and on user JSONL; deterministic subsets."""

import json

import pytest

from cat_serve import files as F
from eval import datasets as D

# Rows as parsed. The shared README lists `wc -l` counts: multiarith 599 and singleop 561, but
# those two files lack a final newline, so they hold 600 and 562 JSON rows.
EXPECTED_ROWS = {"gsm8k": 1319, "math500": 500, "multiarith": 600, "singleop": 562,
                 "aime24": 30, "amc23": 40}


@pytest.fixture(scope="module")
def data_dir():
    d = D.default_data_dir()
    if not (d / "gsm8k_test.jsonl").exists():
        pytest.skip(f"shared data not found at {d}")
    return d


@pytest.mark.parametrize("name,rows", sorted(EXPECTED_ROWS.items()))
def test_builtin_row_counts(data_dir, name, rows):
    items = D.load_dataset(name, data_dir=data_dir)
    assert len(items) == rows
    assert len({it.id for it in items}) == rows
    assert all(it.question.strip() and it.gold.strip() for it in items)


def test_builtin_golds(data_dir):
    gsm = D.load_dataset("gsm8k", data_dir=data_dir)
    assert gsm[0].gold == "18" and gsm[0].question.startswith("Janet")  # "#### 18"
    assert "," not in "".join(it.gold for it in gsm)  # "#### 2,125" -> "2125"
    assert D.load_dataset("singleop", data_dir=data_dir)[0].gold == "14"  # 14.0
    assert D.load_dataset("singleop", data_dir=data_dir)[-1].gold == "7.5"
    assert D.load_dataset("amc23", data_dir=data_dir)[0].gold == "27"  # 27.0
    assert D.load_dataset("aime24", data_dir=data_dir)[0].id == "60"
    math500 = D.load_dataset("math500", data_dir=data_dir)
    assert math500[0].id == "test/precalculus/807.json" and "\\pi" in math500[0].gold


def test_env_var_sets_data_dir(tmp_path, monkeypatch):
    (tmp_path / "singleop_test.jsonl").write_text('{"input": "1+1?", "target": 2.0}\n')
    monkeypatch.setenv(F.DATA_ENV, str(tmp_path))
    assert D.default_data_dir() == tmp_path
    assert D.load_dataset("singleop") == [D.Item("singleop-0", "1+1?", "2")]


def test_gsm8k_gold():
    assert D.gsm8k_gold("a <<1+1=2>>2\nb\n#### 1,450,000") == "1450000"
    assert D.gsm8k_gold("#### -3") == "-3"


def test_user_jsonl(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"q": "What is 2+3?", "a": 5, "key": "x1"}, {"q": "What is 7*6?", "a": "42", "key": "x2"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")  # blank line ignored
    items = D.load_dataset(str(path), question_field="q", answer_field="a", id_field="key")
    assert items == [D.Item("x1", "What is 2+3?", "5"), D.Item("x2", "What is 7*6?", "42")]
    # without an id field: <stem>-<index>; default fields question/answer
    path2 = tmp_path / "plain.jsonl"
    path2.write_text('{"question": "q0", "answer": 1.5}')
    assert D.load_dataset(str(path2)) == [D.Item("plain-0", "q0", "1.5")]


def test_user_jsonl_errors(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q"}\n')
    with pytest.raises(KeyError, match="answer"):
        D.load_dataset(str(path))
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"question": "a", "answer": 1, "id": 1}\n{"question": "b", "answer": 2, "id": 1}\n')
    with pytest.raises(ValueError, match="unique"):
        D.load_dataset(str(dup), id_field="id")
    with pytest.raises(FileNotFoundError):
        D.load_dataset("no-such-dataset")


def test_deterministic_subset(data_dir):
    a = D.load_dataset("gsm8k", limit=10, seed=7, data_dir=data_dir)
    b = D.load_dataset("gsm8k", limit=10, seed=7, data_dir=data_dir)
    c = D.load_dataset("gsm8k", limit=10, seed=8, data_dir=data_dir)
    assert a == b and len(a) == 10
    assert a != c
    # a larger limit extends a smaller one (same shuffle), so resumed runs can grow
    assert D.load_dataset("gsm8k", limit=25, seed=7, data_dir=data_dir)[:10] == a
    assert D.load_dataset("aime24", limit=100, seed=0, data_dir=data_dir).__len__() == 30
    assert D.load_dataset("aime24", limit=0, data_dir=data_dir) == []


def test_select_subset_no_limit_keeps_order():
    items = [D.Item(str(i), "q", "1") for i in range(5)]
    assert D.select_subset(items, limit=None, seed=3) == items
    assert sorted(D.select_subset(items, limit=5, seed=3), key=lambda it: it.id) == items
