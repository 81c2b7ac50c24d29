"""What a calibration profile costs outside what it was fitted on (issue #20, item 5). No server.

The served profile (``results/lab/calibration/sft_profile.json``) was fitted at n = 4 on CaT *stream* with a
*sampled* trunk (T = 0.7, ``confident_threshold`` 0.25, ``tau`` 0), and the search runs use it for CaT stream
with a greedy trunk (threshold 0.82, tau 0.67), CaT faithful and adaptive, and every strategy at K = 8. For each
committed search run this compares, on the run's own items:

* the ECE of the confidence it returned (the served map, fitted elsewhere);
* the ECE of a map fitted on what is served: 3-fold cross-fitting on the run's own raw scores
  (``eval.calibrate.fit_map`` on two thirds, scored on the third left out; every item scored once, never by a
  map that saw it);
* the raw ECE.

served - cross-fitted is the ECE the mismatch costs (cross-fitting on 200 items is itself a little pessimistic,
so the cost is if anything understated).

    python -m lab.profile_scope        # writes results/lab/search/profile_scope.md
    python -m lab.profile_scope --search results/lab/search/chosen --out results/lab/search/chosen/profile_scope.md

The second: the runs of ``make lab-search`` at the dev-chosen sampling (``--chosen``), where the served maps were
fitted at temperature 0.7 and the runs sample at 0.3-0.7 (``chosen_mismatch``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from eval import calibrate, metrics, runner
from lab.recipe import results_root

SEARCH = results_root() / "search"
OUT = SEARCH / "profile_scope.md"
# (run label, what the served map was fitted on differs by)
MISMATCH = {
    "SC": "fitted at n = 4", "PC": "fitted at n = 4", "RPC": "fitted at n = 4", "DeepConf": "fitted at n = 4",
    "CaT-stream": "fitted on a sampled trunk (T 0.7, threshold 0.25, tau 0); served greedy trunk",
    "CaT-adaptive": "fitted on stream mode; served adaptive (beam 1, sampled)",
    "CaT-faithful": "fitted on stream mode; served faithful (Algorithm 2)",
}


def cross_fit(raw: list[float], correct: list[bool], folds: int = 3) -> list[float]:
    """Out-of-fold calibrated confidences over contiguous folds."""
    out, n = [0.0] * len(raw), len(raw)
    for f in range(folds):
        a, b = f * n // folds, (f + 1) * n // folds
        score_map, _ = calibrate.fit_map(raw[:a] + raw[b:], correct[:a] + correct[b:])
        out[a:b] = [score_map(v) for v in raw[a:b]]
    return out


def chosen_mismatch(label: str, k: int, sampling: dict) -> str:
    """What differs between the served profile's map and a ``make lab-search --chosen`` run (``sampling``: the
    run's temperature/top_p). The profile installed in the checkpoint was fitted at T 0.7 (the voting strategies
    per width, ``<strategy>@K``; CaT on stream mode with a sampled trunk, at n = 4)."""
    t = f"T {sampling['temperature']}" + (f", top_p {sampling['top_p']}" if sampling.get("top_p", 1.0) != 1.0 else "")
    if label.startswith("CaT"):
        mode = label.split("-", 1)[1]
        return (f"fitted on stream mode, sampled trunk T 0.7, n = 4; served {mode} at branch {t}"
                + (", greedy trunk" if mode == "stream" else "") + (", dedup" if mode == "faithful" else "")
                + (f", K = {k}" if k != 4 else ""))
    return f"fitted at n = {k}, T 0.7; served at {t}"


def scope_rows(search: Path = SEARCH) -> list[dict]:
    rows = []
    for folder in sorted(search.glob("test-k*")):
        settings = json.loads((folder / "settings.json").read_text())
        order = {i: n for n, i in enumerate(settings["item_ids"])}
        for run in sorted(p.parent for p in folder.glob("*/summary.json")):
            label = run.name.split("_k")[0]
            if label not in MISMATCH:
                continue
            latest = runner.latest_by_id(runner.read_rows(run / runner.RESULTS))
            ok = sorted((r for r in latest.values() if not r.get("error") and r.get("raw_confidence") is not None
                         and r.get("confidence") is not None), key=lambda r: order.get(r["id"], 1 << 30))
            raw = [float(r["raw_confidence"]) for r in ok]
            served = [float(r["confidence"]) for r in ok]
            y = [bool(r["correct"]) for r in ok]
            own = cross_fit(raw, y)
            rows.append({"run": f"{folder.name}/{run.name}", "k": settings["k"], "n": len(ok),
                         "accuracy": float(np.mean(y)),
                         "mismatch": chosen_mismatch(label, settings["k"], settings["sampling"][label])
                         if label in settings.get("sampling", {}) else MISMATCH[label] if settings["k"] == 4 else (
                             MISMATCH[label] + ", at K = 8" if label.startswith("CaT") else "fitted at n = 4; served at K = 8"),
                         "raw_ece": metrics.ece(raw, y), "served_ece": metrics.ece(served, y),
                         "own_ece": metrics.ece(own, y)})
    return rows


def render(rows: list[dict]) -> str:
    lines = ["# The served profile outside what it was fitted on", "",
             "Generated by `python -m lab.profile_scope` from the committed search runs (see its docstring).", "",
             "| run | K | items | accuracy | raw ECE | served map ECE | own map ECE (3-fold cross-fit) | cost (served − own) | served map fitted on |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['k']} | {r['n']} | {r['accuracy']:.3f} | {r['raw_ece']:.3f} | "
                     f"{r['served_ece']:.3f} | {r['own_ece']:.3f} | {r['served_ece'] - r['own_ece']:+.3f} | "
                     f"{r['mismatch']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--search", type=Path, default=SEARCH)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    args.out.write_text(render(scope_rows(args.search)))
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
