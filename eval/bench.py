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


PAIRED_REFS = (("none", "none"), ("self_consistency", "SC"))


def paired_rows(rows_by_strategy: Mapping[str, Sequence[dict]]) -> list[dict]:
    """``eval.compare`` of every strategy against ``none`` and against SC, on their shared items."""
    from eval import compare  # noqa: PLC0415

    out = []
    for ref, ref_label in PAIRED_REFS:
        if ref not in rows_by_strategy:
            continue
        for name, rows in rows_by_strategy.items():
            if name != ref and not (name == "none" and ref != "none"):  # none vs SC is SC vs none inverted
                c = compare.compare_rows(rows, rows_by_strategy[ref])
                out.append({"strategy": name, "vs": ref_label, **compare.as_json(c)})
    return out


def paired_markdown(paired: Sequence[dict]) -> str:
    """The paired table under the bench table: Δacc [95 % CI] with McNemar p, tokens and p50 ratios."""
    if not paired:
        return ""
    from eval import compare  # noqa: PLC0415

    def cell(d: dict | None, sign: bool = False) -> str:
        return compare.fmt_stat(compare.Stat(**d), sign=sign) if d else "–"

    lines = ["", f"Paired on shared items ({compare.RESAMPLES} bootstrap resamples by item, exact McNemar p):", "",
             "| strategy | vs | items | Δacc [95% CI], p | tok ratio [95% CI] | p50 ratio [95% CI] | ΔECE [95% CI] |",
             "|---|---|---|---|---|---|---|"]
    for r in paired:
        lines.append(f"| {r['strategy']} | {r['vs']} | {r['n']} | {cell(r.get('accuracy'), True)} | "
                     f"{cell(r.get('tokens_ratio'))} | {cell(r.get('p50_ratio'))} | {cell(r.get('ece_diff'), True)} |")
    return "\n".join(lines) + "\n"


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
    paired = paired_rows(rows_by_strategy)
    markdown = (f"# bench: {base.dataset}, {len(items)} items, k={k}\n\n"
                + report.markdown_table(table) + paired_markdown(paired))
    (out / "bench.md").write_text(markdown)
    (out / "bench.json").write_text(json.dumps(
        {"dataset": base.dataset, "k": k, "n_items": len(items), "item_ids": [it.id for it in items],
         "table": table, "paired": paired, "summaries": summaries}, indent=2) + "\n")
    report.precision_coverage_plot(rows_by_strategy, out / "precision_coverage.png",
                                   title=f"{base.dataset}: precision vs coverage")
    return {"table": table, "markdown": markdown, "summaries": summaries}
