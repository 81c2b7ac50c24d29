"""CaT faithful with and without ``dedup`` on the same arith items, against a running cat-serve (issue #20, item 3).

    python scripts/cat_dedup_measure.py --base-url http://127.0.0.1:8731/v1 --k 4 --limit 8 --out /tmp/dedup.json

Per setting: accuracy, tokens per query (every token the search generated), engine-generated steps
(``search.expanded``), and the duplicate share of the exact run's answer set (1 - distinct path texts /
answer paths). The two settings sample independently (the server's sampling is not seeded), so their
accuracies differ by sampling noise as well; tokens and steps are the point.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from openai import AsyncOpenAI

from cat_serve.prompts import EVAL_SUFFIX
from eval.datasets import load_dataset
from eval.grading import grade  # the grading cat-eval uses
from lab.recipe import LAB_DIFFICULTY


async def one(client, model, item, k, dedup, sem):
    params = {"mode": "faithful", "branches": k, "step_delimiters": ["\n"], "return_candidates": True,
              "dedup": dedup}
    async with sem:
        r = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": item.question + EVAL_SUFFIX}], max_tokens=160,
            temperature=0.7, extra_body={"search": "cat", "search_params": params})
    search = r.model_extra["search"]
    cands = search.get("candidates", [])
    weights = [c.get("multiplicity", 1) for c in cands]
    return {"id": item.id, "correct": bool(grade(search.get("answer"), item.gold)) if search.get("answer") else False,
            "tokens": search["tokens_generated"], "expanded": search["expanded"],
            "answer_paths": sum(weights), "distinct_paths": len({c["text"] for c in cands})}


async def main_async(args):
    items = load_dataset(f"arith:{LAB_DIFFICULTY}@test", limit=args.limit, seed=0)
    client = AsyncOpenAI(base_url=args.base_url, api_key="EMPTY", timeout=1800)
    model = (await client.models.list()).data[0].id
    sem = asyncio.Semaphore(args.concurrency)
    out = {}
    for dedup in (False, True):
        rows = await asyncio.gather(*(one(client, model, it, args.k, dedup, sem) for it in items))
        n = len(rows)
        out[f"dedup={dedup}"] = {
            "k": args.k, "items": n, "accuracy": sum(r["correct"] for r in rows) / n,
            "tokens_per_query": sum(r["tokens"] for r in rows) / n,
            "steps_generated_per_query": sum(r["expanded"] for r in rows) / n,
            "answer_paths": sum(r["answer_paths"] for r in rows), "distinct_paths": sum(r["distinct_paths"] for r in rows),
            "duplicate_share": 1 - sum(r["distinct_paths"] for r in rows) / max(1, sum(r["answer_paths"] for r in rows)),
            "rows": rows}
        print(json.dumps({k: v for k, v in out[f"dedup={dedup}"].items() if k != "rows"}), flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    out = asyncio.run(main_async(args))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
