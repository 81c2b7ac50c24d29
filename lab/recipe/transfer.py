"""``python -m lab.recipe transfer`` (make lab-transfer): PC@K and CaT-stream on each trained checkpoint."""

from __future__ import annotations

import json
import time

from cat_serve.calibration import PROFILE_FILE
from lab.recipe import (LAB_DIFFICULTY, TRANSFER_MODELS, TRANSFER_STRATEGIES, caspo_dir, results_root, rl_dir)
from lab.recipe.runs import record_segment, served
from lab.recipe.search import SEARCH_CONCURRENCY, chosen_by_mode
from lab.recipe.sft import train_sft


def transfer_compare(split: str, k: int) -> dict:
    """{model: {strategy: headline numbers}} from every model's finished table under results/lab/transfer/."""
    keys = ("accuracy", "acc_lo95", "acc_hi95", "tokens_per_query", "ece", "auroc")
    result = {}
    for name in TRANSFER_MODELS:
        table = results_root() / "transfer" / name / f"{split}-k{k}" / "table.json"
        if table.exists():
            result[name] = {r["strategy"]: {key: r.get(key) for key in keys} for r in json.loads(table.read_text())}
    return result


def transfer(split: str, *, k: int = 4, limit: int = 300, only_models: tuple[str, ...] = TRANSFER_MODELS) -> dict:
    """Calibration -> search (issue item 3d): PC@K and CaT-stream on the SFT, CASPO and CAPO checkpoints (and
    GRPO's, as the control), same items; each model's runs under results/lab/transfer/<model>/, the side-by-side in compare_<split>.json."""
    from lab.search import run_search
    from training.checkpoint import is_checkpoint

    t0 = time.time()
    sft = train_sft()
    models = {"sft": sft, "caspo": caspo_dir(), "capo": rl_dir("capo"), "grpo": rl_dir("grpo")}
    models = {name: path for name, path in models.items() if name in only_models}
    # every model searches with the SFT profile's CaT settings and reports its raw confidence (no map), so
    # the three differ only in their weights
    profile = json.loads((sft / PROFILE_FILE).read_text())
    cat_params = {k: v for k, v in profile["search_defaults"].get("cat", {}).items() if k != "aggregation"}
    by_mode = chosen_by_mode()  # the dev sweep's stream settings, as in make lab-search
    for name, path in models.items():
        if not is_checkpoint(path):
            print(f"skip {name}: no checkpoint at {path} (run make lab-caspo / make lab-rl OBJECTIVE=capo)")
            continue
        out = results_root() / "transfer" / name
        with served(path, log=out / f"server-{split}.log", extra=("--calibration", "none")) as base_url:
            run_search(base_url, split=split, k=k, limit=limit, out=out, difficulty=LAB_DIFFICULTY,
                       only=list(TRANSFER_STRATEGIES), cat_params=cat_params, by_mode=by_mode,
                       concurrency=SEARCH_CONCURRENCY)
    result = transfer_compare(split, k)  # with the models another `--models` run finished
    (results_root() / "transfer").mkdir(parents=True, exist_ok=True)
    (results_root() / "transfer" / f"compare_{split}.json").write_text(json.dumps(result, indent=2) + "\n")
    record_segment("transfer", t0)
    return result
