"""Issue 20 item 4: calibration maps on more than one score, and one map per width (n = 4 and n = 8).

    python -m lab.recipe calibrate-features            # make lab-calibrate-features (resumable)

PC's confidence cannot be calibrated by a monotone map of its one score (issue 9: a raw 0.5-0.6 was right 0.565
of the time, 0.6-0.8 only 0.491). The voting strategies now report features beside their score
(``cat_serve.search.voting.VOTE_FEATURES``: the answer's share of the votes, one vote per path; the number of
distinct answers; the number of distinct paths behind the answer), and a profile map may be a logistic
regression over (raw score, features) (``cat_serve.calibration``, kind ``logistic``).

The committed large collection (results/lab/calibration/large) has no features in its rows, so its items are
collected again, the way ``lab.sweep`` does it: **record** 8 samples per item of ``LARGE_DATASET`` (all 1,200
items: fit 0-666, held-out 667-999 and fresh 1000-1199, the large profile's protocol) at its collection settings
(temperature 0.7, top_p 1, 160 tokens, seeded), in-process vLLM, resumable; **score** SC, PC, RPC and offline
DeepConf at n = 4 (the first four samples) and n = 8 from the same samples, through the server's own
``registry.run_search``: each returned answer's raw score, features and grade (``scored.jsonl``).

Per strategy and n, ``eval.calibrate.fit_map`` on the fit items picks by 5-fold CV log-loss among constant,
Platt and isotonic (the monotone maps of the raw score) and the logistic map over the features; the monotone
pick is reported beside it. Both are scored on the held-out and the fresh items: ECE, the ECE ratio to the raw
score's with a bootstrap interval by item (``eval.compare.ece_difference``), and issue 9's target (calibrated ECE
≤ ½ raw ECE or ≤ 0.05, on the point estimates, as ``eval.calibrate.evaluate``). CaT reports no features: its
row is the large collection's own rows, monotone maps only. The profile (``profile.json``) holds
``<strategy>@4`` and ``<strategy>@8`` maps, the n = 4 map as the plain ``<strategy>`` map for any other width, and
the large profile's CaT map and CaT defaults.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cat_serve.calibration import PROFILE_FILE, CalibrationProfile, model_fingerprint
from eval import calibrate, compare, metrics, runner
from eval.datasets import Item, load_dataset

from lab.sweep import SELECTORS, Setting, make_engine, read_recordings, record_setting, score_item
from lab.sweep import user_message as lab_sweep_user_message  # noqa: F401  (the prompt recorded: tests script it)

SETTING = Setting(0.7)  # cat-eval calibrate's collection temperature (the large profile's)
WIDTHS = (4, 8)
SAMPLES = max(WIDTHS)
PARTS = {"fit": (0, 667), "held-out": (667, 1000), "fresh": (1000, 1200)}  # the large profile's protocol
LIMIT = PARTS["fresh"][1]
# --extend: the same generator run to 4,000 items (its first 1,200 are the large collection's, same ids). The ECE of
# even a perfectly calibrated map is ~0.05-0.08 on 200-333 items (the "ECE floor" column), below which issue 20's
# target cannot be shown; each part grows by new items so that the floor drops to ~0.03: a part is a list of ranges,
# and the large protocol's part is inside the extended one.
EXTENDED_PARTS = {"fit": [(0, 667), (1200, 2600)], "held-out": [(667, 1000), (2600, 3300)],
                  "fresh": [(1000, 1200), (3300, 4000)],
                  # the large protocol's own parts, scored by the extended fit's maps (reported, not the verdict)
                  "held-out 667-999": (667, 1000), "fresh 1000-1199": (1000, 1200)}
EXTENDED_LIMIT = 4000


def ranges(spec) -> list[tuple[int, int]]:
    """A part's ranges: (a, b) or [(a, b), ...]."""
    return [tuple(spec)] if isinstance(spec[0], int) else [tuple(r) for r in spec]


def describe(parts: dict) -> str:
    """"fit 0-666, held-out 667-999, ..." (with "+" between a part's ranges)."""
    main = [f"{name} " + " + ".join(f"{a}-{b - 1}" for a, b in ranges(spec)) for name, spec in parts.items()
            if name in ("fit", *EVALUATED)]
    extra = [name for name in parts if name not in ("fit", *EVALUATED)]  # named by their range already
    return ", ".join(main) + (f"; also scored: {', '.join(extra)}" if extra else "")
EVALUATED = ("held-out", "fresh")  # the target's parts; any other part but "fit" is reported beside them


def evaluated(rep: dict) -> list[str]:
    """The parts a report scored: EVALUATED first, then the others in their order."""
    return [*EVALUATED, *(name for name in rep if name not in ("fit", *EVALUATED))]


def load_items(dataset: str, limit: int, seed: int = 0, base: str | None = None) -> list[Item]:
    """``limit`` items of ``dataset`` in its seeded order. ``base`` (a smaller collection of the same generator,
    whose items ``dataset`` contains): ``base``'s items first, in ``base``'s order, then ``dataset``'s others in
    theirs, so that a part's ranges below ``len(base)`` are ``base``'s own items (a seeded order is a
    permutation of the whole collection: the first 1,200 of 4,000 shuffled are not the 1,200's)."""
    every = 1 << 62  # a limit: the seeded shuffle of the whole collection (no limit keeps the file order)
    items = load_dataset(dataset, limit=every, seed=seed)
    if base is not None:
        first = load_dataset(base, limit=every, seed=seed)
        ids = {it.id for it in first}
        missing = ids - {it.id for it in items}
        if missing:
            raise ValueError(f"{base} is not inside {dataset} ({len(missing)} items missing)")
        items = first + [it for it in items if it.id not in ids]
    return items[:limit]


def rows_of(scored: Sequence[dict], label: str, k: int) -> list[dict]:
    """``scored.jsonl`` entries -> rows in ``cat-eval calibrate``'s shape (what ``eval.calibrate.labelled`` reads)."""
    out = []
    for r in scored:
        e = r["k"][str(k)][label] if str(k) in r["k"] else r["k"][k][label]
        out.append({"id": r["id"], "correct": e["correct"], "raw_confidence": e["raw"],
                    "search": {"answer": e["answer"], "features": e["features"]}, "error": None})
    return out


def part(rows: Sequence[dict], ids: Sequence[str]) -> list[dict]:
    by_id = runner.latest_by_id(rows)
    return [by_id[i] for i in ids if i in by_id]


FLOOR_DRAWS = 500  # outcome draws of the ECE floor


def ece_floor(p: Sequence[float], draws: int = FLOOR_DRAWS, seed: int = 0) -> float:
    """The ECE a perfectly calibrated map would show on these items: the mean ECE of the predictions ``p`` against
    outcomes drawn from them (Bernoulli(p)). Binned ECE on a few hundred items is biased upward; a calibrated ECE
    at this floor is as good as the items can show."""
    p = np.asarray(p, float)
    rng = np.random.default_rng(seed)
    return float(np.mean([metrics.ece(p, rng.random(len(p)) < p) for _ in range(draws)]))


def score_part(score_map, rows: Sequence[dict]) -> dict:
    """``eval.calibrate.evaluate`` of one part, the ECE ratio calibrated / raw with its bootstrap interval, the
    log-loss (a proper score: calibration and sharpness together) and the ECE floor of the calibrated values."""
    x, y = calibrate.labelled(rows)
    feats = calibrate.labelled_features(rows)
    e = calibrate.evaluate(score_map, x, y, feats)
    cal = [score_map(v, feats[i] if feats else None) for i, v in enumerate(x)]
    _, ratio = compare.ece_difference(cal, y, x, y, compare.bootstrap_indices(len(x)))
    yy = np.asarray(y, float)
    return {"n": e["n"], "accuracy": e["accuracy"], "raw_ece": e["raw"]["ece"], "ece": e["calibrated"]["ece"],
            "auroc": e["calibrated"]["auroc"], "raw_auroc": e["raw"]["auroc"], "brier": e["calibrated"]["brier"],
            "log_loss": calibrate._log_loss(yy, np.asarray(cal, float)), "ece_floor": ece_floor(cal),
            "ratio": {"estimate": ratio.estimate, "lo": ratio.lo, "hi": ratio.hi},
            "meets_target": e["meets_target"], "halves": compare.halves(ratio.lo, ratio.hi)}


def fit_strategy(rows: Sequence[dict], ids: dict[str, list[str]]) -> tuple[dict, dict]:
    """(maps: {"chosen", "monotone"}, report) for one strategy and width."""
    fit_rows = part(rows, ids["fit"])
    x, y = calibrate.labelled(fit_rows)
    chosen, chosen_fit = calibrate.fit_map(x, y, calibrate.labelled_features(fit_rows))
    monotone, mono_fit = calibrate.fit_map(x, y)
    report = {"fit": {"n": len(x), "chosen": chosen_fit["chosen"], "cv_log_loss": chosen_fit["cv_log_loss"],
                      **({"features": chosen_fit["features"]} if "features" in chosen_fit else {}),
                      "monotone": mono_fit["chosen"]}}
    for name in [*EVALUATED, *(n for n in ids if n not in ("fit", *EVALUATED))]:
        held = part(rows, ids[name])
        report[name] = {"chosen": score_part(chosen, held), "monotone": score_part(monotone, held)}
    return {"chosen": chosen, "monotone": monotone}, report


def item_ids(items: Sequence[Item], parts: dict | None = None) -> dict[str, list[str]]:
    return {name: [it.id for a, b in ranges(spec) for it in items[a:b]] for name, spec in (parts or PARTS).items()}


def cat_rows(large: Path) -> list[dict]:
    """CaT's rows of the large collection (its fit/held-out runs and its fresh items)."""
    rows = []
    for sub in ("runs", "fresh"):
        path = large / sub / "cat" / runner.RESULTS
        rows += runner.read_rows(path) if path.is_file() else []
    return rows


def fit_all(scored: Sequence[dict], items: Sequence[Item], large: Path, widths: Sequence[int] = WIDTHS,
            parts: dict | None = None) -> tuple[dict, dict]:
    """(maps by profile key, reports by (strategy label, width)) for every voting strategy and width, and CaT."""
    ids = item_ids(items, parts)
    maps, reports = {}, {}
    for label, name in SELECTORS:
        for k in widths:
            fitted, reports[f"{label}@{k}"] = fit_strategy(rows_of(scored, label, k), ids)
            maps[f"{name}@{k}"] = fitted["chosen"]
            if k == widths[0]:
                maps[name] = fitted["chosen"]  # any other width: the n = 4 map (issue 20 item 5 measures its cost)
    if (large / "runs" / "cat").is_dir():
        fitted, reports["CaT-stream@4"] = fit_strategy(cat_rows(large), ids)
        maps["cat"] = fitted["chosen"]
    return maps, reports


def _f(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def render(reports: dict, info: dict) -> str:
    lines = [
        "# Calibration maps on more than one score (issue 20 item 4)", "",
        f"Generated by `python -m lab.recipe calibrate-features` (make lab-calibrate-features) on {info['model']}: "
        f"{info['n']} items of `{info['dataset']}` ({describe(info.get('parts') or PARTS)}; an item not "
        "recorded is left out of its part"
        + (f"; items 0-{info['base_n'] - 1} are `{info['base']}`'s, in its order, so its parts lie inside these"
           if info.get("base") else "") + "), "
        f"{info['samples']} samples per item at temperature {SETTING.temperature}, top_p {SETTING.top_p}; "
        f"SC, PC, RPC and offline DeepConf scored at n = {' and '.join(map(str, info['widths']))} from the same samples "
        "(a smaller n takes the first n). "
        f"Model fingerprint {info.get('fingerprint')}. CaT-stream@4: the large collection's own rows (CaT reports no "
        f"features), collected on the checkpoint with fingerprint {info.get('cat_fingerprint')}.", "",
        "**chosen**: the map with the lowest 5-fold CV log-loss on the fit items among constant, Platt, isotonic and "
        "logistic over (raw, vote_share, distinct_answers, distinct_paths); **monotone**: the best of the first three "
        "(what profiles held before). ECE ratio: calibrated / raw, bootstrap 95 % interval by item (2,000 resamples). "
        "Target (issue 9): calibrated ECE ≤ ½ raw ECE or ≤ 0.05. **ECE floor**: the ECE a perfectly calibrated map "
        f"would show on these items (the chosen map's values against outcomes drawn from them, mean of {FLOOR_DRAWS} "
        "draws): 15-bin ECE on a few hundred items is biased upward, so a target below the floor cannot be shown on them. "
        "Log-loss (a proper score) on the same items: monotone → chosen.", "",
        "| strategy | chosen map | part | n | acc | raw ECE | monotone ECE | chosen ECE | ECE floor | ratio [95 % CI] | "
        "log-loss monotone → chosen | AUROC raw → chosen | target met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, rep in reports.items():
        for name in evaluated(rep):
            c, m = rep[name]["chosen"], rep[name]["monotone"]
            r = c["ratio"]
            lines.append(f"| {key} | {rep['fit']['chosen']} | {name} | {c['n']} | {_f(c['accuracy'])} | "
                         f"{_f(c['raw_ece'])} | {_f(m['ece'])} | {_f(c['ece'])} | {_f(c.get('ece_floor'))} | "
                         f"{_f(r['estimate'], 2)} [{_f(r['lo'], 2)}, {_f(r['hi'], 2)}] | "
                         f"{_f(m.get('log_loss'))} → {_f(c.get('log_loss'))} | {_f(c['raw_auroc'])} → {_f(c['auroc'])} | "
                         f"{'yes' if c['meets_target'] else 'no'} |")
    lines += ["", verdict(reports), ""]
    return "\n".join(lines)


def verdict(reports: dict) -> str:
    """Issue 20 item 4's acceptance line for PC (both widths, both parts)."""
    out = []
    for key, rep in reports.items():
        if not key.startswith("PC@"):
            continue
        parts = [f"{name} ECE {_f(rep[name]['chosen']['ece'])} (floor {_f(rep[name]['chosen'].get('ece_floor'))}) "
                 f"vs raw {_f(rep[name]['chosen']['raw_ece'])} "
                 f"(ratio {_f(rep[name]['chosen']['ratio']['estimate'], 2)} [{_f(rep[name]['chosen']['ratio']['lo'], 2)}, "
                 f"{_f(rep[name]['chosen']['ratio']['hi'], 2)}])"
                 + ("" if name in EVALUATED else f", target {'met' if rep[name]['chosen']['meets_target'] else 'not met'}")
                 for name in evaluated(rep)]
        met = all(rep[name]["chosen"]["meets_target"] for name in EVALUATED)
        out.append(f"- {key} with its {rep['fit']['chosen']} map meets the target on held-out and fresh items: "
                   f"{'held' if met else 'did not hold'} ({'; '.join(parts)}).")
    return "\n".join(out)


async def score_all(items: Sequence[Item], recs: dict, widths: Sequence[int] = WIDTHS) -> list[dict]:
    return [await score_item(it, recs[it.id], widths) for it in items if it.id in recs]


def run(model: Path, *, out: Path, recordings: Path, large: Path, dataset: str, limit: int = LIMIT,
        seed: int = 0, concurrency: int = 8, samples: int = SAMPLES, record: bool = True,
        install: bool = False, parts: dict | None = None, base: str | None = None) -> dict:
    """Record what is missing (unless ``record`` is False: score what is recorded), score, fit, and write
    ``out``/{table.md, profile.json, scored.jsonl, record.jsonl}. ``samples`` < 8 fits the widths it covers.
    ``install``: also save the profile as the checkpoint's ``cat_calibration.json`` (what its server then loads)."""
    widths = tuple(w for w in WIDTHS if w <= samples)
    from lab.sweep import MAX_TOKENS, check_meta

    items = load_items(dataset, limit, seed, base) if base else load_items(dataset, limit, seed)
    check_meta(recordings, {"model": str(model), "dataset": dataset, "seed": seed, "max_tokens": MAX_TOKENS,
                            "samples": samples})
    path = recordings / f"{SETTING.name}.jsonl"
    stats, t0 = None, time.time()
    if record and len(read_recordings(path)) < len(items):
        async def record_missing() -> dict:
            engine = make_engine(model)
            try:
                return await record_setting(engine, items, SETTING, path, n_samples=samples, seed=seed,
                                            concurrency=concurrency)
            finally:
                await engine.close()
        stats = asyncio.run(record_missing())
    scored = asyncio.run(score_all(items, read_recordings(path), widths))
    parts = parts or PARTS
    maps, reports = fit_all(scored, items, large, widths, parts)
    old = CalibrationProfile.load(large / "profile.json") if (large / "profile.json").is_file() else None
    profile = CalibrationProfile(
        maps=maps, search_defaults=old.search_defaults if old else {},
        provenance={"dataset": dataset, "items": {n: sum(b - a for a, b in ranges(spec)) for n, spec in parts.items()
                              if n in ("fit", *EVALUATED)}, "model": model.name,
                    "model_fingerprint": model_fingerprint(model),
                    "collection": {"temperature": SETTING.temperature, "top_p": SETTING.top_p,
                                   "max_tokens": MAX_TOKENS, "samples": samples, "seed": seed},
                    "cat": "maps and defaults of the large collection's rows (results/lab/calibration/large)",
                    "command": "python -m lab.recipe calibrate-features"},
        evaluation=reports)
    out.mkdir(parents=True, exist_ok=True)
    profile.save(out / "profile.json")
    if install:
        profile.save(model / PROFILE_FILE)
    info = {"model": model.name, "n": len(scored), "dataset": dataset, "samples": samples, "widths": widths, "parts": parts,
            **({"base": base, "base_n": len(load_items(base, LIMIT, seed))} if base else {}),
            "fingerprint": model_fingerprint(model), "cat_fingerprint": old.provenance.get("model_fingerprint") if old else None}
    (out / "table.md").write_text(render(reports, info))
    with open(out / "scored.jsonl", "w") as f:  # per item, width and strategy: grade, raw score and features
        f.writelines(json.dumps({"id": r["id"], "k": r["k"]}) + "\n" for r in scored)
    if stats:
        with open(out / "record.jsonl", "a") as f:
            f.write(json.dumps({**stats, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0))}) + "\n")
    return reports


def refit(out: Path, items: Sequence[Item], large: Path, parts: dict | None = None) -> dict:
    """Fit again from ``out``/scored.jsonl (no recordings needed): the committed tables' check."""
    scored = [json.loads(line) for line in (out / "scored.jsonl").read_text().splitlines()]
    widths = tuple(sorted(int(k) for k in scored[0]["k"]))
    _, reports = fit_all(scored, items, large, widths, parts)
    return reports

