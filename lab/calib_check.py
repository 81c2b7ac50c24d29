"""How much of the lab profile's held-out verdict is the split? (issue #9's target on the lab model)

Reads the calibration runs under results/lab/calibration/runs/ (no server) and writes
results/lab/calibration/split_check.md:

1. accuracy of each strategy in consecutive 50-item blocks of the collection order (item difficulty
   and sampling noise, shared across strategies);
2. the profile's own protocol (fit on the first two thirds of 300 items, the map of
   ``eval.calibrate.fit_map``) scored on the last 100 and, for DeepConf, on the 100 items beyond;
3. 3-fold cross-fitting: each third scored by a map fitted on the other two, ECE of the pooled
   out-of-fold predictions (every item held out once, never by a map that saw it);
4. the ECE a perfectly calibrated map shows on that many items (simulated).

    python -m lab.calib_check            # the 300-item profile (make lab-calibrate)
    python -m lab.calib_check --large    # the 1000-item one (make lab-calibrate-large): large/split_check.md

``--large`` also scores the held-out third with each kind of map (isotonic, Platt) fitted on the fit split,
beside the one the cross-validated log-loss chose.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cat_serve.calibration import CalibrationProfile
from eval import calibrate, metrics
from eval.datasets import load_dataset
from lab.recipe import LAB_DIFFICULTY, LARGE_DATASET

RUNS = Path("results/lab/calibration/runs")
DATASET, OFFSET, LIMIT = f"arith:{LAB_DIFFICULTY}@dev", 100, 400  # recipe's CALIBRATE_ARGS, to the end of dev


@dataclass(frozen=True)
class Check:
    """Where a profile's runs are and how its items were split (fit = ``rows[:fit]``)."""
    runs: Path
    dataset: str
    offset: int
    limit: int
    fit: int  # the profile's fit split: its first ``fit`` items
    held_out: tuple[tuple[int, int], ...]  # item ranges scored by that map
    cross_fit_sizes: tuple[int, ...]  # 3-fold cross-fitting on the first n items
    command: str


SMALL = Check(RUNS, DATASET, OFFSET, LIMIT, 200, ((200, 300), (300, 400), (200, 400)), (300, 400),
              "python -m lab.calib_check")
LARGE = Check(RUNS.parent / "large" / "runs", LARGE_DATASET, 0, 1000, 667, ((667, 1000),), (1000,),
              "python -m lab.calib_check --large")
# recipe's FRESH_ARGS: the 200 items after LARGE's 1000, scored by the large profile's maps
FRESH = replace(LARGE, runs=RUNS.parent / "large" / "fresh", offset=1000, limit=200)


def rows_in_order(strategy: str, check: Check = SMALL) -> list[dict]:
    items = load_dataset(check.dataset, limit=check.offset + check.limit, seed=0)[check.offset:]
    latest = {}
    for line in (check.runs / strategy / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        latest[row["id"]] = row
    return [latest[it.id] for it in items if it.id in latest]


def cross_fit_ece(rows: list[dict], folds: int = 3) -> tuple[float, float]:
    """(raw, calibrated) ECE of pooled out-of-fold predictions over contiguous folds."""
    raw, cal, ys = [], [], []
    n = len(rows)
    for f in range(folds):
        a, b = f * n // folds, (f + 1) * n // folds
        score_map, _ = calibrate.fit_map(*calibrate.labelled(rows[:a] + rows[b:]))
        x, y = calibrate.labelled(rows[a:b])
        raw += x
        cal += [score_map(v) for v in x]
        ys += y
    return metrics.ece(raw, ys), metrics.ece(cal, ys)


def fresh_section(data: dict[str, list[dict]], profile: CalibrationProfile) -> list[str]:
    """The large profile's own maps (fitted on LARGE's fit split) on FRESH's items (collected by
    ``python -m lab.recipe calibrate --fresh``), and on those pooled with its held-out items."""
    a, b = LARGE.held_out[0]
    last = FRESH.offset + FRESH.limit - 1
    out = ["", f"## The profile's maps on fresh items {FRESH.offset}-{last} and pooled with its held-out "
           "items", "", "Collected by `python -m lab.recipe calibrate --fresh` (same settings) after the profile "
           "was fitted; its maps are not refitted.", "",
           "| strategy | items | n | acc | raw ECE | calibrated ECE | target met |", "|---|---|---|---|---|---|---|"]
    for s, rows in data.items():
        if not (FRESH.runs / s / "results.jsonl").exists() or not profile.has_map(s):
            continue
        new = rows_in_order(s, FRESH)
        for label, part in ((f"{FRESH.offset}-{last} (fresh)", new), (f"{a}-{last} (held-out + fresh)", rows[a:b] + new)):
            e = calibrate.evaluate(profile.maps[s], *calibrate.labelled(part))
            out.append(f"| {s} | {label} | {e['n']} | {e['accuracy']:.3f} | {e['raw']['ece']:.3f} | "
                       f"{e['calibrated']['ece']:.3f} | {e['meets_target']} |")
    return out


def build(check: Check = SMALL) -> str:
    runs = check.runs
    out = ["# Lab profile: how much of the held-out verdict is the split", "",
           f"Generated by `{check.command}` from `{check.runs}/`.", "",
           "## Accuracy per 50-item block (collection order)", "", "| strategy | blocks |", "|---|---|"]
    data = {s: rows_in_order(s, check) for s in calibrate.STRATEGIES if (runs / s / "results.jsonl").exists()}
    fit = check.fit
    fits = {s: calibrate.fit_map(*calibrate.labelled(rows[:fit])) for s, rows in data.items()}  # the profile's fit
    maps = {s: m for s, (m, _) in fits.items()}
    for s, rows in data.items():
        blocks = " ".join(f"{np.mean([r['correct'] for r in rows[a:a + 50]]):.2f}" for a in range(0, len(rows), 50))
        out.append(f"| {s} | {blocks} |")
    out += ["", f"## The profile's protocol: map fitted on items 0-{fit - 1}, scored on later items", "",
            "| strategy | held-out items | n | acc | raw ECE | calibrated ECE | target met |", "|---|---|---|---|---|---|---|"]
    for s, rows in data.items():
        for a, b in check.held_out:
            if len(rows) < b:
                continue
            e = calibrate.evaluate(maps[s], *calibrate.labelled(rows[a:b]))
            out.append(f"| {s} | {a}-{b - 1} | {e['n']} | {e['accuracy']:.3f} | {e['raw']['ece']:.3f} | "
                       f"{e['calibrated']['ece']:.3f} | {e['meets_target']} |")
    if check is LARGE:
        out += ["", "## Each kind of map fitted on the fit split, scored on the held-out items", "",
                "| strategy | chosen (CV log-loss) | isotonic ECE | Platt ECE |", "|---|---|---|---|"]
        for s, rows in data.items():
            if len(rows) < check.held_out[0][1]:
                continue
            x, y = (np.asarray(v, float) for v in calibrate.labelled(rows[:fit]))
            hx, hy = calibrate.labelled(rows[slice(*check.held_out[0])])
            eces = [metrics.ece([m(v) for v in hx], hy) for m in (calibrate._fit_one(k, x, y) for k in ("isotonic", "platt"))]
            out.append(f"| {s} | {fits[s][1]['chosen']} | {eces[0]:.3f} | {eces[1]:.3f} |")
        if (runs.parent / "profile.json").exists() and FRESH.runs.exists():
            out += fresh_section(data, CalibrationProfile.load(runs.parent / "profile.json"))
    out += ["", "## 3-fold cross-fitting (pooled out-of-fold ECE)", "",
            "| strategy | items | raw ECE | calibrated ECE | ratio | target met |", "|---|---|---|---|---|---|"]
    for s, rows in [(s, r[:n]) for s, r in data.items()
                    for n in sorted({*check.cross_fit_sizes[:1], len(r)}) if n <= len(r)]:
        raw, cal = cross_fit_ece(rows)
        out.append(f"| {s} | {len(rows)} | {raw:.3f} | {cal:.3f} | {cal / raw:.2f} | {cal <= 0.5 * raw or cal <= 0.05} |")
    out += ["", "## ECE of a perfect map on n items (simulated)", "",
            "Outcomes drawn as Bernoulli(p) with p = the map's own outputs on the held-out items, 2000 draws "
            "(seed 0): the ECE a perfectly calibrated map still shows at that n.", "",
            "| strategy | n | mean ECE | 90th percentile |", "|---|---|---|---|"]
    rng = np.random.default_rng(0)
    for s, rows in data.items():
        p = np.array([maps[s](v) for v in calibrate.labelled(rows[slice(*check.held_out[0])])[0]])
        if p.size == 0:  # a part-way collection
            continue
        sims = [metrics.ece(list(p), list(rng.random(p.size) < p)) for _ in range(2000)]
        out.append(f"| {s} | {p.size} | {np.mean(sims):.3f} | {np.quantile(sims, 0.9):.3f} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--large", action="store_true", help="the 1000-item profile's runs (make lab-calibrate-large)")
    check = LARGE if ap.parse_args(argv).large else SMALL
    text = build(check=check)
    (check.runs.parent / "split_check.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
