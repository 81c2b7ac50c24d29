"""``python -m lab.recipe sweep`` (make lab-sweep): issue 20 item 2, the dev sampling sweep of ``lab.sweep`` on the
SFT checkpoint (in-process vLLM, no server). Resumable: recorded items are skipped on a re-run, the tables are
rewritten from every recording."""

from __future__ import annotations

import json
import time
from pathlib import Path

from lab.recipe import SEARCH_CONCURRENCY, cache_root, results_root
from lab.recipe.runs import record_segment


def recordings_dir(model: Path, split: str = "dev") -> Path:
    """The recorded samples (top-20 logprobs per token: tens of MB for 200 items) live in the cache, per model
    and split."""
    return cache_root() / "sampling-sweep" / (model.name if split == "dev" else f"{model.name}-{split}")


def out_dir(split: str) -> Path:
    """results/lab/search/sampling-sweep (dev: the sweep) or sampling-<split> (the run at the chosen settings)."""
    return results_root() / "search" / ("sampling-sweep" if split == "dev" else f"sampling-{split}")


def sampling_sweep(limit: int, *, model: Path | None = None, out: Path | None = None, recordings: Path | None = None,
                   temperatures: tuple[float, ...] | None = None, ks: tuple[int, ...] | None = None,
                   concurrency: int = SEARCH_CONCURRENCY, top_p_alt: float | None = None, split: str = "dev") -> dict:
    """Record and score the sweep; the SFT checkpoint by default, which must be finished (this never trains:
    make lab-sft does)."""
    from lab.recipe.sft import finished_sft
    from lab.sweep import KS, TEMPERATURES, TOP_P_ALT, sweep

    model = finished_sft(model)
    out = out or out_dir(split)
    dev_chosen, top_p_temperature = None, None
    if split != "dev":  # the settings the dev sweep chose, and no others: nothing is chosen on this split
        f = out_dir("dev") / "chosen.json"
        if not f.exists():
            raise SystemExit(f"{f} is missing: run the dev sweep (make lab-sweep) first")
        dev_chosen = json.loads(f.read_text())
        picked = {(c["temperature"], c["top_p"]) for by_k in dev_chosen["chosen"].values() for c in by_k.values()}
        temperatures = tuple(sorted({t for t, p in picked if p == 1.0}))
        alts = sorted({(t, p) for t, p in picked if p < 1.0})
        if len(alts) > 1:
            raise SystemExit(f"the dev sweep chose more than one top_p setting: {alts}")
        top_p_temperature, top_p_alt = alts[0] if alts else (None, 1.0)
    t0, finished = time.time(), False
    try:
        chosen = sweep(model, limit=limit, out=out, recordings=recordings or recordings_dir(model, split),
                       temperatures=temperatures or TEMPERATURES, ks=ks or KS, concurrency=concurrency,
                       top_p_alt=TOP_P_ALT if top_p_alt is None else top_p_alt, split=split,
                       top_p_temperature=top_p_temperature, dev_chosen=dev_chosen)
        finished = True
    finally:
        record_segment(str(out_dir(split).relative_to(results_root())), t0, limit=limit, model=str(model),
                       **({} if finished else {"interrupted": True}))
    print(json.dumps(chosen, indent=2))
    return chosen
