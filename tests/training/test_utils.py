"""AUROC (the one in eval.metrics, as the trainer logs it), config wiring and atomic checkpoint helpers."""

from __future__ import annotations

import pytest

from eval.metrics import auroc
from training.checkpoint import _swap_into_place
from training.config import RLArgs, field_help


def test_auroc_by_hand():
    # positives 0.9, 0.4; negatives 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1) -> 3/4
    assert auroc([0.9, 0.5, 0.4, 0.1], [True, False, True, False]) == 0.75
    assert auroc([0.5, 0.5], [True, False]) == 0.5  # tie counts 1/2
    assert auroc([1.0, 0.0], [True, False]) == 1.0
    assert auroc([0.3, 0.4], [True, True]) is None  # one class: undefined


def test_rl_args_objective_kwargs_match_objectives():
    import inspect

    from training.objectives import OBJECTIVES

    for name in OBJECTIVES:
        kwargs = RLArgs(objective=name, epsilon=0.1, epsilon_high=0.3).objective_kwargs()
        params = inspect.signature(OBJECTIVES[name].loss).parameters
        assert set(kwargs) <= set(params), name
    with pytest.raises(ValueError):
        RLArgs(objective="ppo").objective_kwargs()
    assert all(field_help(RLArgs).values())


def test_swap_into_place_replaces_existing(tmp_path):
    final, tmp = tmp_path / "ckpt", tmp_path / ".ckpt.tmp-1"
    final.mkdir(), tmp.mkdir()
    (final / "old.txt").write_text("old")
    (tmp / "new.txt").write_text("new")
    _swap_into_place(tmp, final)
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
