"""Is a retrained SFT checkpoint the one the committed results came from?

    python -m lab.recheck --tag <name>

``make lab-sft`` retrains the checkpoint on a machine without the cache. Training is seeded, but another
CPU (AVX2 instead of AVX512-BF16) rounds differently, and ``--dtype auto`` serves float32 there instead of
bfloat16, so the served model can drift. This serves the cached checkpoint the way ``make lab-search`` does,
runs greedy decoding on the same test items as ``results/lab/search/test-k4/greedy`` and writes, under
``results/lab/sft/recheck/<tag>/``, the rows and ``compare.json``: accuracy then and now, and the share of
items whose output (and whose correctness) is the same. Greedy is deterministic, so the shares measure the
drift of the model and its served precision together.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from lab.recipe import LAB_DIFFICULTY, results_root
from lab.recipe.runs import record_segment, served
from lab.recipe.sft import train_sft


def compare(old: list[dict], new: list[dict]) -> dict:
    """Item-by-item comparison of two greedy runs (rows keyed by id; only ids in both count)."""
    a, b = {r["id"]: r for r in old}, {r["id"]: r for r in new}
    ids = [i for i in a if i in b]
    n = len(ids)
    if not n:
        return {"n": 0}
    return {"n": n,
            "accuracy_then": sum(bool(a[i]["correct"]) for i in ids) / n,
            "accuracy_now": sum(bool(b[i]["correct"]) for i in ids) / n,
            "same_output": sum(a[i]["output"] == b[i]["output"] for i in ids) / n,
            "same_correctness": sum(bool(a[i]["correct"]) == bool(b[i]["correct"]) for i in ids) / n,
            "tokens_then": sum(a[i]["tokens"] for i in ids) / n,
            "tokens_now": sum(b[i]["tokens"] for i in ids) / n}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv=None) -> int:
    from lab.search import run_search

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tag", required=True, help="a name for this machine/session, e.g. 2026-12-02-avx2")
    ap.add_argument("--limit", type=int, default=300)
    args = ap.parse_args(argv)
    t0 = time.time()
    model = train_sft()
    out = results_root() / "sft" / "recheck" / args.tag
    with served(model, log=out / "server.log") as base_url:
        run_search(base_url, split="test", k=4, limit=args.limit, out=out, difficulty=LAB_DIFFICULTY,
                   only=["greedy"], concurrency=8)
    old = _rows(results_root() / "search" / "test-k4" / "greedy" / "results.jsonl")
    new = _rows(out / "test-k4" / "greedy" / "results.jsonl")
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    result = {**compare(old, new), "machine": {"cpus": os.cpu_count(), "arch": platform.machine(),
                                               "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags}}
    (out / "compare.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    record_segment("sft/recheck", t0, tag=args.tag)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
