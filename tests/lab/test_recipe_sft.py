"""``lab.recipe.sft.train_sft`` around its training child: the run is recorded as a segment of the recipe.

The child (``training.cli sft``) is replaced by a stand-in that only advances the step count, so what is
tested is the driver's own bookkeeping, which once crashed after a 2-hour training (an import missing).
"""

from __future__ import annotations

import lab.recipe.sft as sft
from lab.recipe import SFT_RECIPE, recipe_hash


def test_a_finished_training_is_recorded_as_a_segment_of_its_recipe(monkeypatch, tmp_path):
    monkeypatch.setenv("CAT_SERVE_CACHE", str(tmp_path / "cache"))
    # the empty cache would convert the embedded model again (~25 s); the stand-in child never reads it
    monkeypatch.setattr("cat_serve.models.ensure_embedded_model", lambda: tmp_path / "embedded")
    steps = iter([0, SFT_RECIPE["max_steps"]])  # before the child: none; after it: all
    monkeypatch.setattr(sft, "trained_steps", lambda path: next(steps))
    ran, segments = [], []
    monkeypatch.setattr(sft, "run_child", lambda cmd, cwd: ran.append(cmd))
    monkeypatch.setattr(sft, "record_segment", lambda name, t0, **kw: segments.append((name, kw)))
    out = sft.train_sft()
    assert out == tmp_path / "cache" / "lab" / f"sft-{recipe_hash(SFT_RECIPE)}"
    assert len(ran) == 1 and "--resume" in ran[0]
    [(name, kw)] = segments
    assert name == "sft" and kw["recipe"] == recipe_hash(SFT_RECIPE)
    assert (kw["from_step"], kw["to_step"]) == (0, SFT_RECIPE["max_steps"])


def test_a_trained_checkpoint_is_reused(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CAT_SERVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sft, "trained_steps", lambda path: SFT_RECIPE["max_steps"])
    monkeypatch.setattr(sft, "run_child", lambda cmd, cwd: (_ for _ in ()).throw(AssertionError("trained again")))
    sft.train_sft()
    assert "cached:" in capsys.readouterr().out
