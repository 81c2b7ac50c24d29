"""lab.recheck.compare on hand-made greedy rows."""

from lab.recheck import compare


def test_compare_counts_items_in_both_runs():
    old = [{"id": "a", "output": "1 + 1 = 2\n#### 2", "correct": True, "tokens": 10},
           {"id": "b", "output": "#### 3", "correct": False, "tokens": 4},
           {"id": "c", "output": "#### 5", "correct": True, "tokens": 4},
           {"id": "gone", "output": "x", "correct": True, "tokens": 1}]
    new = [{"id": "a", "output": "1 + 1 = 2\n#### 2", "correct": True, "tokens": 10},
           {"id": "b", "output": "#### 4", "correct": False, "tokens": 6},  # other output, same verdict
           {"id": "c", "output": "#### 6", "correct": False, "tokens": 8}]
    got = compare(old, new)
    assert got["n"] == 3
    assert got["accuracy_then"] == 2 / 3 and got["accuracy_now"] == 1 / 3
    assert got["same_output"] == 1 / 3 and got["same_correctness"] == 2 / 3
    assert got["tokens_then"] == 6 and got["tokens_now"] == 8
    assert compare(old, []) == {"n": 0}
