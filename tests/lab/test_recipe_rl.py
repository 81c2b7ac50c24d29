"""lab.recipe.rl.train_rl: the rows and the wall-time segment of a finished and of an interrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_an_interrupted_rl800_run_keeps_its_saved_rows_and_says_so(tmp_path, monkeypatch):
    import lab.recipe.rl as rl

    monkeypatch.setenv("LAB_RESULTS", str(tmp_path / "results"))
    out, model = tmp_path / "ckpt", tmp_path / "sft"
    out.mkdir()
    model.mkdir()
    (model / "config.json").write_text("{}")
    saved = [{"eval_step": 0, "dev_accuracy": 0.4}, {"step": 1, "reward": 0.5}]

    def interrupted(cmd, cwd):  # the trainer saved two rows, then the run was stopped (SIGTERM -> SystemExit)
        assert cmd[cmd.index("--objective") + 1] == "capo" and cmd[cmd.index("--seed") + 1] == "1"
        (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in saved))
        raise SystemExit(143)

    monkeypatch.setattr(rl, "run_child", interrupted)
    with pytest.raises(SystemExit):
        rl.train_rl("capo", model=model, out=out, size=800, seed=1)
    dest = tmp_path / "results" / "rl800" / "capo-s1"
    assert [json.loads(line) for line in (dest / "metrics.jsonl").read_text().splitlines()] == saved
    seg = [json.loads(line) for line in (dest / "segments.jsonl").read_text().splitlines()]
    assert len(seg) == 1 and seg[0]["interrupted"] is True and seg[0]["model_fingerprint"].startswith("sha256:")

    monkeypatch.setattr(rl, "run_child", lambda cmd, cwd: None)  # resumed and finished: a second segment
    rl.train_rl("capo", model=model, out=out, size=800, seed=1)
    seg = [json.loads(line) for line in (dest / "segments.jsonl").read_text().splitlines()]
    assert len(seg) == 2 and "interrupted" not in seg[1]


def test_a_run_that_saved_nothing_writes_nothing(tmp_path, monkeypatch):
    import lab.recipe.rl as rl

    monkeypatch.setenv("LAB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(rl, "run_child", lambda cmd, cwd: (_ for _ in ()).throw(SystemExit(143)))
    with pytest.raises(SystemExit):
        rl.train_rl("grpo", model=tmp_path, out=tmp_path / "none", size=800, seed=0)
    assert not (tmp_path / "results" / "rl800").exists()


def test_a_rerun_trains_into_its_own_checkpoint_and_results(tmp_path, monkeypatch):
    """make lab-rl800-rerun: the same recipe and seed from scratch, beside (not over) the committed run."""
    import lab.recipe.rl as rl
    from lab.recipe import rl800_recipe, rl_dir

    monkeypatch.setenv("LAB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("CAT_SERVE_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "sft"
    model.mkdir()
    (model / "config.json").write_text("{}")
    seen = {}

    def finished(cmd, cwd):  # the trainer wrote one dev row into its output directory
        seen["out"] = cmd[cmd.index("--output-dir") + 1]
        Path(seen["out"]).mkdir(parents=True)
        (Path(seen["out"]) / "metrics.jsonl").write_text(json.dumps({"eval_step": 0, "dev_accuracy": 0.4}) + "\n")

    monkeypatch.setattr(rl, "run_child", finished)
    out = rl.train_rl("capo", model=model, size=800, seed=0, rerun="alone")
    original = rl_dir("capo", rl800_recipe("capo", 0))
    assert out == original.with_name(original.name + "-alone") and seen["out"] == str(out)
    assert (tmp_path / "results" / "rl800-alone" / "capo-s0" / "segments.jsonl").exists()
    assert not (tmp_path / "results" / "rl800").exists()
    with pytest.raises(SystemExit, match="--size 800"):
        rl.train_rl("capo", model=model, rerun="alone")
