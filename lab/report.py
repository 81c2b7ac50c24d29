"""``make lab-report``: ``docs/lab.md`` from ``results/lab/`` alone, byte for byte reproducible.

Nothing here reads a clock, a checkpoint or a server. Sections whose results are missing say so.
Verdict rules (fixed before the runs; lab/README.md "Verdict rules" states them, ``eval.compare`` implements them).
Every comparison is paired on the items both runs share (``eval.compare``: bootstrap by item, 2,000 resamples,
seed 0, 95 % percentile intervals; exact McNemar p on the discordant items):

* "≥ X" (non-inferiority, 2-point margin): *held* if the accuracy difference's lower bound is above -0.02,
  *did not hold* if its upper bound is at or below -0.02, else *inconclusive*.
* "better than X": *held* if the lower bound of the Holm-adjusted interval (Holm across one table's
  comparisons against the same X, ordered by McNemar p) is above 0, *did not hold* if the upper bound is at or
  below 0, else *inconclusive*.
* "≤ r× tokens": *held* if the upper bound of the token ratio is ≤ r, *did not hold* if its lower bound is
  above r, else *inconclusive*. A claim of several parts holds when all hold and fails when any fails.
* Faithful CaT with ``dedup: true`` (issue 20 item 3) is "≥ exact Algorithm 2" on the same items; its token
  ratio is reported beside it.
* CaT vs SC@K (CaT/CASPO paper, arXiv 2605.07353, Tables 2 and 5; the product target) is "≥ SC@K at ≤ 0.35×
  tokens".
* GRPO's AUC-mean falls while CAPO's rises (CAPO, arXiv 2604.12632): a change counts when it exceeds twice the
  standard deviation of the curve's step-to-step changes; *held* if both count in the claimed direction,
  *did not hold* if either counts the other way, else *inconclusive*. (Only aggregate evaluations are stored,
  so this verdict has no p.)
* CASPO halves ECE (arXiv 2605.07353, Table 6): "halves ECE" is the ratio after/before's upper bound ≤ 0.5,
  bootstrapped by question (the same questions before and after); p is the share of resamples above 0.5.
* Calibration -> search (make lab-transfer): each trained checkpoint "better than SFT" per strategy (Holm across
  the table), with its token ratio; CAPO is also compared with GRPO (the same RL without the calibration term).
* The lab profile (issue #9's target): calibrated ECE <= 0.5x raw, or <= 0.05, on the held-out dev items.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from eval import compare, runner
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


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def run_rows(folder: Path) -> list[dict]:
    """The result rows of one run folder (empty when it has none)."""
    f = folder / runner.RESULTS
    return runner.read_rows(f) if f.exists() else []


def cat_verdict(c: dict, cap: float = 0.35) -> str:
    """"CaT ≥ SC@K at ≤ cap× tokens" from ``eval.compare.compare_rows(CaT rows, SC rows)``."""
    acc, tok = c.get("accuracy"), c.get("tokens_ratio")
    if acc is None or tok is None:
        return "inconclusive (no paired rows)"
    verdict = compare.combine(compare.non_inferior(acc.lo, acc.hi), compare.tokens_at_most(tok.lo, tok.hi, cap))
    return (f"{verdict} (Δacc {compare.fmt_stat(acc, sign=True)}; tokens {compare.fmt_stat(tok)}× SC, "
            f"cap {cap}; {c['n']} paired items)")


def better_family(comparisons: dict[str, dict]) -> dict[str, tuple[str, float | None]]:
    """"better than X" for each comparison of one table against the same X, Holm across them:
    name -> (verdict, Holm-adjusted McNemar p)."""
    names = [n for n, c in comparisons.items() if c.get("accuracy") is not None]
    ps = [comparisons[n]["accuracy"].p for n in names]
    out = {}
    for name, level, adj in zip(names, compare.holm_alphas(ps), compare.holm_adjusted(ps)):
        acc = comparisons[name]["accuracy"]
        lo = acc.interval(1 - level)[0] if level > 0 else float("-inf")  # level 0: Holm stopped before it
        out[name] = (compare.better(lo, acc.hi), adj)
    return out


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
    folders = sorted(p for p in [*(results / "search").glob("*-k*"), *(results / "search" / "chosen").glob("*-k*")]
                     if (p / "table.json").exists())
    if not folders:
        return out + ["No search results yet.", ""], ["- CaT ≥ SC@K at ≤ 0.35x tokens: not run."]
    for folder in folders:
        rows = json.loads((folder / "table.json").read_text())
        settings = json.loads((folder / "settings.json").read_text())
        k, name = settings["k"], folder.relative_to(results / "search").as_posix()
        out += [f"### {name}: `{settings['dataset']}`, {len(settings['item_ids'])} items, K={k}", ""]
        if settings.get("sampling"):  # make lab-search --chosen: each strategy at its dev choice
            out += ["Each strategy at the sampling its dev runs chose (greedy at temperature 0; CaT with a greedy trunk, "
                    "faithful with dedup): " + "; ".join(
                        f"{label} t{v['temperature']}" + (f" top_p {v['top_p']}" if v.get("top_p", 1.0) != 1.0 else "")
                        for label, v in settings["sampling"].items()) + ".", ""]
        out += [
                "| strategy | accuracy [95% CI] | tokens/query | ×SC tokens | Δacc vs SC | p50 s | p95 s | ECE | Brier | AUROC |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            out.append(f"| {r['strategy']} | {_f(r['accuracy'])} [{_f(r['acc_lo95'])}, {_f(r['acc_hi95'])}] | "
                       f"{_f(r['tokens_per_query'], 1)} | {_f(r['tokens_vs_sc'], 2)} | {_f(r['acc_minus_sc'])} | "
                       f"{_f(r['latency_p50_s'], 2)} | {_f(r['latency_p95_s'], 2)} | {_f(r['ece'])} | "
                       f"{_f(r['brier'])} | {_f(r['auroc'])} |")
        out += ["", f"![cost vs accuracy](../results/lab/search/{name}/cost_accuracy.png)", ""]
        diagrams = sorted(p.parent.name for p in folder.glob("*/reliability.png"))
        if diagrams:
            out += ["Reliability diagrams of the returned confidence: " + " · ".join(
                f"[{d}](../results/lab/search/{name}/{d}/reliability.png)" for d in diagrams), ""]
        partial = sorted(p.parent.name for p in folder.glob("*/results.jsonl") if not (p.parent / "summary.json").exists())
        if partial:  # a resumable run stopped part-way: its rows are kept, it enters the table when finished
            out += ["Not finished (resumed by the same command): " + ", ".join(
                f"{d} ({len(_jsonl(folder / d / 'results.jsonl'))} of {len(settings['item_ids'])} items)"
                for d in partial), ""]
        runs = {r["strategy"]: run_rows(folder / r["strategy"].replace("@", "_k")) for r in rows}
        table, paired = paired_table(runs, k)
        out += table
        for mode in ("faithful", "adaptive", "stream"):
            cat = paired.get(f"CaT-{mode}@{k}", {}).get("SC")
            if cat is not None and folder.name.startswith("test"):
                verdicts.append(f"- {name} CaT-{mode} ≥ SC@{k} at ≤ 0.35x tokens: {cat_verdict(cat)}")
        if folder.name.startswith("test"):
            family = better_family({n: c["greedy"] for n, c in paired.items() if "greedy" in c})
            verdicts += [f"- {name} {n} better than greedy: {v} (Δacc "
                         f"{compare.fmt_stat(paired[n]['greedy']['accuracy'], sign=True)}, Holm p = {compare.fmt_p(adj)})"
                         for n, (v, adj) in family.items()]
    scope = table_lines(results / "search" / "chosen" / "profile_scope.md")
    if scope:  # issue 20 item 5 for the chosen runs: the maps were fitted at T 0.7, the runs sample elsewhere
        out += ["### The served profile outside what it was fitted on (search/chosen)", "", *scope[2:], ""]
    return out, verdicts or ["- CaT ≥ SC@K at ≤ 0.35x tokens: no test-split run yet."]


def table_lines(f: Path) -> list[str] | None:
    """The lines of a table an experiment wrote whole (``table.md``), to quote as they are; None when absent."""
    return f.read_text().rstrip("\n").split("\n") if f.exists() else None


def sampling_sweep_section(results: Path) -> tuple[list[str], list[str]]:
    """``make lab-sweep``'s dev table (``lab.sweep`` writes it whole), quoted as it is; nothing when absent."""
    lines = table_lines(results / "search" / "sampling-sweep" / "table.md")
    if lines is None:
        return [], []
    return ["### Dev sampling sweep (make lab-sweep)", "", *lines, ""], []


def sampling_test_section(results: Path) -> tuple[list[str], list[str]]:
    """The test-split run at the settings the dev sweep chose (``python -m lab.recipe sweep --split test``), quoted
    as ``lab.sweep`` wrote it; its conclusion line is the vs-greedy verdict. Nothing when absent."""
    lines = table_lines(results / "search" / "sampling-test" / "table.md")
    if lines is None:
        return [], []
    return (["### Test split at the dev-chosen sampling", "", *lines, ""],
            [f"- sampling on test vs greedy: {lines[-1]}"] if lines and lines[-1].strip() else [])


def cat_temperature_section(results: Path) -> tuple[list[str], list[str]]:
    """``make lab-cat-temperature`` (CaT stream's branch temperature, greedy trunk, on dev), quoted as
    ``lab.cat_temperature`` wrote it; its last line (better than greedy or not) is a verdict. Nothing when absent."""
    body, verdicts = [], []
    for folder, split, how in (("cat-temperature", "dev", "make lab-cat-temperature"),
                               ("cat-temperature-test", "test", "python -m lab.recipe cat-temperature --split test")):
        lines = table_lines(results / "search" / folder / "table.md")
        if lines is not None:
            body += [f"### CaT's branch temperature on {split} ({how})", "", *lines, ""]
            verdicts.append(f"- CaT stream (greedy trunk) vs greedy on {split}: {lines[-1]}")
    return body, verdicts


def calibration_features_section(results: Path) -> tuple[list[str], list[str]]:
    """``make lab-calibrate-features`` (issue 20 item 4), quoted as ``lab.calib_features`` wrote it; its PC lines
    are verdicts. Nothing when absent."""
    body, verdicts = [], []
    for folder, title in (("features", "make lab-calibrate-features"),
                          ("features-extended", "4,000 items: `python -m lab.recipe calibrate-features --extend`")):
        lines = table_lines(results / "calibration" / folder / "table.md")
        if lines is None:
            continue
        body += [f"### Calibration maps on more than one score ({title})", "", *lines[2:], ""]
        verdicts += [line if folder == "features" else line.replace("- PC@", f"- {folder}: PC@", 1)
                     for line in lines if line.startswith("- PC@")]
    return body, verdicts


def dedup_section(results: Path) -> tuple[list[str], list[str]]:
    """``make lab-dedup`` (issue 20 item 3): faithful CaT exact and with ``dedup: true`` on the same test items,
    compared item by item (``eval.compare``; the two runs sample independently, so the accuracy difference is
    also sampling noise). Verdict: dedup ≥ exact (non-inferiority, 2-point margin)."""
    files = sorted((results / "search" / "dedup").glob("k*.json"), key=lambda f: int(f.stem[1:]))
    if not files:
        return [], []
    out = ["### Faithful CaT with and without dedup (make lab-dedup)", "",
           "Exact Algorithm 2 against `dedup: true` (identical step texts among one node's K children expanded once, "
           "with their multiplicity; a deviation, docs/deviations.md), on the same arith test items at temperature 0.7. "
           "Duplicate share: 1 − distinct path texts / paths in the exact run's answer set.", "",
           "| K | items | exact acc | dedup acc | Δacc dedup − exact [95 %], p | tokens/query exact | dedup "
           "| token ratio dedup/exact [95 %] | steps/query exact | dedup | duplicate share (exact) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for f in files:
        d = json.loads(f.read_text())
        exact, dedup = d["dedup=False"], d["dedup=True"]
        c = compare.compare_rows(dedup["rows"], exact["rows"])
        k = exact["k"]
        out.append(f"| {k} | {c['n']} | {exact['accuracy']:.3f} | {dedup['accuracy']:.3f} | "
                   f"{compare.fmt_stat(c['accuracy'], sign=True)} | {exact['tokens_per_query']:.0f} | "
                   f"{dedup['tokens_per_query']:.0f} | {compare.fmt_stat(c['tokens_ratio'])} | "
                   f"{exact['steps_generated_per_query']:.1f} | {dedup['steps_generated_per_query']:.1f} | "
                   f"{exact['duplicate_share']:.2f} |")
        a = c["accuracy"]
        verdicts.append(f"- Faithful CaT dedup ≥ exact at K = {k}: {compare.non_inferior(a.lo, a.hi)} "
                        f"(Δacc {compare.fmt_stat(a, sign=True)}, {c['n']} items; tokens "
                        f"{compare.fmt_stat(c['tokens_ratio'])}× exact's)")
    return out + [""], verdicts


def paired_table(runs: dict[str, list[dict]], k: int) -> tuple[list[str], dict[str, dict]]:
    """Each strategy against greedy and against SC@K on the shared items (``eval.compare``), with the
    verdicts "≥ greedy", "better than greedy" (Holm across the table) and "better than SC@K"."""
    refs = {"greedy": "greedy", "SC": f"SC@{k}"}
    paired: dict[str, dict] = {name: {} for name in runs}
    for ref_key, ref in refs.items():
        if not runs.get(ref):
            continue
        for name, rows in runs.items():
            if name != ref and rows:
                paired[name][ref_key] = compare.compare_rows(rows, runs[ref])
    vs_greedy = better_family({n: c["greedy"] for n, c in paired.items() if "greedy" in c})
    vs_sc = better_family({n: c["SC"] for n, c in paired.items() if "SC" in c})
    if not vs_greedy and not vs_sc:
        return [], paired
    out = [f"Paired on the shared items (`cat-eval compare`; bootstrap by item, {compare.RESAMPLES} resamples, "
           "95 % intervals, exact McNemar p; Holm across this table's comparisons with the same reference):", "",
           "| strategy | Δacc vs greedy [95% CI], p | Holm p | ≥ greedy | better than greedy | "
           f"Δacc vs SC@{k} [95% CI], p | Holm p | better than SC@{k} | tokens ÷ SC@{k} [95% CI] | "
           f"p50 ÷ SC@{k} [95% CI] | ΔECE vs SC@{k} [95% CI] |", "|---" * 11 + "|"]
    for name, c in paired.items():
        g, sc = c.get("greedy"), c.get("SC")
        gv, sv = vs_greedy.get(name), vs_sc.get(name)
        out.append(" | ".join([
            f"| {name}",
            compare.fmt_stat(g["accuracy"], sign=True) if g else "–",
            compare.fmt_p(gv[1]) if gv else "–",
            compare.non_inferior(g["accuracy"].lo, g["accuracy"].hi) if g else "–",
            gv[0] if gv else "–",
            compare.fmt_stat(sc["accuracy"], sign=True) if sc else "–",
            compare.fmt_p(sv[1]) if sv else "–",
            sv[0] if sv else "–",
            compare.fmt_stat(sc.get("tokens_ratio")) if sc else "–",
            compare.fmt_stat(sc.get("p50_ratio")) if sc else "–",
            compare.fmt_stat(sc.get("ece_diff"), sign=True) if sc else "–"]) + " |")
    return out + [""], paired


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
    return out, [f"- GRPO AUC-mean falls, CAPO's rises: {rl_verdict(auc.get('grpo', []), auc.get('capo', []))}; "
                 "the interval is ± the noise band; no p: only aggregate evaluations on 32 questions are stored"]


def rl800_runs(results: Path, folder: str = "rl800") -> dict[tuple[str, int], list[dict]]:
    """(objective, seed) -> dev evaluation rows of ``make lab-rl800`` (results/lab/rl800/<objective>-s<seed>/;
    ``folder`` rl8000-gpu: scripts/lab_gpu.sh's)."""
    runs = {}
    for f in sorted((results / folder).glob("*-s*/metrics.jsonl")):
        obj, seed = f.parent.name.rsplit("-s", 1)
        dev = [r for r in _jsonl(f) if "eval_step" in r]
        if dev:
            runs[(obj, int(seed))] = dev
    return runs


def capo_auc_claim(runs: dict[tuple[str, int], list[dict]], *, margin: float = 0.10, matched: float = 0.02,
                   samples: int = 8, resamples: int = compare.RESAMPLES,
                   starts: dict[tuple[str, int], str] | None = None) -> str:
    """Issue 21's claim: CAPO's dev AUC-mean >= GRPO's + ``margin`` at matched accuracy (within ``matched``), at
    the last evaluation both runs of a seed reached (after step 0, where both are the SFT checkpoint). Per seed
    the difference CAPO - GRPO; the interval is a bootstrap by question (the dev questions are the same for every
    run: one resample of question indices serves every seed, and the seeds' differences are averaged inside it). AUC-mean averages the questions whose samples
    have both outcomes, in each run and resample; accuracy is each question's share of ``samples`` right.
    ``starts``: each run's SFT fingerprint; a seed whose two runs started from different checkpoints is left out.
    With several seeds, "held" also needs every seed's own difference to clear the margin (the seeds' spread);
    seeds on both sides of it make the verdict inconclusive however narrow the interval."""
    seeds = sorted({s for o, s in runs if o == "capo"} & {s for o, s in runs if o == "grpo"})
    starts = starts or {}
    unpaired = [s for s in seeds if starts.get(("capo", s)) != starts.get(("grpo", s))]
    seeds = [s for s in seeds if s not in unpaired]
    pairs = []
    for s in seeds:
        # step 0 is the SFT checkpoint in both runs: a seed counts once both have trained and been evaluated
        steps = ({r["eval_step"] for r in runs[("capo", s)]} & {r["eval_step"] for r in runs[("grpo", s)]}) - {0}
        if not steps:
            continue
        rows = [next(r for r in runs[(o, s)] if r["eval_step"] == max(steps)) for o in ("capo", "grpo")]
        if all("dev_q_auroc" in r for r in rows):
            pairs.append((s, max(steps), rows))
    if not pairs:
        return "not run (needs GRPO and CAPO of one seed, from one SFT checkpoint, with per-question dev rows)"
    n = len(pairs[0][2][0]["dev_q_auroc"])

    def auc(r: dict, idx: np.ndarray) -> float:
        a = np.array([np.nan if x is None else x for x in r["dev_q_auroc"]], float)[idx]
        return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")

    def acc(r: dict, idx: np.ndarray) -> float:
        return float(np.mean(np.asarray(r["dev_q_correct"], float)[idx]) / samples)

    every = np.arange(n)
    d_auc = [auc(c, every) - auc(g, every) for _, _, (c, g) in pairs]
    d_acc = [acc(c, every) - acc(g, every) for _, _, (c, g) in pairs]
    boot = compare.bootstrap_indices(n, resamples)
    b_auc = [np.mean([auc(c, i) - auc(g, i) for _, _, (c, g) in pairs]) for i in boot]
    b_acc = [np.mean([acc(c, i) - acc(g, i) for _, _, (c, g) in pairs]) for i in boot]
    lo, hi = compare.percentile_interval([x for x in b_auc if np.isfinite(x)])
    alo, ahi = compare.percentile_interval(b_acc)
    est, aest = float(np.mean(d_auc)), float(np.mean(d_acc))
    is_matched = abs(aest) <= matched
    # the seeds' spread: with two or more seeds, "held" also needs every seed's own difference to clear the margin
    split = len(pairs) > 1 and min(d_auc) < margin <= max(d_auc)
    if not is_matched:
        verdict = "inconclusive (accuracy not matched)"
    elif lo is not None and lo >= margin and not split:
        verdict = "held"
    elif hi is not None and hi < margin:
        verdict = "did not hold"
    else:
        verdict = "inconclusive (the seeds disagree)" if split else "inconclusive"
    per_seed = ", ".join(f"seed {s} (step {step}): ΔAUC-mean {a:+.3f}, Δacc {b:+.3f}"
                         for (s, step, _), a, b in zip(pairs, d_auc, d_acc))
    spread = f" (seeds from {min(d_auc):+.3f} to {max(d_auc):+.3f})" if len(pairs) > 1 else ""
    return (f"{verdict}: ΔAUC-mean (CAPO - GRPO) {compare.fmt_stat(compare.Stat(est, lo, hi), sign=True)}{spread} "
            f"against the +{margin:.2f} claimed; Δacc {compare.fmt_stat(compare.Stat(aest, alo, ahi), sign=True)} "
            f"(matched if within ±{matched:.2f}); {len(pairs)} seed(s), "
            f"{n} dev questions, bootstrap by question ({resamples} resamples); {per_seed}")


RL_SCALES = (("rl800", "RL at 800 prompts (make lab-rl800)", "8 prompts x G 8 per step, 100 steps (800 distinct "
              "train prompts), dev 64 questions x 8 samples every 10 steps, bf16 where the CPU has it natively."),
             ("rl8000-gpu", "RL at 8,000 prompts on one GPU (scripts/lab_gpu.sh)", "64 prompts x G 8 per step, 125 "
              "steps (8,000 distinct train prompts), dev 64 questions x 8 samples every 25 steps, bf16, GRPO and "
              "CAPO at once on the one GPU; the device and wall time are in each run's segments.jsonl."))


def rl800_section(results: Path) -> tuple[list[str], list[str]]:
    """``make lab-rl800`` and ``scripts/lab_gpu.sh`` (issue 21): one row per run, and the CAPO-vs-GRPO claim per
    scale. Nothing when absent."""
    out, verdicts = [], []
    for folder, title, recipe in RL_SCALES:
        runs = rl800_runs(results, folder)
        if runs:
            starts = {key: rl800_start(results / folder / f"{key[0]}-s{key[1]}") for key in runs}
            body, claim = rl_scale_table(runs, title, recipe, starts)
            out += body + superseded_runs(results / folder) + rl_curves(runs)
            verdicts.append(f"- {folder}: CAPO's AUC-mean ≥ GRPO's + 0.10 at matched accuracy: {claim}")
    return out + rerun_table(results), verdicts


def rerun_kinds(results: Path) -> list[str]:
    """The make lab-rl800-rerun folders (results/lab/rl800-<name>/)."""
    return sorted(p.name for p in results.glob("rl800-*") if p.is_dir())


def rerun_table(results: Path) -> list[str]:
    """``make lab-rl800-rerun`` (results/lab/rl800-<name>/): a make lab-rl800 run again from scratch, beside the
    committed one: its wall time and threads (the 2 h budget), and how closely the seed reproduces the dev curve."""
    rows, original = [], rl800_runs(results)
    for name in rerun_kinds(results):
        for key, dev in rl800_runs(results, name).items():
            run = results / name / f"{key[0]}-s{key[1]}"
            segs = current_run(_jsonl(run / "segments.jsonl"))
            times = [r["step_time_s"] for r in _jsonl(run / "metrics.jsonl") if "step_time_s" in r]
            threads = ", ".join(sorted({str(s.get("omp_num_threads", "–")) for s in segs}))
            before = {r["eval_step"]: r for r in original.get(key, [])}
            shared = [r for r in dev if r["eval_step"] in before]
            last = shared[-1] if shared else dev[-1]
            was = before.get(last["eval_step"], {})
            gap = max((abs(r["dev_accuracy"] - before[r["eval_step"]]["dev_accuracy"]) for r in shared), default=None)
            rows.append(f"| {name}/{run.name} | {len(segs)} | {sum(float(s['wall_s']) for s in segs):.0f} | "
                        f"{threads} | {np.median(times) if times else float('nan'):.1f} | {last['eval_step']} | "
                        + " | ".join(f"{_f(was.get(k))} → {_f(last[k])}" for k in ("dev_accuracy", "dev_ece", "dev_auc_mean"))
                        + f" | {_f(gap)} |")
    if not rows:
        return []
    return ["### Reruns (make lab-rl800-rerun)", "",
            "A make lab-rl800 run again from the SFT checkpoint with the same recipe and seed, alone on the machine: its "
            "wall time against the 2 h budget, and its dev evaluations against the committed run's (committed → "
            "rerun) at the last step both have; max |Δ accuracy| over every shared evaluation.", "",
            "| run | segments | wall s | OMP threads | median step s | dev step | accuracy | ECE | AUC-mean | "
            "max abs Δ accuracy |", "|---|---|---|---|---|---|---|---|---|---|", *rows, ""]


def superseded_runs(folder: Path) -> list[str]:
    """One line per run restarted from scratch on another SFT checkpoint: what the earlier run was and where its
    rows are (git history; the segments stay in the run's segments.jsonl)."""
    lines = []
    for f in sorted(folder.glob("*/segments.jsonl")):
        segs = _jsonl(f)
        current = current_run(segs)
        old = segs[:len(segs) - len(current)]
        if old:
            fps = sorted({s["model_fingerprint"].removeprefix("sha256:")[:8] if s.get("model_fingerprint")
                          else "not recorded" for s in old})
            lines.append(f"- {f.parent.name}: restarted from scratch on the SFT checkpoint above; the earlier run "
                         f"({len(old)} segment(s), {sum(float(s['wall_s']) for s in old):.0f} s, started "
                         f"{old[0].get('started_utc', '?')}, checkpoint {', '.join(fps)}) is superseded; its rows are "
                         "in git history, its segments in the run's segments.jsonl.")
        cut = [seg for seg in current if seg.get("interrupted")]
        if cut:
            resumed = ("the same command resumed it each time from its last saved step" if not current[-1].get("interrupted")
                       else "the same command resumes it from its last saved step")
            lines.append(f"- {f.parent.name}: interrupted {len(cut)} time(s) "
                         f"({'; '.join(seg.get('note') or 'stopped' for seg in cut)}); {resumed}; {len(current)} "
                         f"segment(s), {sum(float(seg['wall_s']) for seg in current):.0f} s in all.")
        done = [seg["note"] for seg in current if seg.get("note") and not seg.get("interrupted")]
        if done:
            lines.append(f"- {f.parent.name}: last segment: {'; '.join(done)}")
    return lines + [""] if lines else []


def current_run(segs: list[dict]) -> list[dict]:
    """The segments of the run whose rows are committed: those from the last segment's SFT checkpoint. A run
    restarted from scratch on a retrained checkpoint (a new machine) leaves its predecessor's segments above it."""
    fp = segs[-1].get("model_fingerprint") if segs else None
    return [s for s in segs if s.get("model_fingerprint") == fp]


def rl800_start(run: Path) -> str:
    """The fingerprint of the SFT checkpoint a run started from (its last segment; ``model_fingerprint``), short;
    "–" where the segment predates the field."""
    rows = _jsonl(run / "segments.jsonl")
    fp = rows[-1].get("model_fingerprint") if rows else None
    return fp.removeprefix("sha256:")[:8] if fp else "–"


def rl_scale_table(runs: dict[tuple[str, int], list[dict]], title: str, recipe: str,
                   starts: dict[tuple[str, int], str] | None = None) -> tuple[list[str], str]:
    starts = starts or {}
    out = [f"## {title}", "",
           f"{recipe} AUC-mean averages the questions with both outcomes (their number is shown); AUC-all keeps every "
           "question (0.5 where one outcome is missing), so the selection effect shows as the gap between them. "
           "Start: the SFT checkpoint's fingerprint (runs compared with each other must share it).", "",
           "| run | start | last step | dev evals | accuracy first→last | ECE first→last | AUC-mean first→last (questions) | "
           "AUC-all first→last |", "|---|---|---|---|---|---|---|---|"]
    for (obj, seed), dev in runs.items():
        a, b = dev[0], dev[-1]
        out.append(f"| {obj} seed {seed} | {starts.get((obj, seed), '–')} | {b['eval_step']} | {len(dev)} | "
                   f"{_f(a['dev_accuracy'])}→{_f(b['dev_accuracy'])} | "
                   f"{_f(a['dev_ece'])}→{_f(b['dev_ece'])} | {_f(a['dev_auc_mean'])}→{_f(b['dev_auc_mean'])} "
                   f"({a.get('dev_questions_with_both', '–')}→{b.get('dev_questions_with_both', '–')}) | "
                   f"{_f(a.get('dev_auc_all'))}→{_f(b.get('dev_auc_all'))} |")
    return out + [""], capo_auc_claim(runs, starts=starts)


RL_CURVES = (("dev_accuracy", "accuracy"), ("dev_ece", "ECE"),
             ("dev_auc_mean", "AUC-mean (questions it averages)"), ("dev_auc_all", "AUC-all (every question)"))


def rl_curves(runs: dict[tuple[str, int], list[dict]]) -> list[str]:
    """The dev curves of issue 21 item 2 as tables: one per metric, a row per evaluation step and a column per run;
    AUC-mean carries the number of questions with both outcomes it averaged at that point ("–": not evaluated)."""
    names = [f"{obj} s{seed}" for obj, seed in runs]
    steps = sorted({r["eval_step"] for dev in runs.values() for r in dev})
    at = {key: {r["eval_step"]: r for r in dev} for key, dev in runs.items()}
    out = ["Dev curves (every evaluation; the first→last table above shows their ends):", ""]
    for metric, label in RL_CURVES:
        out += [f"{label}:", "", "| step | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for step in steps:
            cells = []
            for key in runs:
                r = at[key].get(step)
                cell = _f(r.get(metric)) if r else "–"
                if r and metric == "dev_auc_mean":
                    cell += f" ({r.get('dev_questions_with_both', '–')})"
                cells.append(cell)
            out.append(f"| {step} | " + " | ".join(cells) + " |")
        out.append("")
    return out


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
        split = f.stem.removeprefix("compare_")
        before, after = (_jsonl(results / "caspo" / f"{m}_{split}" / "steps.jsonl") for m in ("sft", "caspo"))
        if before and after:
            verdicts.append(f"- {f.stem}: CASPO halves ECE: {caspo_halves(before, after)}")
    return out, verdicts or ["- CASPO halves ECE: no comparison yet."]


def caspo_halves(before: list[dict], after: list[dict], resamples: int = compare.RESAMPLES,
                 seed: int = compare.SEED) -> str:
    """"CASPO halves step ECE": the ratio ECE(after) / ECE(before) with a bootstrap interval by question (the
    same questions are judged before and after, their steps differ); p = the share of resamples above 0.5."""
    from eval.metrics import ece  # noqa: PLC0415

    questions = sorted({r["question"] for r in before} & {r["question"] for r in after})
    by_q = {m: {q: [r for r in rows if r["question"] == q] for q in questions} for m, rows in
            (("before", before), ("after", after))}

    def ece_of(m: str, qs) -> float:
        rows = [r for q in qs for r in by_q[m][q]]
        return ece([r["confidence"] for r in rows], [bool(r["correct"]) for r in rows])

    rng = np.random.default_rng(seed)
    draws = [[questions[i] for i in rng.integers(0, len(questions), len(questions))] for _ in range(resamples)]
    ratios = np.array([ece_of("after", qs) / ece_of("before", qs) for qs in draws])
    est = ece_of("after", questions) / ece_of("before", questions)
    lo, hi = compare.percentile_interval(ratios)
    p = float(np.mean(ratios > 0.5))
    return (f"{compare.halves(lo, hi)} (ECE after/before {est:.3f} [{lo:.3f}, {hi:.3f}], bootstrap p = {compare.fmt_p(p)}; "
            f"{len(questions)} questions resampled)")


def step_stats_by_question(before: list[dict], after: list[dict], resamples: int = compare.RESAMPLES,
                           seed: int = compare.SEED) -> dict[str, tuple[float, float, float, float | None, float | None]]:
    """Step accuracy, step ECE, entropy gap (mean entropy of wrong steps - of right ones) and step AUROC of the entropy
    confidence, before and after, with one bootstrap by question (the same questions are judged by both models,
    their steps differ): stat -> (before, after, after - before, lo, hi) of the difference."""
    from eval.metrics import auroc, ece  # noqa: PLC0415

    questions = sorted({r["question"] for r in before} & {r["question"] for r in after})
    by_q = [{q: [r for r in rows if r["question"] == q] for q in questions} for rows in (before, after)]

    def gap(rows):
        right = [r["mean_entropy"] for r in rows if r["correct"]]
        wrong = [r["mean_entropy"] for r in rows if not r["correct"]]
        return float(np.mean(wrong) - np.mean(right)) if right and wrong else float("nan")

    stats = {"step accuracy": lambda rows: float(np.mean([bool(r["correct"]) for r in rows])),
             "step ECE": lambda rows: ece([r["confidence"] for r in rows], [bool(r["correct"]) for r in rows]),
             "entropy gap": gap,
             "step AUROC": lambda rows: auroc([r["confidence"] for r in rows], [bool(r["correct"]) for r in rows])}
    draws = compare.bootstrap_indices(len(questions), resamples, seed)
    out = {}
    for name, fn in stats.items():
        def value(m: int, idx) -> float:
            v = fn([r for i in idx for r in by_q[m][questions[i]]])
            return float("nan") if v is None else float(v)

        every = range(len(questions))
        b, a = value(0, every), value(1, every)
        lo, hi = compare.percentile_interval([value(1, idx) - value(0, idx) for idx in draws])
        out[name] = (b, a, a - b, lo, hi)
    return out


def caspo1k_section(results: Path) -> tuple[list[str], list[str]]:
    """make lab-caspo1k (issue 21 item 3): the rounds of each learning rate, the dev choice, and the test
    comparison with intervals by question; the claim "CASPO halves step ECE"."""
    root = results / "caspo1k"
    chosen = _json(root / "chosen.json")
    if not root.is_dir():
        return [], []
    out = ["## CASPO at 1,000 pairs (make lab-caspo1k)", "",
           "One CASPO training per learning rate from the SFT checkpoint: 704 arith train problems, 2 rounds (T 0.7, "
           "1.0), on-policy contexts judged by the exact critic, sampled through a colocated vLLM engine; DPO "
           "(TRL, sigmoid, β 0.1) at an effective batch of 32, 16 steps per round. Step-level calibration by "
           "`lab.steps` (dev: 64 questions per learning rate; test: 200 questions, once, at the learning rate with "
           "the lowest dev step ECE). Round 0 samples from SFT whatever the learning rate, so it is collected once, by the "
           "first learning rate, and the others train on its pairs (collect s: \"reused\").", "",
           "| learning rate | round | temperature | steps judged | step accuracy | pairs (incorrect / unconfident) | "
           "collect s | DPO s | DPO loss |", "|---|---|---|---|---|---|---|---|---|"]
    def by_lr(d: Path) -> float:  # numeric order (5e-07 before 2e-06); SFT's dev row first
        return -1.0 if d.name == "dev-sft" else float(d.name.split("-lr", 1)[1])

    total = {}
    for train in sorted(root.glob("train-lr*"), key=by_lr):
        lr = train.name.removeprefix("train-")
        for r in (r for r in _jsonl(train / "metrics.jsonl") if "pairs" in r):
            total[lr] = total.get(lr, 0) + r["pairs"]
            out.append(f"| {lr} | {r['round']} | {r.get('temperature')} | {r['steps']} | {_f(r['step_accuracy'])} | "
                       f"{r['pairs']} ({r.get('pairs_incorrect')} / {r.get('pairs_unconfident')}) | "
                       f"{'reused' if r.get('pairs_from') else _f(r.get('collect_s'), 0)} | {_f(r.get('dpo_s'), 0)} | "
                       f"{_f(r.get('dpo_loss'))} |")
    out += ["", "Pairs per learning rate: " + (", ".join(f"{lr} {n:,}" for lr, n in total.items()) or "none yet") + ".", ""]
    devs = [(d.name.removeprefix("dev-"), r) for d in sorted(root.glob("dev-*"), key=by_lr)
            if (r := _json(d / "summary.json"))]
    if devs:
        out += ["Dev (64 questions, the sweep's choice; no intervals: it only ranks the learning rates):", "",
                "| model | steps | step accuracy | step ECE | entropy gap | AUROC (max prob) |", "|---|---|---|---|---|---|"]
        out += [f"| {name} | {r['steps']} | {_f(r['step_accuracy'])} | {_f(r['ece'])} | {_f(r['entropy_gap'])} | "
                f"{_f(r['auroc_max_prob'])} |" for name, r in devs] + [""]
    if chosen:
        out += ["Dev step ECE: " + ", ".join(f"{n} {_f(e)}" for n, e in chosen["dev_ece"].items())
                + f"; chosen: **{chosen['chosen']}** ({chosen['rule']}).", ""]
    before, after = (_jsonl(root / f"test-{m}" / "steps.jsonl") for m in ("sft", chosen["chosen"] if chosen else "-"))
    if not (before and after):
        return out + ["No test comparison yet.", ""], ["- caspo1k: CASPO halves step ECE: not run."]
    stats = step_stats_by_question(before, after)
    out += [f"Test ({len({r['question'] for r in before})} questions; SFT {len(before)} steps, CASPO {len(after)}): "
            "SFT → CASPO; difference with a 95 % bootstrap interval by question (2,000 resamples).",
            "", "| statistic | SFT | CASPO | CASPO − SFT [95 % CI] |", "|---|---|---|---|"]
    out += [f"| {name} | {_f(b)} | {_f(a)} | {a - b:+.3f} [{lo:+.3f}, {hi:+.3f}] |"
            for name, (b, a, _, lo, hi) in stats.items()]
    b, a, d, lo, hi = stats["entropy gap"]
    return out + [""], [f"- caspo1k: CASPO halves step ECE: {caspo_halves(before, after)}",
                        f"- caspo1k: entropy gap (paper 0.04 → 0.66): {_f(b)} → {_f(a)}, difference {d:+.3f} "
                        f"[{lo:+.3f}, {hi:+.3f}]"]


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


def transfer_verdict(c: dict, verdict: tuple[str, float] | None, base: str = "SFT") -> str:
    """"better than BASE" (Holm across the table) with the paired accuracy difference and token ratio."""
    if not c.get("n") or verdict is None:
        return "missing"
    return (f"{verdict[0]} (Δacc {compare.fmt_stat(c['accuracy'], sign=True)}, Holm p = {compare.fmt_p(verdict[1])}; "
            f"tokens {compare.fmt_stat(c.get('tokens_ratio'))}× {base}'s; {c['n']} paired items)")


def transfer_runs(results: Path, split: str, model: str, strategy: str, kind: str = "transfer") -> list[dict]:
    """The rows of one transfer run: ``<kind>/<model>/<split>-k<K>/<strategy with @ as _k>/``."""
    for folder in sorted((results / kind / model).glob(f"{split}-k*")):
        rows = run_rows(folder / strategy.replace("@", "_k"))
        if rows:
            return rows
    return []


def transfer_kinds(results: Path) -> list[str]:
    """"transfer" (make lab-transfer), then each "transfer-rl800-s<seed>" (make lab-transfer800)."""
    return ["transfer", *sorted(p.name for p in results.glob("transfer-rl*") if p.is_dir())]


def _cat_source(folder: Path) -> str:
    """Where a transfer run's CaT settings came from (its segments record it), as a sentence."""
    sources = sorted({seg["cat_settings_from"] for seg in _jsonl(folder / "segments.jsonl") if "cat_settings_from" in seg})
    return f" CaT's settings (τ, confident threshold): {', '.join(f'`{x}`' for x in sources)}." if sources else ""


def transfer_section(results: Path) -> tuple[list[str], list[str]]:
    out, verdicts = ["## Calibration → search (make lab-transfer)", ""], []
    files = [f for kind in transfer_kinds(results) for f in sorted((results / kind).glob("compare_*.json"))]
    if not files:
        return out + ["No transfer results yet.", ""], ["- Better calibration buys accuracy or tokens: not run."]
    for f in files:
        data = json.loads(f.read_text())
        split, kind = f.stem.removeprefix("compare_"), f.parent.name
        title = f.stem if kind == "transfer" else f"{kind}/{f.stem}"
        if kind != "transfer":
            out += [f"`{kind}`: `make lab-transfer800 SEED={kind.rsplit('-s', 1)[1]}`: make lab-rl800's checkpoints of "
                    "that seed; PC and CaT-stream at the sampling issue 20's dev runs chose (as make lab-search); every "
                    "model reports its raw confidence. Pairs: `eval.compare` on the shared items, Holm across the "
                    f"table's comparisons.{_cat_source(results / kind)}", ""]
        out += [f"### {title}", "", "| model | strategy | accuracy [95% CI] | tokens/query | ECE | AUROC |",
                "|---|---|---|---|---|---|"]
        for model, strategies in data.items():
            for strategy, r in strategies.items():
                out.append(f"| {model} | {strategy} | {_f(r['accuracy'])} [{_f(r['acc_lo95'])}, {_f(r['acc_hi95'])}] | "
                           f"{_f(r['tokens_per_query'], 1)} | {_f(r['ece'])} | {_f(r['auroc'])} |")
        out.append("")
        pairs = [(m, "sft", "SFT") for m in data if m != "sft" and "sft" in data]
        # the same RL with and without a calibration term (CAPO's, C²GSPG's)
        pairs += [(m, "grpo", "GRPO") for m in ("capo", "c2gspg") if m in data and "grpo" in data]
        comparisons = {(m, b, s): compare.compare_rows(transfer_runs(results, split, m, s, kind),
                                                       transfer_runs(results, split, b, s, kind))
                       for m, b, _ in pairs for s in data[m] if s in data[b]}
        family = better_family({key: c for key, c in comparisons.items() if c.get("n")})
        for (m, b, s), c in comparisons.items():
            what = "GRPO (the calibration term alone)" if b == "grpo" else "SFT"
            verdicts.append(f"- {title} {m} better than {what}, {s}: "
                            f"{transfer_verdict(c, family.get((m, b, s)), 'GRPO' if b == 'grpo' else 'SFT')}")
    return out, verdicts or ["- Better calibration buys accuracy or tokens: SFT only so far."]


def commands_section(results: Path) -> list[str]:
    out = ["## Commands and wall times", "", "| experiment | command | segments | wall s (sum) |", "|---|---|---|---|"]
    reruns = tuple(rerun_kinds(results))
    per_run = ("rl", "rl800", "rl8000-gpu", *reruns)  # one segments.jsonl per run
    for kind in ("sft", "calibration", "calibration/features", "calibration/features-extended", "search",
                 "search/chosen", "search/sampling-sweep",
                 "search/sampling-test", "search/cat-temperature", "search/cat-temperature-test", "rl", "rl800",
                 *reruns, "rl8000-gpu", "caspo", "caspo1k", *transfer_kinds(results), "all"):
        files = ([results / kind / "segments.jsonl"] if kind not in per_run
                 else sorted((results / kind).glob("*/segments.jsonl")))
        for f in files:
            segs = _jsonl(f)
            if not segs:
                continue
            if kind == "sft":  # the latest training only: an earlier one is the same recipe on another machine
                segs = trainings(segs)[-1]
            if kind in ("rl800", *reruns):  # the run shown: not an earlier one from another SFT checkpoint
                segs = current_run(segs)
            name = kind if kind not in per_run else f"{kind}/{f.parent.name}"
            default = {"sft": "make lab-sft", "rl": f"make lab-rl OBJECTIVE={f.parent.name}",
                       "rl800": "make lab-rl800", "rl8000-gpu": "bash scripts/lab_gpu.sh",
                       "search/sampling-sweep": "make lab-sweep",
                       "calibration/features": "make lab-calibrate-features",
                       "search/chosen": "make lab-search",
                       "search/cat-temperature": "make lab-cat-temperature"}.get(kind, f"make lab-{kind}")
            cmds = sorted({s.get("command", default) for s in segs})
            out.append(f"| {name} | {'<br>'.join(f'`{c}`' for c in cmds)} | {len(segs)} | "
                       f"{sum(float(s['wall_s']) for s in segs):.0f} |")
    return out + [""]


def build(results: Path) -> str:
    lines = ["# Calibration lab results", "",
             "Generated by `make lab-report` from `results/lab/` (do not edit). Design and commands: lab/README.md.", ""]
    lines += sft_section(results)
    verdicts = []
    for section in (calibration_section, calibration_features_section, search_section, sampling_sweep_section,
                    cat_temperature_section, sampling_test_section, dedup_section, rl_section, rl800_section,
                    caspo_section, caspo1k_section, transfer_section):
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
