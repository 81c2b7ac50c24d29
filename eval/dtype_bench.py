"""float32 vs bfloat16 decode throughput of the served model, side by side in one script.

    python -m eval.dtype_bench --model embedded --requests 4 --max-tokens 128 --rounds 3

Starts one ``cat-serve --dtype D --calibration none`` per dtype (both stay up), sends each a warm-up
request, then ``rounds`` rounds that each measure every dtype in turn (the order alternates per
round): ``requests`` concurrent plain chat requests of ``max_tokens`` tokens (temperature 0, the
same prompts for every dtype). Interleaving the rounds makes both dtypes share whatever else runs on
the machine. Throughput = completion tokens / wall time summed over the rounds. Also prints the CPU's
bf16 flags and what ``--dtype auto`` resolves to on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works, step by step.",
    "List ten facts about the ocean, one per line.",
    "Describe a day at a busy train station.",
]


async def _round(client, model: str, n: int, max_tokens: int) -> int:
    async def one(i: int) -> int:
        r = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            max_tokens=max_tokens, temperature=0.0)
        return r.usage.completion_tokens

    return sum(await asyncio.gather(*(one(i) for i in range(n))))


async def one_round(base_url: str, requests: int, max_tokens: int, warmup: bool = False) -> tuple[int, float]:
    from openai import AsyncOpenAI  # noqa: PLC0415

    client = AsyncOpenAI(base_url=base_url, api_key="none", timeout=1800, max_retries=0)
    model = (await client.models.list()).data[0].id
    if warmup:
        await _round(client, model, 1, 8)
    t0 = time.perf_counter()
    tokens = await _round(client, model, requests, max_tokens)
    wall = time.perf_counter() - t0
    await client.close()
    return tokens, wall


def main(argv: list[str] | None = None) -> int:
    from cat_serve.engine.dtype import NATIVE_BF16_FLAGS, cpu_flags, resolve_dtype  # noqa: PLC0415
    from eval.calibrate import own_server, start_own_server  # noqa: PLC0415

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--requests", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("runs/dtype_bench"))
    args = p.parse_args(argv)

    flags = cpu_flags()
    out = {"cpu_bf16_flags": sorted(NATIVE_BF16_FLAGS & flags),
           "auto_resolves_to": resolve_dtype("auto", on_cuda=False, flags=flags), "results": {}}
    dtypes = args.dtypes.split(",")
    servers = {}
    try:
        for dtype in dtypes:
            servers[dtype] = own_server(args.model, args.out / f"server-{dtype}.log",
                                        ["--dtype", dtype, "--kv-cache-gib", "1"])
            start_own_server(servers[dtype])
            asyncio.run(one_round(servers[dtype].base_url, 1, 8, warmup=True))
        totals = {d: [0, 0.0] for d in dtypes}
        for r in range(args.rounds):
            for dtype in (dtypes if r % 2 == 0 else dtypes[::-1]):
                tokens, wall = asyncio.run(one_round(servers[dtype].base_url, args.requests, args.max_tokens))
                totals[dtype][0] += tokens
                totals[dtype][1] += wall
                print(f"round {r} {dtype}: {tokens} tokens in {wall:.1f}s", flush=True)
        for d, (tokens, wall) in totals.items():
            out["results"][d] = {"tokens": tokens, "wall_s": round(wall, 2), "tok_per_s": round(tokens / wall, 1)}
    finally:
        for server in servers.values():
            server.stop()
    res = out["results"]
    if "float32" in res and "bfloat16" in res:
        out["fp32_over_bf16"] = round(res["float32"]["tok_per_s"] / res["bfloat16"]["tok_per_s"], 2)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
