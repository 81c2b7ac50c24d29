"""Benchmark several search strategies on the SAME items, one after another.

Layout of ``out_dir``: one run directory per strategy (``<out_dir>/<strategy>/``, see
``eval.runner``), plus ``bench.md`` (the side-by-side table), ``bench.json`` (table rows and
full summaries) and ``precision_coverage.png`` (all strategies on one plot). Each strategy's run
is resumable on its own, so re-running an interrupted bench only requests what is missing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from eval import report, runner
from eval.datasets import Item

ALL_SEARCHES = ("none", "self_consistency", "ppl_consistency", "rpc", "deepconf", "cat")
SAMPLING = ("self_consistency", "ppl_consistency", "rpc", "deepconf")


def default_search_params(strategy: str, k: int) -> dict:
    """k = number of sampled paths (``n``) for sampling strategies, ``branches`` for CaT.

    Candidates are requested so that maj@k and mean@k can be computed from every search run.
    """
    if strategy in SAMPLING:
        return {"n": k, "return_candidates": True}
    if strategy == "cat":
        return {"branches": k, "return_candidates": True}
    return {}


def strategy_params(strategy: str, k: int, overrides: Mapping[str, dict]) -> dict:
    """Defaults for ``k``, updated by ``overrides[strategy]`` (from ``--search-params``)."""
    return {**default_search_params(strategy, k), **(overrides.get(strategy) or {})}


def bench(base: runner.RunConfig, items: Sequence[Item], searches: Sequence[str], *, k: int,
          overrides: Mapping[str, dict] | None = None) -> dict:
    """Run every strategy on ``items``; write and return ``{"table", "markdown", "summaries"}``."""
    out = Path(base.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries, rows_by_strategy = {}, {}
    for strategy in searches:
        cfg = replace(base, search=strategy, out_dir=out / strategy,
                      search_params=strategy_params(strategy, k, overrides or {}))
        summaries[strategy] = runner.run(cfg, items)
        latest = runner.latest_by_id(runner.read_rows(cfg.out_dir / runner.RESULTS))
        rows_by_strategy[strategy] = [latest[it.id] for it in items if it.id in latest]

    table = report.bench_rows(summaries)
    markdown = (f"# bench: {base.dataset}, {len(items)} items, k={k}\n\n"
                + report.markdown_table(table))
    (out / "bench.md").write_text(markdown)
    (out / "bench.json").write_text(json.dumps(
        {"dataset": base.dataset, "k": k, "n_items": len(items), "item_ids": [it.id for it in items],
         "table": table, "summaries": summaries}, indent=2) + "\n")
    report.precision_coverage_plot(rows_by_strategy, out / "precision_coverage.png",
                                   title=f"{base.dataset}: precision vs coverage")
    return {"table": table, "markdown": markdown, "summaries": summaries}
