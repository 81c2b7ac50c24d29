"""``python -m lab.recipe calibrate-features`` (make lab-calibrate-features): issue 20 item 4 on the SFT checkpoint,
``lab.calib_features`` (in-process vLLM, no server). Resumable: recorded items are skipped on a re-run; the table
and profile are rewritten from every recording."""

from __future__ import annotations

import time
from pathlib import Path

from lab.recipe import LARGE_DATASET, SEARCH_CONCURRENCY, cache_root, results_root
from lab.recipe.runs import record_segment


def calibrate_features(*, model: Path | None = None, out: Path | None = None, recordings: Path | None = None,
                       limit: int | None = None, concurrency: int = SEARCH_CONCURRENCY, samples: int | None = None,
                       record: bool = True, install: bool = False) -> dict:
    """Record, score and fit; the SFT checkpoint by default, which must be finished (make lab-sft trains it)."""
    from lab.calib_features import LIMIT, SAMPLES, run
    from lab.recipe.sft import finished_sft

    model = finished_sft(model)
    root = results_root() / "calibration"
    t0, finished = time.time(), False
    try:
        reports = run(model, out=out or root / "features",
                      recordings=recordings or cache_root() / "calibration-features" / model.name,
                      large=root / "large", dataset=LARGE_DATASET, limit=limit or LIMIT, concurrency=concurrency,
                      samples=samples or SAMPLES, record=record, install=install)
        finished = True
    finally:
        record_segment("calibration/features", t0, model=str(model), **({} if record else {"scored_only": True}),
                       **({} if finished else {"interrupted": True}))
    return reports
