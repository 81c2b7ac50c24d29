"""``make lab-report``: ``docs/lab.md`` from ``results/lab/`` alone, byte for byte reproducible.

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
* Calibration -> search (make lab-transfer): for each CaT mode and PC, a trained checkpoint *buys accuracy* if
  its accuracy interval lies wholly above SFT's, *costs accuracy* if wholly below, else the accuracy change is
  *within noise*; its token change is reported as a ratio to SFT's. CAPO is also compared with GRPO (the same
  RL without the calibration term) by the same rule.
* The lab profile (issue #9's target): calibrated ECE <= 0.5x raw, or <= 0.05, on the held-out dev items.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from training.objectives import OBJECTIVES

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


def trainings(segs: list[dict]) -> list[list[dict]]:
    """SFT segments grouped into trainings: a segment from step 0 starts a new one (a machine without the
    cache retrains), a later one resumes the training before it."""
    out: list[list[dict]] = []
    for s in segs:
        if s.get("from_step", 0) == 0 or not out:
            out.append([])
        out[-1].append(s)
    return out


def sft_section(results: Path) -> list[str]:
    segs = _jsonl(results / "sft" / "segments.jsonl")
    out = ["## SFT model", ""]
    if not segs:
        return out + ["No SFT training segment recorded yet (`make lab-sft`).", ""]
    out += ["| training | from step | to step | wall s | CPU s | started (UTC) |", "|---|---|---|---|---|---|"]
    groups = trainings(segs)
    out += [f"| {i} | {s['from_step']} | {s['to_step']} | {s['wall_s']} | {s['cpu_s']} | {s['started_utc']} |"
            for i, group in enumerate(groups, 1) for s in group]
    walls = ", ".join(f"{sum(s['wall_s'] for s in g):.0f} s" for g in groups)
    return out + ["", f"Wall time per training: {walls}; a training from step 0 is the same recipe retrained on a "
                  "machine without the cache. See lab/README.md for the machine and load of each.", ""] + recheck_lines(results)


def recheck_lines(results: Path) -> list[str]:
    """python -m lab.recheck: a retrained checkpoint's greedy test run against the one the results came from."""
    rows = [(f.parent.name, json.loads(f.read_text())) for f in sorted((results / "sft" / "recheck").glob("*/compare.json"))]
    if not rows:
        return []
    out = ["Retrained checkpoint vs the one the search results came from (`python -m lab.recheck`, greedy, the "
           "test items of search/test-k4):", "",
           "| recheck | items | accuracy then | accuracy now | same output | same correctness | CPU bf16 |",
           "|---|---|---|---|---|---|---|"]
    out += [f"| {tag} | {c['n']} | {_f(c['accuracy_then'])} | {_f(c['accuracy_now'])} | {_f(c['same_output'])} | "
            f"{_f(c['same_correctness'])} | {c['machine']['avx512_bf16'] or c['machine']['amx_bf16']} |" for tag, c in rows]
    return out + [""]


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
        out += ["", f"![cost vs accuracy](../results/lab/search/{folder.name}/cost_accuracy.png)", ""]
        diagrams = sorted(p.parent.name for p in folder.glob("*/reliability.png"))
        if diagrams:
            out += ["Reliability diagrams of the returned confidence: " + " · ".join(
                f"[{d}](../results/lab/search/{folder.name}/{d}/reliability.png)" for d in diagrams), ""]
        partial = sorted(p.parent.name for p in folder.glob("*/results.jsonl") if not (p.parent / "summary.json").exists())
        if partial:  # a resumable run stopped part-way: its rows are kept, it enters the table when finished
            out += ["Not finished (resumed by the same command): " + ", ".join(
                f"{d} ({len(_jsonl(folder / d / 'results.jsonl'))} of {len(settings['item_ids'])} items)"
                for d in partial), ""]
        by = {r["strategy"]: r for r in rows}
        sc = by.get(f"SC@{k}", {})
        for mode in ("faithful", "adaptive", "stream"):
            cat = by.get(f"CaT-{mode}@{k}")
            if cat and folder.name.startswith("test"):
                verdicts.append(f"- {folder.name} CaT-{mode} ≥ SC@{k} at ≤ 0.35x tokens: {cat_verdict(cat, sc)}")
    return out, verdicts or ["- CaT ≥ SC@K at ≤ 0.35x tokens: no test-split run yet."]


def _rounded(rows: list[dict], keys: tuple[str, ...]) -> list[list]:
    return [[round(r[k], 6) if isinstance(r.get(k), float) else r.get(k) for k in keys] for r in rows]


def same_curves(curves: dict[str, list[dict]]) -> list[str]:
    """A note per objective whose dev evaluations equal an earlier one's exactly (GSPO is GRPO when every
    sampled batch gets one update: the sequence ratio is 1 and both losses are the length-normalised one)."""
    keys = ("eval_step", "dev_accuracy", "dev_ece", "dev_auc_mean")
    out, names = [], list(curves)
    for i, obj in enumerate(names):
        twin = next((o for o in names[:i] if _rounded(curves[o], keys) == _rounded(curves[obj], keys)), None)
        if twin:
            why = (": with one optimiser update per sampled batch (inner_epochs 1) every importance ratio is 1, "
                   "and at ratio 1 both losses have the same gradient" if {obj, twin} == {"grpo", "gspo"} else "")
            out.append(f"{obj}'s dev evaluations equal {twin}'s at every step to 6 decimals (the log-probs differ "
                       f"in float rounding only){why}.")
    return out + [""] if out else []


def rl_section(results: Path) -> tuple[list[str], list[str]]:
    out = ["## RL calibration (make lab-rl)", ""]
    curves = {}
    for obj in OBJECTIVES:  # training.objectives' registry, in its order
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
    out += [""] + same_curves(curves)
    out += [f"![{k}](../results/lab/rl/{k}.png)" for k in
            ("reward", "entropy", "dev_accuracy", "dev_ece", "dev_auc_mean")] + [""]
    auc = {o: [r["dev_auc_mean"] for r in d if r.get("dev_auc_mean") is not None] for o, d in curves.items()}
    return out, [f"- GRPO AUC-mean falls, CAPO's rises: {rl_verdict(auc.get('grpo', []), auc.get('capo', []))}"]


def caspo_section(results: Path) -> tuple[list[str], list[str]]:
    out, verdicts = ["## CASPO (make lab-caspo)", ""], []
    files = sorted((results / "caspo").glob("compare_*.json"))
    if not files:
        return out + ["No CASPO results yet.", ""], ["- CASPO halves ECE: not run."]
    rounds = [r for r in _jsonl(results / "caspo" / "train" / "metrics.jsonl") if "pairs" in r]
    if rounds:
        out += ["Training rounds (collection on train problems, on-policy contexts, the exact critic; "
                "`results/lab/caspo/train/`):", "", "| round | temperature | steps judged | step accuracy | "
                "pairs (incorrect / unconfident) | DPO loss |", "|---|---|---|---|---|---|"]
        out += [f"| {r['round']} | {r.get('temperature')} | {r['steps']} | {_f(r['step_accuracy'])} | {r['pairs']} "
                f"({r.get('pairs_incorrect')} / {r.get('pairs_unconfident')}) | {_f(r.get('dpo_loss'))} |" for r in rounds]
        out.append("")
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


def profile_table(prof: dict) -> tuple[list[str], list[str]]:
    """A profile's provenance line and held-out table; the strategies that missed issue #9's target."""
    prov = prof.get("provenance", {})
    out = [f"Fitted on `{prov.get('dataset')}` ({json.dumps(prov.get('split'))}); command `{prov.get('command')}`.",
           "", "| strategy | held-out n | accuracy | raw ECE | calibrated ECE | raw Brier | calibrated Brier | "
           "AUROC | map | target met |", "|---|---|---|---|---|---|---|---|---|---|"]
    failed = []
    for strategy, e in prof.get("evaluation", {}).items():
        chosen = prov.get("fits", {}).get(strategy, {}).get("chosen")
        out.append(f"| {strategy} | {e['n']} | {_f(e['accuracy'])} | {_f(e['raw']['ece'])} | "
                   f"{_f(e['calibrated']['ece'])} | {_f(e['raw']['brier'])} | {_f(e['calibrated']['brier'])} | "
                   f"{_f(e['calibrated']['auroc'])} | {chosen} | {e['meets_target']} |")
        if not e["meets_target"]:
            failed.append(strategy)
    return out, failed


def _target(failed: list[str]) -> str:
    return "held for every strategy" if not failed else "did not hold for " + ", ".join(failed)


def calibration_section(results: Path) -> tuple[list[str], list[str]]:
    out = ["## The SFT model's calibration profile (make lab-calibrate)", ""]
    f = results / "calibration" / "sft_profile.json"
    if not f.exists():
        return out + ["No profile yet.", ""], ["- Lab profile meets issue #9's ECE target: not run."]
    prof = json.loads(f.read_text())
    table, failed = profile_table(prof)
    out += [*table, "", f"Served defaults: `{json.dumps(prof.get('search_defaults', {}), sort_keys=True)}`", ""]
    verdicts = [f"- Lab profile: calibrated ECE <= half raw or <= 0.05 (issue #9): {_target(failed)}"]
    check = results / "calibration" / "split_check.md"
    if check.exists():  # python -m lab.calib_check: the same runs, other splits
        out += ["How much of this verdict is the split (`python -m lab.calib_check`, "
                "[split_check.md](../results/lab/calibration/split_check.md)).", "",
                *_cross_and_perfect(check.read_text())]
    large = results / "calibration" / "large" / "profile.json"
    if large.exists():  # make lab-calibrate-large: the same collection on 1000 dev items, 333 held out
        large_prof = json.loads(large.read_text())
        table, failed = profile_table(large_prof)
        missing = [s for s in prof.get("evaluation", {}) if s not in large_prof.get("evaluation", {})]
        out += ["### The same collection on 1000 dev items (make lab-calibrate-large)", "",
                "Not served (the search experiments ran with the profile above); it settles the target at a "
                "held-out n where a perfect map's ECE is smaller.", "", *table, ""]
        large_check = results / "calibration" / "large" / "split_check.md"
        if large_check.exists():  # python -m lab.calib_check --large: the same runs, other maps and splits
            text = large_check.read_text()
            kinds, fresh = _md_table(text, "## Each kind"), _md_table(text, "## The profile's maps on fresh")
            out += ["The same runs, other maps and splits (`python -m lab.calib_check --large`, "
                    "[split_check.md](../results/lab/calibration/large/split_check.md)). The held-out third scored "
                    "by each kind of map fitted on the fit split:", "", *kinds, ""]
            if fresh:
                out += ["The profile's maps (not refitted) on the 200 dev items after its 1000, collected afterwards "
                        "with the same settings (`python -m lab.recipe calibrate --fresh`), alone and pooled with "
                        "its 333 held-out items:", "", *fresh, ""]
            out += _cross_and_perfect(text)
        if missing:
            out += [f"Not fitted yet (their collection is part-way; `make lab-calibrate-large` resumes it): "
                    f"{', '.join(missing)}.", ""]
        verdict = _target(failed) if not missing else (
            f"{_target(failed).replace('every strategy', 'every fitted strategy')}; {', '.join(missing)} not fitted yet")
        verdicts.append(f"- Lab profile on 1000 dev items: calibrated ECE <= half raw or <= 0.05 (issue #9): {verdict}")
    return out, verdicts


def _md_table(text: str, heading: str) -> list[str]:
    """The table lines (starting with ``|``) of the section of ``text`` that begins with ``heading``."""
    if heading not in text:
        return []
    section = text[text.index(heading):].split("\n## ")[0]
    return [line for line in section.splitlines() if line.startswith("|")]


def _cross_and_perfect(text: str) -> list[str]:
    """A split_check.md's 3-fold cross-fitting and perfect-map tables, each with a line saying what it is."""
    return ["3-fold cross-fitting (every item scored once by a map fitted on the other two thirds):", "",
            *_md_table(text, "## 3-fold"), "",
            "The ECE that a perfectly calibrated map still shows on the held-out items (outcomes drawn from its own "
            "probabilities, 2000 draws):", "", *_md_table(text, "## ECE of a perfect"), ""]


def transfer_verdict(model: dict, sft: dict, base: str = "SFT") -> str:
    if not model or not sft or model.get("accuracy") is None or sft.get("accuracy") is None:
        return "missing"
    if model["acc_lo95"] > sft["acc_hi95"]:
        acc = "buys accuracy"
    elif model["acc_hi95"] < sft["acc_lo95"]:
        acc = "costs accuracy"
    else:
        acc = f"accuracy within noise ({model['accuracy'] - sft['accuracy']:+.3f})"
    tok = (f", tokens {model['tokens_per_query'] / sft['tokens_per_query']:.2f}x {base}'s"
           if model.get("tokens_per_query") and sft.get("tokens_per_query") else "")
    return acc + tok


def transfer_section(results: Path) -> tuple[list[str], list[str]]:
    out, verdicts = ["## Calibration → search (make lab-transfer)", ""], []
    files = sorted((results / "transfer").glob("compare_*.json"))
    if not files:
        return out + ["No transfer results yet.", ""], ["- Better calibration buys accuracy or tokens: not run."]
    for f in files:
        data = json.loads(f.read_text())
        out += [f"### {f.stem}", "", "| model | strategy | accuracy [95% CI] | tokens/query | ECE | AUROC |",
                "|---|---|---|---|---|---|"]
        for model, strategies in data.items():
            for strategy, r in strategies.items():
                out.append(f"| {model} | {strategy} | {_f(r['accuracy'])} [{_f(r['acc_lo95'])}, {_f(r['acc_hi95'])}] | "
                           f"{_f(r['tokens_per_query'], 1)} | {_f(r['ece'])} | {_f(r['auroc'])} |")
        out.append("")
        sft = data.get("sft", {})
        for model in data:
            if model == "sft":
                continue
            for strategy in data[model]:
                verdicts.append(f"- {f.stem} {model} vs SFT, {strategy}: "
                                f"{transfer_verdict(data[model][strategy], sft.get(strategy, {}))}")
        if "capo" in data and "grpo" in data:  # the same RL with and without CAPO's calibration term
            for strategy in data["capo"]:
                verdicts.append(f"- {f.stem} capo vs GRPO (the calibration term alone), {strategy}: "
                                f"{transfer_verdict(data['capo'][strategy], data['grpo'].get(strategy, {}), 'GRPO')}")
    return out, verdicts or ["- Better calibration buys accuracy or tokens: SFT only so far."]


def commands_section(results: Path) -> list[str]:
    out = ["## Commands and wall times", "", "| experiment | command | segments | wall s (sum) |", "|---|---|---|---|"]
    for kind in ("sft", "calibration", "search", "rl", "caspo", "transfer", "all"):
        files = [results / kind / "segments.jsonl"] if kind != "rl" else sorted((results / "rl").glob("*/segments.jsonl"))
        for f in files:
            segs = _jsonl(f)
            if not segs:
                continue
            if kind == "sft":  # the latest training only: an earlier one is the same recipe on another machine
                segs = trainings(segs)[-1]
            name = kind if kind != "rl" else f"rl/{f.parent.name}"
            default = {"sft": "make lab-sft", "rl": f"make lab-rl OBJECTIVE={f.parent.name}"}.get(kind, f"make lab-{kind}")
            cmds = sorted({s.get("command", default) for s in segs})
            out.append(f"| {name} | {'<br>'.join(f'`{c}`' for c in cmds)} | {len(segs)} | "
                       f"{sum(float(s['wall_s']) for s in segs):.0f} |")
    return out + [""]


def build(results: Path) -> str:
    lines = ["# Calibration lab results", "",
             "Generated by `make lab-report` from `results/lab/` (do not edit). Design and commands: lab/README.md.", ""]
    lines += sft_section(results)
    verdicts = []
    for section in (calibration_section, search_section, rl_section, caspo_section, transfer_section):
        body, v = section(results)
        lines += body
        verdicts += v
    lines += commands_section(results)
    lines += ["## Verdicts", "", *verdicts, "", "Rules: see `lab/report.py`'s docstring.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=REPO / "results" / "lab")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "lab.md")
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(build(args.results))
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
