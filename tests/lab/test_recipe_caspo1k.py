"""lab.recipe.caspo.caspo_sweep (make lab-caspo1k): one CASPO per learning rate, the lr chosen on dev step ECE,
test once; steps_eval reuses a finished evaluation of the same checkpoint."""

from __future__ import annotations

import json

import pytest


def _ckpt(path, weights: str):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"w": weights}))  # the fingerprint reads config.json
    return path


def test_the_lowest_dev_ece_is_tested_once_beside_sft(tmp_path, monkeypatch):
    import lab.recipe.caspo as c

    monkeypatch.setenv("LAB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("CAT_SERVE_CACHE", str(tmp_path / "cache"))
    sft = _ckpt(tmp_path / "sft", "sft")
    trained, evaluated, outs = [], [], []

    def fake_train(*, model, overrides, out):
        assert model == sft and overrides["gradient_accumulation_steps"] * overrides["batch_size"] >= 32
        assert overrides["rollout_engine"] == "vllm"
        lr = overrides["learning_rate"]
        # round 0 is collected once, by the first lr's training; the others reuse it
        assert overrides.get("first_round_from") == (str(outs[0]) if trained else None)
        trained.append(lr)
        outs.append(out)
        ck = _ckpt(tmp_path / f"caspo-{lr:g}", f"lr{lr:g}")
        (ck / "metrics.jsonl").write_text(json.dumps({"round": 0, "pairs": 600}) + "\n")
        (ck / "pairs_round0.jsonl").write_text("{}\n")
        return ck

    dev_ece = {"sft": 0.15, "caspo-5e-07": 0.14, "caspo-2e-06": 0.09, "caspo-1e-05": 0.12}

    def fake_eval(model, split, limit, dest):
        evaluated.append((model.name, split, limit))
        return {"ece": dev_ece[model.name] if split == "dev" else 0.5, "steps": 10}

    monkeypatch.setattr(c, "train_caspo", fake_train)
    monkeypatch.setattr(c, "steps_eval", fake_eval)
    out = c.caspo_sweep(model=sft)
    assert trained == [5e-7, 2e-6, 1e-5] and out["chosen"] == "lr2e-06"
    assert [e for e in evaluated if e[1] == "test"] == [("sft", "test", 200), ("caspo-2e-06", "test", 200)]
    assert sum(e[1] == "dev" for e in evaluated) == 4 and all(e[2] == 64 for e in evaluated if e[1] == "dev")
    root = tmp_path / "results" / "caspo1k"
    assert json.loads((root / "chosen.json").read_text())["chosen"] == "lr2e-06"
    # transfer finds the chosen lr's checkpoint; three distinct checkpoint folders, all in the cache
    assert c.caspo1k_checkpoint() == outs[1] and len(set(outs)) == 3
    assert all(o.parent == tmp_path / "cache" / "lab" for o in outs)
    assert (root / "train-lr1e-05" / "pairs_round0.jsonl").exists()
    seg = [json.loads(line) for line in (root / "segments.jsonl").read_text().splitlines()]
    assert len(seg) == 1 and "interrupted" not in seg[0]


def test_steps_eval_reuses_a_finished_evaluation_of_the_same_weights(tmp_path, monkeypatch):
    import lab.recipe.caspo as c

    runs = []

    def fake_child(cmd, cwd):
        runs.append(cmd)
        dest = cmd[cmd.index("--out") + 1]
        (tmp_path / dest).mkdir(parents=True, exist_ok=True)
        (tmp_path / dest / "summary.json").write_text(json.dumps({"ece": 0.1}))

    monkeypatch.setattr(c, "run_child", fake_child)
    model, dest = _ckpt(tmp_path / "m", "a"), tmp_path / "eval"
    assert c.steps_eval(model, "dev", 64, dest)["ece"] == 0.1
    assert c.steps_eval(model, "dev", 64, dest)["ece"] == 0.1 and len(runs) == 1
    _ckpt(model, "retrained")  # other weights: evaluated again
    c.steps_eval(model, "dev", 64, dest)
    assert len(runs) == 2 and "@dev" in runs[0][runs[0].index("--spec") + 1]


def test_an_interrupted_sweep_says_so(tmp_path, monkeypatch):
    import lab.recipe.caspo as c

    monkeypatch.setenv("LAB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(c, "steps_eval", lambda *a: {"ece": 0.1})
    monkeypatch.setattr(c, "train_caspo", lambda **kw: (_ for _ in ()).throw(SystemExit(143)))
    with pytest.raises(SystemExit):
        c.caspo_sweep(model=_ckpt(tmp_path / "sft", "sft"))
    seg = json.loads((tmp_path / "results" / "caspo1k" / "segments.jsonl").read_text())
    assert seg["interrupted"] is True


def test_round0_source_finds_a_run_collected_with_the_same_settings(tmp_path, monkeypatch):
    """A cached run whose round 0 was collected as the recipe would (another learning rate, DPO precision) serves
    as every learning rate's round 0; a run with another collection setting (seed) does not."""
    from dataclasses import asdict

    import lab.recipe.caspo as c
    from lab.recipe import CASPO1K_RECIPE, LAB_DIFFICULTY, caspo_dir
    from training.config import CASPOArgs

    monkeypatch.setenv("CAT_SERVE_CACHE", str(tmp_path / "cache"))
    sft = _ckpt(tmp_path / "sft", "sft")

    def cached(name, **changes):
        d = tmp_path / "cache" / "lab" / name
        d.mkdir(parents=True)
        args = CASPOArgs(**{k: v for k, v in CASPO1K_RECIPE.items()}, model=str(sft), judge="arith",
                         contexts="on_policy", data_path=f"arith:{LAB_DIFFICULTY}@train", output_dir=str(d))
        (d / "training_args.json").write_text(json.dumps({**asdict(args), **changes, "command": "x"}))
        (d / "pairs_round0.jsonl").write_text("{}\n")
        return d

    recipe = next(iter(c.caspo1k_recipes().values()))
    cached("caspo-a-seed1", seed=1, learning_rate=5e-7)
    assert c.round0_source(recipe, sft) is None
    fp32 = cached("caspo-b-fp32", mixed_precision="auto", learning_rate=5e-7)
    assert c.round0_source(recipe, sft) == fp32
    recipes = c.caspo1k_recipes(round0=fp32)
    assert {r["first_round_from"] for r in recipes.values()} == {str(fp32)}
    # the folder name does not depend on where round 0 came from, so the chosen lr is found either way
    assert [caspo_dir(r) for r in recipes.values()] == [caspo_dir(r) for r in c.caspo1k_recipes().values()]
