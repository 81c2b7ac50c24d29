"""Out-of-the-box cost of CaT vs SC@4 (issue #9): a benchmark script, not a timed test.

    python -m eval.oob_cost --base-url http://127.0.0.1:8000/v1 --out runs/oob_cost

The server runs as a new user starts it (``make serve``: default flags, so the shipped calibration
profile of the embedded model is loaded). Questions: the README's example ("What is 7*6?") plus
``--limit`` (20) MultiArith questions (seeded; MultiArith is not used by ``make calibrate``), sent
as plain user messages with no ``search_params`` and no ``max_tokens``: every search parameter is
the server's default. For each question CaT and SC@4 are requested one after the other (the order
alternates), one request in flight, so both see the same machine load. Reports p50 latency and mean
completion tokens (every token the search generated) of each, and their ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

README_QUESTION = "What is 7*6?"
STRATEGIES = {"cat": {}, "self_consistency": {"n": 4}}  # SC@4 = the server's default n, said explicitly


def main(argv: list[str] | None = None) -> int:
    from openai import OpenAI  # noqa: PLC0415

    from eval import datasets  # noqa: PLC0415
    from eval.grading import grade  # noqa: PLC0415

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    p.add_argument("--dataset", default="multiarith")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/oob_cost"))
    args = p.parse_args(argv)

    client = OpenAI(base_url=args.base_url, api_key="none", timeout=1800, max_retries=0)
    model = client.models.list().data[0]
    items = [(README_QUESTION, "42")] + [(it.question, it.gold) for it in
                                         datasets.load_dataset(args.dataset, limit=args.limit, seed=args.seed)]
    args.out.mkdir(parents=True, exist_ok=True)
    rows_path = args.out / "rows.jsonl"
    done = {(r["i"], r["strategy"]) for r in map(json.loads, rows_path.read_text().splitlines())} \
        if rows_path.exists() else set()
    with open(rows_path, "a") as f:
        for i, (question, gold) in enumerate(items):
            order = list(STRATEGIES) if i % 2 == 0 else list(reversed(STRATEGIES))
            for strategy in order:
                if (i, strategy) in done:
                    continue
                extra = {"search": strategy}
                if STRATEGIES[strategy]:
                    extra["search_params"] = STRATEGIES[strategy]
                t0 = time.perf_counter()
                r = client.chat.completions.create(model=model.id, messages=[{"role": "user", "content": question}],
                                                   extra_body=extra)
                latency = time.perf_counter() - t0
                search = r.model_extra.get("search") or {}
                row = {"i": i, "strategy": strategy, "question": question, "latency_s": latency,
                       "tokens": r.usage.completion_tokens, "answer": search.get("answer"),
                       "correct": grade(r.choices[0].message.content or "", gold),
                       "confidence": r.choices[0].model_extra.get("confidence"),
                       "raw_confidence": search.get("raw_confidence"), "calibrated": search.get("calibrated"),
                       "params": search.get("params")}
                f.write(json.dumps(row) + "\n")
                f.flush()
                print(f"{i:2d} {strategy:16s} {latency:6.1f}s {row['tokens']:5d} tok answer={row['answer']}",
                      flush=True)
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    summary = {"model": model.id, "calibration": (model.model_extra or {}).get("calibration"),
               "questions": len(items)}
    for s in STRATEGIES:
        mine = [r for r in rows if r["strategy"] == s]
        summary[s] = {"n": len(mine), "latency_p50_s": float(np.median([r["latency_s"] for r in mine])),
                      "tokens_mean": float(np.mean([r["tokens"] for r in mine])),
                      "accuracy": float(np.mean([r["correct"] for r in mine]))}
        if s == "cat":
            summary[s]["params"] = mine[0]["params"]
    summary["p50_latency_ratio"] = summary["cat"]["latency_p50_s"] / summary["self_consistency"]["latency_p50_s"]
    summary["tokens_ratio"] = summary["cat"]["tokens_mean"] / summary["self_consistency"]["tokens_mean"]
    readme = next(r for r in rows if r["i"] == 0 and r["strategy"] == "cat")
    summary["readme_example_cat"] = {k: readme[k] for k in ("latency_s", "tokens", "answer", "confidence")}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
