"""``make lab-report``: ``docs/lab.md`` from ``lab/results/`` alone, byte for byte reproducible.

Nothing here reads a clock, a checkpoint or a server. Sections whose results are missing say so.
Verdict rules (stated in the report as well):

* CaT vs SC@K (CaT/CASPO paper, arXiv 2605.07353, Tables 2 and 5; the product target): *did not hold* if CaT's
  tokens exceed 0.35x SC@K's or its 95 % interval lies wholly below SC@K's; *held* if its accuracy is at
  least SC@K's; otherwise *inconclusive* (below, intervals overlap).
* GRPO's AUC-mean falls while CAPO's rises (CAPO, arXiv 2604.12632): a change counts when it exceeds twice the
  standard deviation of the curve's step-to-step changes; *held* if both count in the claimed direction,
  *did not hold* if either counts the other way, else *inconclusive*.
* CASPO halves ECE (arXiv 2605.07353, Table 6): *held* if ECE after <= 0.5x before, *did not hold* otherwise
  (point estimates on the same steps; no interval).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _f(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def cat_verdict(cat: dict, sc: dict) -> str:
    if cat.get("tokens_vs_sc") is None or cat.get("accuracy") is None or sc.get("accuracy") is None:
        return "inconclusive (missing numbers)"
    if cat["tokens_vs_sc"] > 0.35:
        return f"did not hold (tokens {cat['tokens_vs_sc']:.2f}x SC > 0.35x)"
    if cat["acc_hi95"] < sc["acc_lo95"]:
        return "did not hold (accuracy interval wholly below SC's)"
    if cat["accuracy"] >= sc["accuracy"]:
        return "held"
    return "inconclusive (accuracy below SC's, intervals overlap)"


def curve_change(values: list[float]) -> tuple[float | None, float | None]:
    """(last - first, 2 x std of step-to-step changes) of a curve."""
    if len(values) < 3:
        return None, None
    diffs = [b - a for a, b in zip(values, values[1:])]
    return values[-1] - values[0], 2 * statistics.pstdev(diffs)


def rl_verdict(grpo: list[float], capo: list[float]) -> str:
    (dg, ng), (dc, nc) = curve_change(grpo), curve_change(capo)
    if dg is None or dc is None:
        return "inconclusive (curves missing or too short)"
    falls, rises = dg < -ng, dc > nc
    if dg > ng or dc < -nc:
        return f"did not hold (GRPO change {dg:+.3f}, CAPO change {dc:+.3f})"
    if falls and rises:
        return f"held (GRPO {dg:+.3f} beyond noise {ng:.3f}, CAPO {dc:+.3f} beyond noise {nc:.3f})"
    return f"inconclusive (GRPO {dg:+.3f} vs noise {ng:.3f}, CAPO {dc:+.3f} vs noise {nc:.3f})"


def sft_section(results: Path) -> list[str]:
    segs = _jsonl(results / "sft" / "segments.jsonl")
    out = ["## SFT model", ""]
    if not segs:
        return out + ["No SFT training segment recorded yet (`make lab-sft`).", ""]
    out += ["| from step | to step | wall s | CPU s | started (UTC) |", "|---|---|---|---|---|"]
    out += [f"| {s['from_step']} | {s['to_step']} | {s['wall_s']} | {s['cpu_s']} | {s['started_utc']} |" for s in segs]
    return out + [f"", f"Total wall time {sum(s['wall_s'] for s in segs):.0f} s; see lab/README.md for the load each segment ran under.", ""]


def search_section(results: Path) -> tuple[list[str], list[str]]:
    out, verdicts = ["## Search (make lab-search)", ""], []
    folders = sorted(p for p in (results / "search").glob("*-k*") if (p / "table.json").exists())
    if not folders:
        return out + ["No search results yet.", ""], ["- CaT ≥ SC@K at ≤ 0.35x tokens: not run."]
    for folder in folders:
        rows = json.loads((folder / "table.json").read_text())
        settings = json.loads((folder / "settings.json").read_text())
        k = settings["k"]
        out += [f"### {folder.name}: `{settings['dataset']}`, {len(settings['item_ids'])} items, K={k}", "",
                "| strategy | accuracy [95% CI] | tokens/query | ×SC tokens | Δacc vs SC | p50 s | p95 s | ECE | Brier | AUROC |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            out.append(f"| {r['strategy']} | {_f(r['accuracy'])} [{_f(r['acc_lo95'])}, {_f(r['acc_hi95'])}] | "
                       f"{_f(r['tokens_per_query'], 1)} | {_f(r['tokens_vs_sc'], 2)} | {_f(r['acc_minus_sc'])} | "
                       f"{_f(r['latency_p50_s'], 2)} | {_f(r['latency_p95_s'], 2)} | {_f(r['ece'])} | "
                       f"{_f(r['brier'])} | {_f(r['auroc'])} |")
        out += ["", f"![cost vs accuracy](../lab/results/search/{folder.name}/cost_accuracy.png)", ""]
        by = {r["strategy"]: r for r in rows}
        sc = by.get(f"SC@{k}", {})
        for mode in ("faithful", "adaptive", "stream"):
            cat = by.get(f"CaT-{mode}@{k}")
            if cat and folder.name.startswith("test"):
                verdicts.append(f"- {folder.name} CaT-{mode} ≥ SC@{k} at ≤ 0.35x tokens: {cat_verdict(cat, sc)}")
    return out, verdicts or ["- CaT ≥ SC@K at ≤ 0.35x tokens: no test-split run yet."]


def rl_section(results: Path) -> tuple[list[str], list[str]]:
    out = ["## RL calibration (make lab-rl)", ""]
    curves = {}
    for obj in ("grpo", "gspo", "capo", "c2gspg"):
        rows = _jsonl(results / "rl" / obj / "metrics.jsonl")
        dev = [r for r in rows if "eval_step" in r]
        if dev:
            curves[obj] = dev
    if not curves:
        return out + ["No RL results yet.", ""], ["- GRPO AUC-mean falls, CAPO's rises: not run."]
    out += ["| objective | dev evals | accuracy first→last | ECE first→last | AUC-mean first→last |", "|---|---|---|---|---|"]
    for obj, dev in curves.items():
        a, b = dev[0], dev[-1]
        out.append(f"| {obj} | {len(dev)} | {_f(a['dev_accuracy'])}→{_f(b['dev_accuracy'])} | "
                   f"{_f(a['dev_ece'])}→{_f(b['dev_ece'])} | {_f(a['dev_auc_mean'])}→{_f(b['dev_auc_mean'])} |")
    out += [""] + [f"![{k}](../lab/results/rl/{k}.png)" for k in
                   ("reward", "entropy", "dev_accuracy", "dev_ece", "dev_auc_mean")] + [""]
    auc = {o: [r["dev_auc_mean"] for r in d if r.get("dev_auc_mean") is not None] for o, d in curves.items()}
    return out, [f"- GRPO AUC-mean falls, CAPO's rises: {rl_verdict(auc.get('grpo', []), auc.get('capo', []))}"]


def caspo_section(results: Path) -> tuple[list[str], list[str]]:
    out, verdicts = ["## CASPO (make lab-caspo)", ""], []
    files = sorted((results / "caspo").glob("compare_*.json"))
    if not files:
        return out + ["No CASPO results yet.", ""], ["- CASPO halves ECE: not run."]
    keys = ("steps", "step_accuracy", "ece", "brier", "entropy_correct", "entropy_incorrect", "entropy_gap",
            "auroc_entropy", "auroc_max_prob", "auroc_perplexity")
    for f in files:
        data = json.loads(f.read_text())
        out += [f"### {f.stem}", "", "| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        out += [f"| {m} | " + " | ".join(_f(data[m].get(k)) for k in keys) + " |" for m in data]
        out.append("")
        if "sft" in data and "caspo" in data and data["sft"].get("ece") and data["caspo"].get("ece") is not None:
            ratio = data["caspo"]["ece"] / data["sft"]["ece"]
            verdict = "held" if ratio <= 0.5 else "did not hold"
            verdicts.append(f"- {f.stem}: CASPO halves ECE: {verdict} (after/before = {ratio:.2f})")
    return out, verdicts or ["- CASPO halves ECE: no comparison yet."]


def build(results: Path) -> str:
    lines = ["# Calibration lab results", "",
             "Generated by `make lab-report` from `lab/results/` (do not edit). Design and commands: lab/README.md.", ""]
    lines += sft_section(results)
    verdicts = []
    for section in (search_section, rl_section, caspo_section):
        body, v = section(results)
        lines += body
        verdicts += v
    lines += ["## Verdicts", "", *verdicts, "", "Rules: see `lab/report.py`'s docstring.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=REPO / "lab" / "results")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "lab.md")
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(build(args.results))
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
