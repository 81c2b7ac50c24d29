"""``python -m lab.recipe search`` (make lab-search, lab-search-dev): serve the SFT checkpoint and run
``lab.search``'s strategies on the test split, or sweep CaT's settings on dev and choose them."""

from __future__ import annotations

import json
import time
from pathlib import Path

from cat_serve.calibration import PROFILE_FILE
from lab.recipe import (LAB_DIFFICULTY, RUN_LAST, SEARCH_CONCURRENCY, SWEEP_RATES, TOKEN_TARGET, results_root)
from lab.recipe.runs import record_segment, served
from lab.recipe.sft import train_sft
from lab.search import run_search, strategies


def search_labels() -> list[str]:
    """Strategy labels without @K, cheapest first (lab.search.strategies' order)."""
    from lab.search import strategies

    return [label.split("@")[0] for label, _, _ in strategies(4)]


def search_plan(labels: list[str], ks: list[int]) -> list[tuple[int, list[str]]]:
    """(K, labels) in run order: every K's cheaper strategies first, then RUN_LAST's for every K, so an
    interrupted test run has the most strategies finished."""
    cheap, last = [x for x in labels if x not in RUN_LAST], [x for x in labels if x in RUN_LAST]
    return [(k, group) for group in (cheap, last) if group for k in ks]


def sweep_variants(profile: dict) -> list[tuple[str, str, dict]]:
    """(name, mode, CaT params) of the dev sweep, from the profile's fitted step-confidence quantiles."""
    q = profile["provenance"]["cat_threshold_fit"]["cat"]["step_confidence_quantiles"]
    out = []
    for rate in SWEEP_RATES:
        thr = q[str(rate)]
        out.append((f"stream-b{rate}", "stream", {"confident_threshold": thr}))
        out.append((f"stream-t0-b{rate}", "stream", {"confident_threshold": thr, "trunk_temperature": 0.0}))
    # adaptive asks one request per step and branch: one setting only (2 cores)
    out.append(("adaptive1-b0.1", "adaptive", {"confident_threshold": q["0.1"], "beam": 1}))
    return out


def choose(variants: list[dict], target: float = TOKEN_TARGET) -> dict:
    """Per mode: the most accurate variant within ``target`` x SC's tokens (ties: fewer tokens); when none
    is within it, the cheapest. ``variants``: rows with mode, params, accuracy, tokens_vs_sc."""
    chosen = {}
    for mode in sorted({v["mode"] for v in variants}):
        mine = [v for v in variants if v["mode"] == mode and v.get("tokens_vs_sc") is not None]
        within = [v for v in mine if v["tokens_vs_sc"] <= target]
        best = (max(within, key=lambda v: (v["accuracy"], -v["tokens_vs_sc"])) if within
                else min(mine, key=lambda v: v["tokens_vs_sc"]))
        chosen[mode] = {"name": best["name"], "params": best["params"], "within_target": bool(within),
                        "accuracy": best["accuracy"], "tokens_vs_sc": best["tokens_vs_sc"]}
    return chosen


def dev_sweep(base_url: str, model: Path, *, k: int = 4, limit: int = 100) -> dict:
    """greedy and SC@K, then every sweep variant of CaT, on dev items 0..limit-1 (the calibration profile was
    fitted on dev items 100-399); writes search/dev-sweep/chosen.json, which make lab-search reads."""
    from lab.search import run_search

    profile = json.loads((model / PROFILE_FILE).read_text())
    out = results_root() / "search" / "dev-sweep"
    base = {r["strategy"]: r for r in run_search(base_url, split="dev", k=k, limit=limit, out=out / "baselines",
                                                 only=["greedy", "SC"], concurrency=SEARCH_CONCURRENCY)}
    sc_tokens = base[f"SC@{k}"]["tokens_per_query"]
    variants = []
    for name, mode, params in sweep_variants(profile):
        [row] = run_search(base_url, split="dev", k=k, limit=limit, out=out / name, only=[f"CaT-{mode}"],
                           by_mode={mode: params}, concurrency=SEARCH_CONCURRENCY)
        variants.append({"name": name, "mode": mode, "params": params, "accuracy": row["accuracy"],
                         "tokens_per_query": row["tokens_per_query"], "tokens_vs_sc": row["tokens_per_query"] / sc_tokens,
                         "latency_p50_s": row["latency_p50_s"]})
    result = {"k": k, "limit": limit, "baselines": {s: {"accuracy": r["accuracy"], "tokens_per_query": r["tokens_per_query"],
                                                          "latency_p50_s": r["latency_p50_s"]} for s, r in base.items()},
              "variants": variants, "chosen": choose(variants), "rule": f"per mode: most accurate within "
              f"{TOKEN_TARGET}x SC@{k}'s tokens (ties: fewer tokens), else the cheapest"}
    (out / "chosen.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def chosen_by_mode() -> dict:
    """The dev sweep's per-mode CaT settings ({} before make lab-search-dev)."""
    f = results_root() / "search" / "dev-sweep" / "chosen.json"
    return {m: c["params"] for m, c in json.loads(f.read_text())["chosen"].items()} if f.exists() else {}



def chosen_settings(root: Path, ks: list[int]) -> dict[int, dict]:
    """Per K, what issue 20's dev runs chose, for ``run_search``: ``sampling`` (each strategy's temperature and
    top_p: the sampling sweep's choice per selector for SC/PC/RPC/DeepConf; the CaT-temperature run's branch
    temperature for every CaT mode) and ``by_mode`` (the dev sweep's stream and adaptive settings; faithful with
    ``dedup``, issue 20 item 3). Adaptive and faithful take stream's branch temperature (theirs was not swept)."""
    files = {"sweep": root / "sampling-sweep" / "chosen.json", "cat": root / "cat-temperature" / "table.json",
             "modes": root / "dev-sweep" / "chosen.json"}
    missing = [str(f) for f in files.values() if not f.is_file()]
    if missing:
        raise SystemExit(f"{', '.join(missing)} missing: run make lab-sweep, lab-cat-temperature and lab-search-dev "
                         "(the dev choices) first")
    sweep, cat, modes = (json.loads(f.read_text()) for f in files.values())
    plan = {}
    for k in ks:
        sampling = {label: {"temperature": by_k[str(k)]["temperature"], "top_p": by_k[str(k)]["top_p"]}
                    for label, by_k in sweep["chosen"].items()}
        t_cat = cat["chosen"][str(k)]["temperature"]
        sampling.update({f"CaT-{mode}": {"temperature": t_cat} for mode in ("stream", "adaptive", "faithful")})
        by_mode = {mode: c["params"] for mode, c in modes["chosen"].items()}
        by_mode["stream"] = {**by_mode.get("stream", {}), **cat["stream_params"]}
        by_mode["faithful"] = {**by_mode.get("faithful", {}), "dedup": True}
        plan[k] = {"sampling": sampling, "by_mode": by_mode}
    return plan


CHOSEN_DIR = "chosen"  # results/lab/search/chosen/test-k4, test-k8: make lab-search at the dev-chosen settings


def search(split: str, ks: list[int], limit: int, *, only: str | None = None, cat_params: dict | None = None,
           concurrency: int = SEARCH_CONCURRENCY, model: Path | None = None, at_chosen: bool = False) -> None:
    """Serve ``model`` (the SFT checkpoint by default) with its profile; dev: the sweep of CaT's settings;
    test: every strategy (``only``: these labels) at every K, cheapest first. ``at_chosen``: each strategy at
    the sampling its dev runs chose (``chosen_settings``), into search/chosen/ (the older tables stay)."""
    t0 = time.time()
    model = model or train_sft()
    if not (model / PROFILE_FILE).exists():
        raise SystemExit(f"no calibration profile in {model}: run make lab-calibrate first")
    finished = False
    try:
        with served(model, log=results_root() / "search" / f"server-{split}.log") as base_url:
            if split == "dev":  # choose CaT's settings (the test split never is)
                print(json.dumps(dev_sweep(base_url, model, k=ks[0], limit=limit)["chosen"], indent=2))
            else:
                labels = only.split(",") if only else search_labels()
                plan = chosen_settings(results_root() / "search", ks) if at_chosen else {}
                out = results_root() / "search" / (CHOSEN_DIR if at_chosen else "")
                for k, group in search_plan(labels, ks):
                    run_search(base_url, split=split, k=k, limit=limit, out=out,
                               difficulty=LAB_DIFFICULTY, only=group, cat_params=cat_params or {},
                               concurrency=concurrency, by_mode=plan[k]["by_mode"] if plan else chosen_by_mode(),
                               sampling=plan[k]["sampling"] if plan else None)
        finished = True
    finally:
        record_segment(f"search/{CHOSEN_DIR}" if at_chosen else "search", t0, split=split,
                       **({} if finished else {"interrupted": True}))


def cat_temperature(limit: int, *, model: Path | None = None, concurrency: int = SEARCH_CONCURRENCY,
                    split: str = "dev") -> dict:
    """``lab.cat_temperature`` on the finished SFT checkpoint, served with its profile (CaT's defaults:
    step delimiters, tau); results/lab/search/cat-temperature/ (dev: every setting) or cat-temperature-test/
    (the test split at the branch temperature dev chose per K, read from the dev table.json)."""
    from lab.cat_temperature import run_all, write
    from lab.recipe.sft import finished_sft

    model = finished_sft(model)
    if not (model / PROFILE_FILE).exists():
        raise SystemExit(f"{model} needs a profile: python -m lab.recipe calibrate-features --no-record --install "
                         "(the feature profile the committed runs served) or make lab-calibrate")
    dev_out = results_root() / "search" / "cat-temperature"
    out, settings, ks = dev_out, None, None
    if split != "dev":
        f = dev_out / "table.json"
        if not f.exists():
            raise SystemExit(f"{f} is missing: run make lab-cat-temperature (dev) first")
        chosen = json.loads(f.read_text())["chosen"]
        settings = [(c["temperature"], int(k)) for k, c in chosen.items()]
        ks = tuple(k for _, k in settings)
        out = results_root() / "search" / f"cat-temperature-{split}"
    t0, finished = time.time(), False
    try:
        with served(model, log=results_root() / "search" / f"server-cat-temperature-{split}.log") as base_url:
            summary = run_all(base_url, out, limit=limit, concurrency=concurrency, split=split, settings=settings,
                              **({"ks": ks, "temperatures": sorted({t for t, _ in settings})} if settings else {}))
        write(out, summary)
        finished = True
    finally:
        record_segment(str(out.relative_to(results_root())), t0, limit=limit,
                       **({} if finished else {"interrupted": True}))
    return summary["chosen"]
