"""Issue 20 item 2, CaT's part: the branch temperature of CaT stream with a greedy trunk, on dev.

    python -m lab.recipe cat-temperature [--limit 200]          # make lab-cat-temperature (resumable)

CaT's steps depend on its own earlier choices, so it cannot be replayed from ``lab.sweep``'s independent samples:
each setting is a run of its own through the lab server (``lab.search.run_search``, one ``cat-eval`` run per
setting, resumable). The trunk is greedy (``trunk_temperature`` 0, the dev choice of ``make lab-search-dev``) and
the request's temperature is the branches' (``cat_serve.search.cat``'s stream mode samples its K candidates of a
low-confidence step at the request temperature). Per temperature {0.3, 0.5, 0.7, 1.0} and K {4, 8}: accuracy,
tokens per query, and the paired comparison with greedy on the same dev items (``eval.compare``: bootstrap by
item, exact McNemar p), "≥ greedy" (lower bound > −0.02) and "better than greedy" (Holm across this table), as in
``lab.sweep``. Choice: per K the most accurate temperature (ties: fewer tokens, then the lower temperature).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from eval import compare, runner

TEMPERATURES = (0.3, 0.5, 0.7, 1.0)
KS = (4, 8)
# the dev choice of make lab-search-dev (results/lab/search/dev-sweep/chosen.json: stream-t0-b0.1)
STREAM_PARAMS = {"trunk_temperature": 0.0, "confident_threshold": 0.8209}


def setting_name(t: float, k: int) -> str:
    return f"t{t}-k{k}"


def run_all(base_url: str, out: Path, *, limit: int, temperatures: Sequence[float] = TEMPERATURES,
            ks: Sequence[int] = KS, concurrency: int = 8, split: str = "dev",
            settings: Sequence[tuple[float, int]] | None = None) -> dict:
    """greedy once, then CaT stream at every (temperature, K), or at ``settings`` only (the test split: the dev
    choice per K); returns ``summarise(out)``."""
    from lab.search import run_search

    run_search(base_url, split=split, k=ks[0], limit=limit, out=out / "greedy", only=["greedy"],
               concurrency=concurrency)
    for t, k in settings or [(t, k) for t in temperatures for k in ks]:
        run_search(base_url, split=split, k=k, limit=limit, out=out / f"t{t}", only=["CaT-stream"],
                   by_mode={"stream": STREAM_PARAMS}, concurrency=concurrency, temperature=t)
    return summarise(out, temperatures=temperatures, ks=ks, split=split)


def _rows(folder: Path) -> list[dict]:
    f = folder / runner.RESULTS
    return runner.read_rows(f) if f.is_file() else []


def summarise(out: Path, *, temperatures: Sequence[float] = TEMPERATURES, ks: Sequence[int] = KS,
              split: str = "dev") -> dict:
    """Per setting with rows: accuracy, tokens/query, and the paired comparison with greedy (Holm across all)."""
    from lab.report import better_family

    greedy_dirs = sorted((out / "greedy").glob(f"{split}-k*/greedy"))
    greedy = _rows(greedy_dirs[0]) if greedy_dirs else []
    settings = {}
    for t in temperatures:
        for k in ks:
            rows = _rows(out / f"t{t}" / f"{split}-k{k}" / f"CaT-stream_k{k}")
            if rows:
                settings[setting_name(t, k)] = {"temperature": t, "k": k, "rows": rows}
    comps = {name: compare.compare_rows(s["rows"], greedy) for name, s in settings.items()} if greedy else {}
    family = better_family(comps)
    table = []
    for name, s in settings.items():
        rows = list(runner.latest_by_id(s["rows"]).values())
        c = comps.get(name, {})
        verdict, holm_p = family.get(name, (compare.INCONCLUSIVE, None))
        acc = c.get("accuracy")
        table.append({"setting": name, "temperature": s["temperature"], "k": s["k"], "n": len(rows),
                      "accuracy": sum(bool(r.get("correct")) for r in rows) / len(rows),
                      "tokens_per_query": sum(r.get("tokens") or 0 for r in rows) / len(rows),
                      "vs_greedy": {"n": c.get("n"), "accuracy": acc.as_dict() if acc else None,
                                    "tokens_ratio": c["tokens_ratio"].as_dict() if c.get("tokens_ratio") else None,
                                    "holm_p": holm_p,
                                    "non_inferior": compare.non_inferior(acc.lo, acc.hi) if acc else compare.INCONCLUSIVE,
                                    "better": verdict}, "_acc": acc})
    g = list(runner.latest_by_id(greedy).values())
    chosen = {}
    for k in ks:
        mine = [r for r in table if r["k"] == k]
        if mine:
            best = min(mine, key=lambda r: (-r["accuracy"], r["tokens_per_query"], r["temperature"]))
            chosen[str(k)] = {"setting": best["setting"], "temperature": best["temperature"],
                              "accuracy": best["accuracy"], "tokens_per_query": best["tokens_per_query"]}
    return {"split": split, "greedy": {"n": len(g), "accuracy": sum(bool(r.get("correct")) for r in g) / len(g) if g else None,
                       "tokens_per_query": sum(r.get("tokens") or 0 for r in g) / len(g) if g else None},
            "stream_params": STREAM_PARAMS, "rows": table, "chosen": chosen}


def render(summary: dict) -> str:
    g = summary["greedy"]
    lines = [f"CaT stream's branch temperature, greedy trunk (`python -m lab.recipe cat-temperature`, issue 20 item 2): "
             f"{summary.get('split', 'dev')} items, CaT params {json.dumps(summary['stream_params'])} over the served "
             "profile's defaults" + ("" if summary.get("split", "dev") == "dev" else
                                     ", at the branch temperature dev chose per K (nothing chosen here)") + "; "
             f"greedy on the same items: accuracy {g['accuracy']:.3f}, {g['tokens_per_query']:.1f} tokens per query "
             f"(n = {g['n']}). vs greedy: `eval.compare`, bootstrap by item ({compare.RESAMPLES} resamples, 95 %), "
             "exact McNemar p; \"better than greedy\": Holm across this table.", "",
             "| branch temperature | K | n | accuracy | tokens/query | Δacc vs greedy [95% CI], p | tokens vs greedy | "
             "Holm p | ≥ greedy | better than greedy |", "|---" * 10 + "|"]
    for r in summary["rows"]:
        v = r["vs_greedy"]
        acc = compare.fmt_stat(r["_acc"], sign=True) if r["_acc"] else "–"
        tok = f"{v['tokens_ratio']['estimate']:.2f}×" if v["tokens_ratio"] else "–"
        holm = compare.fmt_p(v["holm_p"]) if v["holm_p"] is not None else "–"
        lines.append(f"| {r['temperature']} | {r['k']} | {r['n']} | {r['accuracy']:.3f} | {r['tokens_per_query']:.1f} | "
                     f"{acc} | {tok} | {holm} | {v['non_inferior']} | {v['better']} |")
    if summary.get("split", "dev") == "dev":
        lines += ["", "Chosen per K (the most accurate; ties: fewer tokens, the lower temperature): " +
                  "; ".join(f"K = {k}: {c['setting']} ({c['accuracy']:.3f}, {c['tokens_per_query']:.1f} tokens)"
                            for k, c in summary["chosen"].items()) + ".", ""]
    else:
        lines += [""]
    def stated(r: dict) -> str:
        return (f"{r['setting']} Δacc {compare.fmt_stat(r['_acc'], sign=True)}, "
                f"Holm p = {compare.fmt_p(r['vs_greedy']['holm_p'])}")

    better = [r for r in summary["rows"] if r["vs_greedy"]["better"] == compare.HELD]
    closest = max((r for r in summary["rows"] if r["_acc"]), key=lambda r: r["_acc"].estimate, default=None)
    lines.append("Better than greedy (Holm): " + "; ".join(stated(r) for r in better) + "." if better else
                 "No branch temperature makes CaT stream better than greedy after Holm"
                 + (f" (closest: {stated(closest)})." if closest else "."))
    return "\n".join(lines) + "\n"


def write(out: Path, summary: dict) -> None:
    (out / "table.md").write_text(render(summary))
    clean = {**summary, "rows": [{k: v for k, v in r.items() if k != "_acc"} for r in summary["rows"]]}
    (out / "table.json").write_text(json.dumps(clean, indent=2) + "\n")
