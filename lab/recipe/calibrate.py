"""``python -m lab.recipe calibrate`` (make lab-calibrate, lab-calibrate-large): the SFT model's profile."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from cat_serve.calibration import PROFILE_FILE  # <model dir>/cat_calibration.json: served automatically
from lab.recipe import CALIBRATE_ARGS, FRESH_ARGS, LAB_DIFFICULTY, LARGE_ARGS, LARGE_DATASET, REPO, results_root
from lab.recipe.runs import record_segment, run_child
from lab.recipe.sft import train_sft


def calibrate_lab(model: Path | None = None, *, large: bool = False, strategies: str | None = None,
                  fresh: bool = False) -> Path:
    """``cat-eval calibrate`` of the SFT model (resumable runs under results/lab/calibration/runs); the
    profile goes to <model>/cat_calibration.json (served automatically) and results/lab/calibration/.
    ``large``: LARGE_DATASET, runs and profile under results/lab/calibration/large/. ``fresh``: FRESH_ARGS'
    items collected into large/fresh/ (the profile cat-eval fits on them is not a result and is removed)."""
    model = model or train_sft()
    out = results_root() / "calibration"
    if fresh:
        runs, extra = out / "large" / "fresh", list(FRESH_ARGS)
        profile = runs / "partial-profile.json"
    elif large:
        runs, profile, extra = out / "large" / "runs", out / "large" / "profile.json", list(LARGE_ARGS)
        for old in (out / "runs").glob("*/results.jsonl"):
            dest = runs / old.parent.name / old.name
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(old, dest)
    else:
        runs, profile, extra = out / "runs", model / PROFILE_FILE, list(CALIBRATE_ARGS)
    if strategies:  # collect these only (two processes can split the strategies, one server each); the profile
        # is fitted by a run without --strategies, which finds every row collected and only fits
        extra += ["--strategies", strategies]
        profile = profile if fresh else runs.parent / f"partial-{strategies.replace(',', '+')}.json"
    extra += ["--profile", str(profile)]
    dataset = LARGE_DATASET if large or fresh else f"arith:{LAB_DIFFICULTY}@dev"
    cmd = [sys.executable, "-m", "eval.cli", "calibrate", "--serve-model", str(model), "--no-progress",
           "--dataset", dataset, *extra, "--out", str(runs)]
    print(" ".join(cmd), flush=True)
    env = {**os.environ, "CAT_SERVE_ARGS": os.environ.get("CAT_SERVE_ARGS", "--kv-cache-gib 2 --max-model-len 1024")}
    t0 = time.time()
    run_child(cmd, cwd=REPO, env=env)
    if strategies or fresh:
        profile.unlink(missing_ok=True)  # a partial profile (or one fitted on the fresh items) is not a result
    elif not large:
        (out / "sft_profile.json").write_text(profile.read_text())
    record_segment("calibration", t0, **({"large": True} if large else {}), **({"fresh": True} if fresh else {}),
                   **({"strategies": strategies} if strategies else {}))
    return profile

