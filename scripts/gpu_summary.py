"""summary.md of a scripts/gpu_check.sh results folder: GPU, tests, bench, throughput, training, serving.

    python scripts/gpu_summary.py results/gpu > results/gpu/summary.md
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eval import report  # noqa: E402

# CPU figures of training/README.md (2 shared CPU cores, fp32, 2026-11-23)
CPU_RL_STEP_S = 69.0  # rl capo: median step, vLLM rollouts, 2 prompts x 8 samples, <= 192 tokens
CPU_CASPO_S = 93.0  # caspo: 1 round, 3 questions, 4 DPO steps, whole command


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def env(out: Path) -> list[str]:
    text = (out / "env.txt").read_text() if (out / "env.txt").exists() else ""
    lines = text.splitlines()
    gpu = lines[1] if len(lines) > 1 else "?"
    extra = [line for line in lines if line.startswith(("torch ", "transformers ", "trl ", "vllm ", "code:"))]
    return [f"GPU (name, driver, memory, compute capability): **{gpu}**", *[f"- {e}" for e in extra]]


def pytest_counts(xml: Path) -> dict:
    """Counts, wall time and failures of a JUnit XML report (the raw pytest.xml is not committed)."""
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    problems = [{"kind": bad, "name": case.get("name"), "message": (node.get("message") or "")[:200]}
                for case in suite.iter("testcase") for bad in ("failure", "error")
                if (node := case.find(bad)) is not None]
    return {**counts, "time_s": float(suite.get("time", 0)), "problems": problems}


def tests(out: Path) -> list[str]:
    """From tests.json, written here from pytest.xml when that is present (gpu_check.sh writes pytest.xml and
    pytest.log; only tests.json is kept with the results)."""
    if (out / "pytest.xml").exists():
        (out / "tests.json").write_text(json.dumps(pytest_counts(out / "pytest.xml"), indent=1) + "\n")
    if not (out / "tests.json").exists():
        return ["tests: not run"]
    a = json.loads((out / "tests.json").read_text())
    passed = a["tests"] - a["failures"] - a["errors"] - a["skipped"]
    lines = [f"pytest: {passed} passed, {a['failures']} failed, {a['errors']} errors, {a['skipped']} skipped "
             f"of {a['tests']} ({a['time_s']:.0f} s)"]
    lines += [f"- {p['kind'].upper()} {p['name']}: {p['message']}" for p in a["problems"]]
    return lines


def bench(out: Path) -> list[str]:
    summaries = {}
    for name, sub in (("none", "none"), ("self_consistency", "self_consistency"), ("cat (stream)", "cat"),
                      ("cat (adaptive)", "cat_adaptive")):
        f = out / "bench" / sub / "summary.json"
        if f.exists():
            summaries[name] = json.loads(f.read_text())
    if not summaries:
        return ["bench: not run"]
    sc, none = summaries.get("self_consistency", {}), summaries.get("none", {})
    rows = report.bench_rows({k: v for k, v in summaries.items()})
    lines = [report.markdown_table(rows)]
    rows_of = {name: {r["id"]: r for r in jsonl(out / "bench" / sub / "results.jsonl") if not r.get("error")}
               for name, sub in (("none", "none"), ("self_consistency", "self_consistency"),
                                 ("cat (stream)", "cat"), ("cat (adaptive)", "cat_adaptive"))}
    for cat in ("cat (stream)", "cat (adaptive)"):
        mine = rows_of.get(cat) or {}
        ids = [i for i in mine if i in rows_of["none"] and i in rows_of["self_consistency"]]
        if not ids:
            continue
        greedy, sc4 = rows_of["none"], rows_of["self_consistency"]
        p50 = lambda rows: statistics.median(rows[i]["latency_s"] for i in ids)  # noqa: E731
        tok = lambda rows: statistics.mean(rows[i]["tokens"] for i in ids)  # noqa: E731
        scope = "all items" if len(ids) == len(greedy) else f"ONLY the {len(ids)} items it finished (same items for all)"
        lines.append(f"- {cat}, {scope}: p50 latency / greedy p50 latency = **{p50(mine) / p50(greedy):.2f}x**; "
                     f"tokens / SC@4 tokens = **{tok(mine) / tok(sc4):.2f}x** (greedy p50 {p50(greedy):.2f} s, "
                     f"{tok(greedy):.0f} tok; SC@4 {tok(sc4):.0f} tok; {cat} p50 {p50(mine):.2f} s, {tok(mine):.0f} tok)")
    return lines


def throughput(out: Path) -> list[str]:
    f = out / "throughput.json"
    if not f.exists():
        return ["throughput: not run"]
    lines = ["| concurrent requests | requests | completion tokens | wall s | tokens/s |", "|---|---|---|---|---|"]
    for r in json.loads(f.read_text()):
        lines.append(f"| {r['concurrency']} | {r['requests']} | {r['completion_tokens']} | {r['wall_s']} | "
                     f"{r['tokens_per_s']} |")
    return lines


def training(out: Path) -> list[str]:
    walls = {r["name"]: r for r in jsonl(out / "walls.jsonl")}
    t = out / "train"
    lines = ["| run | command wall s | seconds/step on the GPU | CPU figure (training/README.md) | served |",
             "|---|---|---|---|---|"]
    serve = {r.get("checkpoint"): r for r in jsonl(out / "serve_checks.jsonl")}

    def served(name):
        r = serve.get(name)
        if not r:
            return "not checked"
        if "error" in r:
            return f"FAILED ({r['error']})"
        return f"yes: answer {r['answer']!r}, confidence {r['confidence']:.2f}"

    def wall(name):
        r = walls.get(name)
        return "not run" if r is None else f"{r['wall_s']}" + ("" if r["rc"] == 0 else f" (rc {r['rc']})")

    rl = [r["step_time_s"] for r in jsonl(t / "rl_capo.metrics.jsonl") if "step_time_s" in r]
    rl_cell = f"median {statistics.median(rl):.2f} (n={len(rl)})" if rl else "–"
    lines.append(f"| rl --objective capo, 10 steps x 2 prompts x 8 samples, <= 192 tokens | {wall('rl_capo')} | "
                 f"{rl_cell} | median {CPU_RL_STEP_S:.0f} s/step (vLLM rollouts, fp32) | {served('rl_capo')} |")
    for name, what, cpu in (("caspo", "caspo, 1 round (3 questions, 4 DPO steps)", f"{CPU_CASPO_S:.0f} s whole command"),
                            ("sft", "sft, 50 steps, batch 4", "none in training/README.md")):
        log = (t / f"{name}.log").read_text() if (t / f"{name}.log").exists() else ""
        m = re.findall(r"'train_runtime': '?([0-9.]+)'?.*?'train_steps_per_second': '?([0-9.]+)'?", log)
        step = f"{1 / float(m[-1][1]):.3f} (Trainer: {float(m[-1][0]):.1f} s train runtime)" if m else "–"
        lines.append(f"| {what} | {wall(name)} | {step} | {cpu} | {served(name)} |")
    return lines


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "results/gpu")
    parts = [["# GPU check (scripts/gpu_check.sh)"], env(out), ["## Tests"], tests(out),
             ["## Bench: 30 SingleOp items, one server"], bench(out), ["## Decode throughput"], throughput(out),
             ["## Training on the GPU"], training(out)]
    print("\n\n".join("\n".join(p) for p in parts))


if __name__ == "__main__":
    main()
