"""``python -m lab.recipe rl`` (make lab-rl OBJECTIVE=...): RL from the SFT checkpoint, and the curves' plots."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from lab.recipe import LAB_DIFFICULTY, OBJECTIVES, REPO, RL_RECIPE, results_root, rl800_recipe, rl_dir
from lab.recipe.runs import record_segment, run_child
from lab.recipe.sft import finished_sft, train_sft


def train_rl(objective: str, *, model: Path | None = None, overrides: dict | None = None,
             out: Path | None = None, size: int | None = None, seed: int = 0, rerun: str | None = None) -> Path:
    """``cat-train rl --resume`` from the SFT checkpoint on arith train (the lab difficulty), dev curves on
    ``eval_limit`` dev questions; per-step and dev rows copied to results/lab/rl/<objective>/metrics.jsonl.
    ``size=800``: issue 21's recipe (``rl800_recipe``) for ``seed``, rows to results/lab/rl800/<objective>-s<seed>/.
    ``rerun``: the same run again from the SFT checkpoint, into its own checkpoint directory and
    results/lab/rl800-<rerun>/ (what a run costs alone on the machine, and how closely a seed reproduces)."""
    from cat_serve.calibration import model_fingerprint
    from training.checkpoint import read_metrics

    if size not in (None, 800):
        raise SystemExit(f"--size {size}: the lab has the 40-prompt recipe (no --size) and --size 800")
    if rerun and (not size or not rerun.isidentifier()):
        raise SystemExit(f"--rerun {rerun!r}: a name of letters, digits and _, with --size 800")
    recipe = {**(rl800_recipe(objective, seed) if size else RL_RECIPE), **(overrides or {})}
    out = out or rl_dir(objective, recipe)
    out = out.with_name(f"{out.name}-{rerun}") if rerun else out
    model = model or (finished_sft() if size else train_sft())
    argv = ["rl", "--objective", objective, "--model", str(model), "--output-dir", str(out), "--resume",
            "--data-path", f"arith:{LAB_DIFFICULTY}@train", "--eval-data-path", f"arith:{LAB_DIFFICULTY}@dev"]
    for key, value in recipe.items():
        argv += ["--" + key.replace("_", "-"), str(value)]
    t0, finished = time.time(), False
    kind = f"rl800{'-' + rerun if rerun else ''}/{objective}-s{seed}" if size else f"rl/{objective}"
    try:
        run_child([sys.executable, "-m", "training.cli", *argv], cwd=REPO)
        finished = True
    finally:  # an interrupted or failed run: the rows of its saved steps, and a segment that says so
        rows = read_metrics(out)
        if rows or finished:
            dest = results_root() / kind
            dest.mkdir(parents=True, exist_ok=True)
            with open(dest / "metrics.jsonl", "w") as f:
                for row in rows:
                    f.write(json.dumps(row) + "\n")
            record_segment(kind, t0, recipe=recipe, model=str(model), model_fingerprint=model_fingerprint(model),
                           **({} if finished else {"interrupted": True}))
    return out


RL_CURVES = (("reward", "train reward"), ("entropy", "token entropy"), ("dev_accuracy", "dev accuracy"),
             ("dev_ece", "dev ECE of exp(mean logprob)"), ("dev_auc_mean", "dev AUC-mean"))


def plot_rl(results: Path | None = None) -> list[Path]:
    """One PNG per metric with every objective that has results."""
    results = results or results_root() / "rl"
    from eval.report import _pyplot

    plt = _pyplot()
    runs = {}
    for obj in OBJECTIVES:
        f = results / obj / "metrics.jsonl"
        if f.exists():
            runs[obj] = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    paths = []
    for key, title in RL_CURVES:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for obj, rows in runs.items():
            xs = [(r.get("step", r.get("eval_step")), r[key]) for r in rows if r.get(key) is not None]
            if xs:
                ax.plot(*zip(*xs), marker="o" if key.startswith("dev_") else None, ms=3, label=obj)
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = results / f"{key}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths

