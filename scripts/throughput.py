"""Decode throughput of a running cat-serve: completion tokens per second at several concurrency levels.

    python scripts/throughput.py --base-url http://127.0.0.1:8000/v1 --levels 1,16 --max-tokens 128

For each level c, ``max(c, --min-requests)`` greedy chat requests (plain decoding, no search) are sent
with at most c in flight; tokens/s = the completion tokens of all of them / the wall time of the level.
Prints and writes (``--out``) one JSON row per level."""

from __future__ import annotations

import argparse
import asyncio
import json
import time

TOPICS = ["a lighthouse", "a fox", "the sea", "a train", "a garden", "a robot", "winter", "a market",
          "a violin", "a desert", "a bridge", "a comet", "a library", "a river", "a kite", "a forest"]


async def level(client, model: str, concurrency: int, n: int, max_tokens: int) -> dict:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> int:
        async with sem:
            r = await client.chat.completions.create(
                model=model, max_tokens=max_tokens, temperature=0,
                messages=[{"role": "user", "content": f"Write a long story about {TOPICS[i % len(TOPICS)]}."}])
            return r.usage.completion_tokens

    t0 = time.perf_counter()
    tokens = await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - t0
    return {"concurrency": concurrency, "requests": n, "completion_tokens": sum(tokens), "wall_s": round(wall, 3),
            "tokens_per_s": round(sum(tokens) / wall, 1), "mean_tokens_per_request": sum(tokens) / n}


async def main_async(args) -> list[dict]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=args.base_url, api_key="none", max_retries=0, timeout=600)
    model = args.model or (await client.models.list()).data[0].id
    await level(client, model, 1, 1, 8)  # warm-up
    rows = []
    for c in args.levels:
        rows.append(await level(client, model, c, max(c, args.min_requests), args.max_tokens))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", required=True)
    p.add_argument("--model", default=None)
    p.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16])
    p.add_argument("--min-requests", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--out", default=None, help="write the rows here as JSON")
    args = p.parse_args()
    rows = asyncio.run(main_async(args))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
