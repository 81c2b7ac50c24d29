"""``python -m lab.recipe caspo`` (make lab-caspo SPLIT=...): CASPO rounds, then step calibration of SFT vs CASPO."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from lab.recipe import CASPO_RECIPE, LAB_DIFFICULTY, REPO, caspo_dir, results_root
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

