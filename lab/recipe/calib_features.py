"""``python -m lab.recipe calibrate-features`` (make lab-calibrate-features): issue 20 item 4 on the SFT checkpoint,
``lab.calib_features`` (in-process vLLM, no server). Resumable: recorded items are skipped on a re-run; the table
and profile are rewritten from every recording."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from lab.recipe import LARGE_DATASET, SEARCH_CONCURRENCY, cache_root, results_root
from lab.recipe.runs import record_segment


def calibrate_features(*, model: Path | None = None, out: Path | None = None, recordings: Path | None = None,
                       limit: int | None = None, concurrency: int = SEARCH_CONCURRENCY, samples: int | None = None,
                       record: bool = True, install: bool = False, extend: bool = False) -> dict:
    """Record, score and fit; the SFT checkpoint by default, which must be finished (make lab-sft trains it).
    ``extend``: the extended protocol (4,000 items, each part grown by new items; features-extended/), whose
    recordings start from a copy of the 1,200-item collection's (the same items, ids and samples)."""
    from lab.calib_features import EXTENDED_LIMIT, EXTENDED_PARTS, LIMIT, SAMPLES, SETTING, run
    from lab.recipe.sft import finished_sft

    model = finished_sft(model)
    root = results_root() / "calibration"
    base_recordings = cache_root() / "calibration-features" / model.name
    dataset, parts, base = LARGE_DATASET, None, None
    if extend:  # the 1,200 items first (base), in their order: the large protocol's parts sit inside the extended
        dataset, parts, base = LARGE_DATASET.replace(f"n={LIMIT}@", f"n={EXTENDED_LIMIT}@"), EXTENDED_PARTS, LARGE_DATASET
        limit, out = limit or EXTENDED_LIMIT, out or root / "features-extended"
        if recordings is None:
            recordings = base_recordings.with_name(f"{model.name}-n{EXTENDED_LIMIT}")
            src, dst = base_recordings / f"{SETTING.name}.jsonl", recordings / f"{SETTING.name}.jsonl"
            if src.is_file() and not dst.exists():
                recordings.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
    t0, finished = time.time(), False
    try:
        reports = run(model, out=out or root / "features",
                      recordings=recordings or base_recordings,
                      large=root / "large", dataset=dataset, limit=limit or LIMIT, concurrency=concurrency,
                      samples=samples or SAMPLES, record=record, install=install, parts=parts, base=base)
        finished = True
    finally:
        record_segment("calibration/features-extended" if extend else "calibration/features", t0, model=str(model), **({} if record else {"scored_only": True}),
                       **({} if finished else {"interrupted": True}))
    return reports
