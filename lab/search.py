"""Lab experiment 3a: search strategies on the SFT model (analogue of the CaT paper's Tables 2 and 5).

    python -m lab.search --base-url http://127.0.0.1:8100/v1 --split dev --k 4 --limit 100

One ``cat-eval`` run (``eval.runner``) per strategy, on the same ``arith`` items, each resumable on its
own: ``<out>/<split>-k<K>/<label>/results.jsonl`` (+ ``summary.json``, ``reliability.png``). Then
``table.csv`` / ``table.json``: accuracy with a 95 % Wilson interval, tokens per query, p50/p95
latency, token and accuracy ratios to SC@K, ECE / Brier / AUROC of the returned confidence, and
``cost_accuracy.png``. Re-running skips finished items, so an interrupted run finishes where it stopped.

Strategies: greedy (``none``), SC@K, PC@K (``ppl_consistency``), RPC@K, DeepConf@K and CaT in its
faithful, adaptive and stream modes (``branches`` = K). ``--cat-params`` adds settings for every CaT
mode (chosen on dev).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from dataclasses import replace
from pathlib import Path

from eval import runner
from eval.bench import default_search_params
from eval.datasets import load_dataset

from lab.recipe import LAB_DIFFICULTY


def strategies(k: int, cat_params: dict | None = None, by_mode: dict | None = None) -> list[tuple[str, str, dict]]:
    """(label, search name, search params) of every strategy at K; ``by_mode`` adds per-mode CaT settings
    (chosen on dev) over ``cat_params``."""
    cat_params, by_mode = cat_params or {}, by_mode or {}

    def cat(mode: str) -> tuple[str, str, dict]:
        return (f"CaT-{mode}@{k}", "cat", {**default_search_params("cat", k), **cat_params, **by_mode.get(mode, {}),
                                           "mode": mode})

    def sampled(label: str, name: str) -> tuple[str, str, dict]:
        return (f"{label}@{k}", name, default_search_params(name, k))

    # cheapest first, so that an interrupted run has the headline comparison (CaT vs SC) soonest
    return [("greedy", "none", {}), sampled("SC", "self_consistency"), cat("stream"), cat("adaptive"),
            sampled("PC", "ppl_consistency"), sampled("RPC", "rpc"), sampled("DeepConf", "deepconf"), cat("faithful")]


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float | None, float | None]:
    """95 % Wilson score interval of a proportion."""
    if n == 0:
        return None, None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return centre - half, centre + half


def table_rows(summaries: dict[str, dict], k: int) -> list[dict]:
    sc = summaries.get(f"SC@{k}") or {}
    rows = []
    for label, s in summaries.items():
        n, acc = s.get("n") or 0, s.get("accuracy")
        lo, hi = wilson(round((acc or 0) * n), n)
        tok = s.get("tokens_per_query")
        rows.append({
            "strategy": label, "n": n, "accuracy": acc, "acc_lo95": lo, "acc_hi95": hi,
            "tokens_per_query": tok,
            "tokens_vs_sc": tok / sc["tokens_per_query"] if tok and sc.get("tokens_per_query") else None,
            "acc_minus_sc": acc - sc["accuracy"] if acc is not None and sc.get("accuracy") is not None else None,
            "latency_p50_s": s.get("latency_p50_s"), "latency_p95_s": s.get("latency_p95_s"),
            "ece": s.get("ece"), "brier": s.get("brier"), "auroc": s.get("auroc"),
            "n_errors": s.get("n_errors"),
        })
    return rows


def write_table(rows: list[dict], out: Path) -> None:
    with open(out / "table.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "table.json").write_text(json.dumps(rows, indent=2) + "\n")


def cost_plot(rows: list[dict], path: Path, title: str) -> None:
    from eval.report import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        if r["tokens_per_query"] is None or r["accuracy"] is None:
            continue
        err = [[r["accuracy"] - r["acc_lo95"]], [r["acc_hi95"] - r["accuracy"]]]
        ax.errorbar(r["tokens_per_query"], r["accuracy"], yerr=err, fmt="o", capsize=3)
        ax.annotate(r["strategy"], (r["tokens_per_query"], r["accuracy"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("tokens per query (log)")
    ax.set_ylabel("accuracy (95% interval)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_search(base_url: str, *, split: str, k: int, limit: int, out: Path, difficulty: str = LAB_DIFFICULTY,
               cat_params: dict | None = None, only: list[str] | None = None, concurrency: int = 4,
               max_tokens: int = 160, seed: int = 0, by_mode: dict | None = None,
               temperature: float | None = None, sampling: dict | None = None) -> list[dict]:
    """``temperature``: the requests' (None: the runner's default, 0 for greedy and 0.7 for the sampled ones).
    ``sampling``: per strategy (label without @K), its own {"temperature", "top_p"} over ``temperature``."""
    sampling = sampling or {}
    dataset = f"arith:{difficulty}@{split}"
    items = load_dataset(dataset, limit=limit, seed=seed)
    folder = out / f"{split}-k{k}"
    folder.mkdir(parents=True, exist_ok=True)
    base = runner.RunConfig(base_url=base_url, out_dir=folder, dataset=dataset, concurrency=concurrency,
                            max_tokens=max_tokens, progress=False, temperature=temperature)
    (folder / "settings.json").write_text(json.dumps(
        {"dataset": dataset, "limit": limit, "seed": seed, "k": k, "max_tokens": max_tokens,
         "concurrency": concurrency, "cat_params": cat_params or {}, "cat_params_by_mode": by_mode or {},
         **({"temperature": temperature} if temperature is not None else {}),
         **({"sampling": sampling} if sampling else {}),
         "item_ids": [it.id for it in items]}, indent=2) + "\n")
    summaries = {}
    for label, name, params in strategies(k, cat_params, by_mode):
        if only and label.split("@")[0] not in only:
            continue
        cfg = replace(base, search=name, search_params=params, out_dir=folder / label.replace("@", "_k"),
                      **sampling.get(label.split("@")[0], {}))
        summaries[label] = runner.run(cfg, items)
        s = summaries[label]
        print(json.dumps({"strategy": label, "n": s["n"], "accuracy": s["accuracy"],
                          "tokens_per_query": s["tokens_per_query"], "errors": s["n_errors"]}), flush=True)
    return tabulate(folder, k, [label for label, _, _ in strategies(k)], summaries)


def tabulate(folder: Path, k: int, labels: list[str], summaries: dict[str, dict] | None = None) -> list[dict]:
    """table.csv/json and cost_accuracy.png of ``folder`` from the strategies that have finished (a
    ``summary.json``), in ``labels`` order; an interrupted run's table lists what is done."""
    summaries = dict(summaries or {})
    for label in labels:
        f = folder / label.replace("@", "_k") / runner.SUMMARY
        if label not in summaries and f.exists():
            summaries[label] = json.loads(f.read_text())
    summaries = {label: summaries[label] for label in labels if label in summaries}
    rows = table_rows(summaries, k)
    write_table(rows, folder)
    settings = json.loads((folder / "settings.json").read_text())
    cost_plot(rows, folder / "cost_accuracy.png", f"{settings['dataset']}, {len(settings['item_ids'])} items, K={k}")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", default=None, help="required unless --table-only")
    ap.add_argument("--split", choices=("dev", "test"), required=True)
    ap.add_argument("--k", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--difficulty", default=LAB_DIFFICULTY)
    ap.add_argument("--cat-params", type=json.loads, default={})
    ap.add_argument("--only", default=None, help="comma-separated labels without @K, e.g. greedy,SC,CaT-stream")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--out", type=Path, default=Path("results/lab/search"))
    ap.add_argument("--table-only", action="store_true",
                    help="rebuild <out>/<split>-k<K>/table.* from the finished strategies (no server)")
    args = ap.parse_args(argv)
    if args.table_only:
        for k in args.k:
            tabulate(args.out / f"{args.split}-k{k}", k, [label for label, _, _ in strategies(k)])
        return 0
    for k in args.k:
        run_search(args.base_url, split=args.split, k=k, limit=args.limit, out=args.out, difficulty=args.difficulty,
                   cat_params=args.cat_params, only=args.only.split(",") if args.only else None,
                   concurrency=args.concurrency, max_tokens=args.max_tokens)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
