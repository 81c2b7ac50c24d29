"""``python -m lab.recipe caspo`` (make lab-caspo SPLIT=...): CASPO rounds, then step calibration of SFT vs CASPO."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from lab.recipe import CASPO_RECIPE, LAB_DIFFICULTY, REPO, cache_root, caspo_dir, results_root
from lab.recipe.runs import record_segment, run_child
from lab.recipe.sft import train_sft


def train_caspo(*, model: Path | None = None, overrides: dict | None = None, out: Path | None = None) -> Path:
    from training.checkpoint import is_checkpoint, read_state

    recipe = {**CASPO_RECIPE, **(overrides or {})}
    out = out or caspo_dir(recipe)
    if is_checkpoint(out) and read_state(out).get("round", 0) >= recipe["rounds"]:
        return out
    model = model or train_sft()
    argv = ["caspo", "--model", str(model), "--output-dir", str(out), "--resume", "--judge", "arith",
            "--contexts", "on_policy", "--data-path", f"arith:{LAB_DIFFICULTY}@train"]
    for key, value in recipe.items():
        argv += ["--" + key.replace("_", "-"), str(value)]
    run_child([sys.executable, "-m", "training.cli", *argv], cwd=REPO)
    return out


def caspo_experiment(split: str, *, limit: int = 64, model: Path | None = None, overrides: dict | None = None,
                     out: Path | None = None) -> dict:
    """Train CASPO (cached), then step-level calibration of SFT and CASPO on the same split."""
    t0 = time.time()
    sft = model or train_sft()
    caspo = train_caspo(model=sft, overrides=overrides, out=out)
    train = results_root() / "caspo" / "train"  # the rounds' metrics and preference pairs, beside the results
    train.mkdir(parents=True, exist_ok=True)
    for f in (caspo / "metrics.jsonl", *sorted(caspo.glob("pairs_round*.jsonl"))):
        shutil.copyfile(f, train / f.name)
    spec = f"arith:{LAB_DIFFICULTY}@{split}"
    result = {}
    for name, ckpt in (("sft", sft), ("caspo", caspo)):
        dest = results_root() / "caspo" / f"{name}_{split}"
        run_child([sys.executable, "-m", "lab.steps", "--model", str(ckpt), "--spec", spec, "--limit", str(limit),
                   "--out", str(dest)], cwd=REPO)
        result[name] = json.loads((dest / "summary.json").read_text())
    (results_root() / "caspo" / f"compare_{split}.json").write_text(json.dumps(result, indent=2) + "\n")
    record_segment("caspo", t0)
    return result



def steps_eval(model: Path, split: str, limit: int, dest: Path) -> dict:
    """``lab.steps`` (step-level calibration on arith ``split``) of ``model`` into ``dest``; its summary. A
    finished evaluation of the same checkpoint is reused (the make target resumes)."""
    from cat_serve.calibration import model_fingerprint

    summary = dest / "summary.json"
    fp = model_fingerprint(model)
    if summary.exists() and json.loads(summary.read_text()).get("fingerprint") == fp:
        return json.loads(summary.read_text())
    run_child([sys.executable, "-m", "lab.steps", "--model", str(model), "--spec", f"arith:{LAB_DIFFICULTY}@{split}",
               "--limit", str(limit), "--out", str(dest)], cwd=REPO)
    data = {**json.loads(summary.read_text()), "fingerprint": fp}
    summary.write_text(json.dumps(data, indent=2) + "\n")
    return data


def caspo1k_recipes(lrs: tuple[float, ...] | None = None, overrides: dict | None = None,
                    round0: Path | None = None) -> dict[str, dict]:
    """``lr<lr>`` -> the CASPO recipe of that learning rate in make lab-caspo1k, in sweep order. Round 0 samples
    from SFT whatever the lr, so it is collected once: by ``round0`` (a cached run with the same collection
    settings, ``round0_source``) when given, else by the first lr's run; the others take its pairs
    (``first_round_from``)."""
    from lab.recipe import CASPO1K_LRS, CASPO1K_RECIPE

    recipes = {}
    for lr in lrs or CASPO1K_LRS:
        recipe = {**CASPO1K_RECIPE, **(overrides or {}), "learning_rate": lr}
        source = round0 or (caspo_dir(next(iter(recipes.values()))) if recipes else None)
        if source:
            recipe["first_round_from"] = str(source)
        recipes[f"lr{lr:g}"] = recipe
    return recipes


def round0_source(recipe: dict, sft: Path) -> Path | None:
    """A cached CASPO run whose finished round 0 was collected as ``recipe`` on ``sft`` would collect it (its
    training_args agree on ``training.caspo.COLLECTION_ARGS``), so that a changed DPO setting (learning rate,
    precision) does not collect it again; None when there is none."""
    from dataclasses import fields

    from training.caspo import collection_mismatch
    from training.config import CASPOArgs

    names = {f.name for f in fields(CASPOArgs)}
    args = CASPOArgs(**{k: v for k, v in recipe.items() if k in names and k != "first_round_from"},
                     model=str(sft), judge="arith", contexts="on_policy", data_path=f"arith:{LAB_DIFFICULTY}@train")
    for folder in sorted(cache_root().glob("caspo-*")):
        if ((folder / "pairs_round0.jsonl").exists() and (folder / "training_args.json").exists()
                and not collection_mismatch(folder, args)):
            return folder
    return None


def caspo1k_checkpoint(results: Path | None = None) -> Path | None:
    """The checkpoint of the learning rate make lab-caspo1k chose on dev (results/lab/caspo1k/chosen.json); None
    before the choice."""
    chosen = (results or results_root() / "caspo1k") / "chosen.json"
    if not chosen.exists():
        return None
    return caspo_dir(caspo1k_recipes()[json.loads(chosen.read_text())["chosen"]])


def caspo_sweep(*, lrs: tuple[float, ...] | None = None, model: Path | None = None, overrides: dict | None = None,
                results: Path | None = None, evals: dict | None = None) -> dict:
    """CASPO at issue 21's size (``CASPO1K_RECIPE``): one training per learning rate, each evaluated on dev step
    ECE (``lab.steps``, the SFT checkpoint beside them); the lr with the lowest dev ECE is evaluated on test once,
    beside SFT. Round 0 is collected once (by a cached run with the same collection settings, or by the first
    lr's training) and every other lr trains on its pairs (``--first-round-from``). Results under
    results/lab/caspo1k/: train-lr<lr>/ (rounds and pairs), dev-<name>/, test-<name>/, chosen.json. Every finished training and evaluation is reused, so the same command resumes."""
    from lab.recipe import CASPO1K_EVAL
    from lab.recipe.sft import finished_sft

    evals = {**CASPO1K_EVAL, **(evals or {})}
    t0, finished = time.time(), False
    root = results or results_root() / "caspo1k"
    root.mkdir(parents=True, exist_ok=True)
    sft = finished_sft(model)
    try:
        dev = {"sft": steps_eval(sft, "dev", evals["dev"], root / "dev-sft")}
        ckpts = {}
        first = next(iter(caspo1k_recipes(lrs, overrides).values()))
        for name, recipe in caspo1k_recipes(lrs, overrides, round0=round0_source(first, sft)).items():
            ckpts[name] = train_caspo(model=sft, overrides=recipe, out=caspo_dir(recipe))
            train = root / f"train-{name}"
            train.mkdir(parents=True, exist_ok=True)
            for f in (ckpts[name] / "metrics.jsonl", *sorted(ckpts[name].glob("pairs_round*.jsonl"))):
                shutil.copyfile(f, train / f.name)
            dev[name] = steps_eval(ckpts[name], "dev", evals["dev"], root / f"dev-{name}")
        best = min(ckpts, key=lambda n: dev[n]["ece"])
        (root / "chosen.json").write_text(json.dumps(
            {"chosen": best, "rule": "lowest dev step ECE among the learning rates", "dev_ece": {n: dev[n]["ece"] for n in dev}},
            indent=2) + "\n")
        test = {"sft": steps_eval(sft, "test", evals["test"], root / "test-sft"),
                "caspo": steps_eval(ckpts[best], "test", evals["test"], root / f"test-{best}")}
        finished = True
        return {"chosen": best, "dev": dev, "test": test}
    finally:
        record_segment("caspo1k", t0, **({} if finished else {"interrupted": True}))
