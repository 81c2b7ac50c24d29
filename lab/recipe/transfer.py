"""``python -m lab.recipe transfer`` (make lab-transfer): PC@K and CaT-stream on each trained checkpoint."""

from __future__ import annotations

import json
import time

from cat_serve.calibration import PROFILE_FILE, model_fingerprint
from lab.recipe import (LAB_DIFFICULTY, OBJECTIVES, REPO, TRANSFER_MODELS, TRANSFER_STRATEGIES, caspo_dir,
                        results_root, rl800_recipe, rl_dir)
from lab.recipe.runs import record_segment, served
from lab.recipe.search import SEARCH_CONCURRENCY, chosen_by_mode, chosen_settings
from lab.recipe.sft import train_sft


def transfer_folder(rl_size: int | None = None, seed: int = 0) -> str:
    """results/lab/<this>/: "transfer" (the 40-prompt RL checkpoints, the dev sweep's stream settings) or
    "transfer-rl800-s<seed>" (make lab-rl800's checkpoints of ``seed``, every strategy at its dev-chosen sampling)."""
    return f"transfer-rl{rl_size}-s{seed}" if rl_size else "transfer"


def transfer_models(rl_size: int | None = None, seed: int = 0) -> dict:
    """name -> checkpoint directory (the SFT checkpoint is added by ``transfer``). With ``rl_size``: make
    lab-rl800's checkpoints of all four objectives and make lab-caspo1k's chosen one (the 64-problem CASPO before
    that choice exists); without it the 40-prompt CAPO and GRPO."""
    from lab.recipe.caspo import caspo1k_checkpoint

    objectives = ("capo", "grpo", "gspo", "c2gspg") if rl_size else ("capo", "grpo")
    rl = {obj: rl_dir(obj, rl800_recipe(obj, seed)) if rl_size else rl_dir(obj) for obj in objectives}
    return {"caspo": (caspo1k_checkpoint() if rl_size else None) or caspo_dir(), **rl}


def not_ready(name: str, path, rl_size: int | None = None, seed: int = 0) -> str | None:
    """Why ``name``'s checkpoint is not searched yet (None: it is ready): none at ``path``, or a make lab-rl800
    run still short of its last step (its directory holds the last saved step's weights)."""
    from training.checkpoint import is_checkpoint, read_state

    if not is_checkpoint(path):
        return f"no checkpoint at {path} (run make lab-caspo / make lab-rl OBJECTIVE=capo)"
    if rl_size and name in OBJECTIVES:
        step, last = read_state(path).get("step", 0), rl800_recipe(name, seed)["max_steps"]
        if step < last:
            return f"its make lab-rl800 run is at step {step} of {last} (make lab-rl800 OBJECTIVE={name} SEED={seed})"
    return None


def cat_settings(sft) -> tuple[dict, str]:
    """CaT's search settings for every model of a transfer run (``aggregation`` left out: each model reports
    its raw confidence), and where they came from: the SFT checkpoint's own profile (make lab-calibrate), or
    else the lab's committed one (results/lab/calibration/sft_profile.json, fitted on an earlier checkpoint of
    the same SFT recipe: the settings issue 20's dev runs also chose the sampling on)."""
    path = sft / PROFILE_FILE
    if not path.exists():
        path = results_root() / "calibration" / "sft_profile.json"
    defaults = json.loads(path.read_text())["search_defaults"].get("cat", {})
    shown = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
    return {k: v for k, v in defaults.items() if k != "aggregation"}, shown


def transfer_compare(split: str, k: int, folder: str = "transfer") -> dict:
    """{model: {strategy: headline numbers}} from every model's finished table under results/lab/<folder>/."""
    keys = ("accuracy", "acc_lo95", "acc_hi95", "tokens_per_query", "ece", "auroc")
    result = {}
    for name in TRANSFER_MODELS:
        table = results_root() / folder / name / f"{split}-k{k}" / "table.json"
        if table.exists():
            result[name] = {r["strategy"]: {key: r.get(key) for key in keys} for r in json.loads(table.read_text())}
    return result


def transfer(split: str, *, k: int = 4, limit: int = 300, only_models: tuple[str, ...] = TRANSFER_MODELS,
             rl_size: int | None = None, seed: int = 0) -> dict:
    """Calibration -> search (issue item 3d): PC@K and CaT-stream on the SFT, CASPO and CAPO checkpoints (and
    GRPO's, as the control), same items; each model's runs under results/lab/<transfer_folder>/<model>/, the
    side-by-side in compare_<split>.json. ``rl_size`` 800 (issue 21 item 4): make lab-rl800's checkpoints of
    ``seed``, and PC and CaT-stream at the sampling issue 20's dev runs chose (``chosen_settings``: PC's
    temperature and top_p per K, CaT's branch temperature over a greedy trunk), as make lab-search ran them."""
    from lab.search import run_search
    t0 = time.time()
    sft = train_sft()
    folder = transfer_folder(rl_size, seed)
    models = {name: path for name, path in {"sft": sft, **transfer_models(rl_size, seed)}.items()
              if name in only_models}
    # every model searches with the SFT profile's CaT settings and reports its raw confidence (no map), so
    # the three differ only in their weights
    cat_params, cat_source = cat_settings(sft)
    plan = chosen_settings(results_root() / "search", [k])[k] if rl_size else None
    by_mode = plan["by_mode"] if plan else chosen_by_mode()  # the dev sweep's stream settings, as in make lab-search
    for name, path in models.items():
        if reason := not_ready(name, path, rl_size, seed):
            print(f"skip {name}: {reason}")
            continue
        out = results_root() / folder / name
        with served(path, log=out / f"server-{split}.log", extra=("--calibration", "none")) as base_url:
            run_search(base_url, split=split, k=k, limit=limit, out=out, difficulty=LAB_DIFFICULTY,
                       only=list(TRANSFER_STRATEGIES), cat_params=cat_params, by_mode=by_mode,
                       concurrency=SEARCH_CONCURRENCY, sampling=plan["sampling"] if plan else None)
    result = transfer_compare(split, k, folder)  # with the models another `--models` run finished
    (results_root() / folder).mkdir(parents=True, exist_ok=True)
    (results_root() / folder / f"compare_{split}.json").write_text(json.dumps(result, indent=2) + "\n")
    record_segment(folder, t0, cat_settings_from=cat_source,
                   **({"models": {n: model_fingerprint(p) for n, p in models.items()}} if rl_size else {}))
    return result
