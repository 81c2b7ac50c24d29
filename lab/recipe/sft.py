"""``python -m lab.recipe sft`` (make lab-sft): train, resume or reuse the SFT checkpoint of SFT_RECIPE."""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

from lab.recipe import REPO, SFT_RECIPE, recipe_hash, sft_dir
from lab.recipe.runs import record_segment, run_child


def sft_argv(recipe: dict, output_dir: Path) -> list[str]:
    from training.models import EMBEDDED

    model = recipe["model"]
    if model == EMBEDDED:
        from cat_serve.models import ensure_embedded_model  # noqa: PLC0415

        model = str(ensure_embedded_model())
    argv = ["sft", "--output-dir", str(output_dir), "--resume", "--model", model]
    for key, value in recipe.items():
        if key != "model":
            argv += ["--" + key.replace("_", "-"), str(value)]
    return argv


def trained_steps(path: Path) -> int:
    from training.checkpoint import is_checkpoint, read_state

    return read_state(path)["step"] if is_checkpoint(path) else 0


def finished_sft(model: Path | None = None) -> Path:
    """``model``, or the cached SFT checkpoint, which must be finished: the drivers that only read it never train
    (make lab-sft does)."""
    if model is not None:
        return model
    model = sft_dir()
    if trained_steps(model) < SFT_RECIPE["max_steps"]:
        raise SystemExit(f"the SFT checkpoint {model} is not finished: run make lab-sft first")
    return model


def train_sft(recipe: dict = SFT_RECIPE) -> Path:
    out = sft_dir(recipe)
    done = trained_steps(out)
    if done >= recipe["max_steps"]:
        print(f"cached: {out} (step {done})")
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "training.cli", *sft_argv(recipe, out)]
    print(" ".join(cmd), flush=True)
    t0, r0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    run_child(cmd, cwd=REPO)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    record_segment("sft", t0, recipe=recipe_hash(recipe), from_step=done, to_step=trained_steps(out),
                   cpu_s=round(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, 1), cpus=os.cpu_count())
    return out


