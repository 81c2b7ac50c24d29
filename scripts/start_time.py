"""How long ``python -m cat_serve --engine vllm`` takes to answer ``/health``, start after start.

    python scripts/start_time.py --starts 2 [--env VLLM_USE_AOT_COMPILE=1] [--out results/start_time.json]

Each start is a fresh server process on the embedded model (float32, as the tests serve it), stopped once
healthy. The first start after a change of code or settings compiles the model; later starts should load
vLLM's compile cache. The engine's own "init engine ... took N s" line is read from the log beside the
wall time to /health. ``--env K=V`` runs every start with that variable (e.g. the AOT path vLLM takes by
default, which cat-serve turns off on the CPU: see ``cat_serve.engine.vllm_engine.cpu_env_defaults``).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import tempfile
import time
from pathlib import Path

from cat_serve.process import ServerProcess

ARGS = ["--engine", "vllm", "--dtype", "float32", "--max-model-len", "2048", "--kv-cache-gib", "1"]


def one_start(log: Path, env: dict[str, str], extra: list[str]) -> dict:
    t0 = time.monotonic()
    server = ServerProcess.cat_serve([*ARGS, *extra], log=log, env=env)
    try:
        server.start(1800)
        wall = time.monotonic() - t0
    finally:
        server.stop()
    text = log.read_text(errors="replace")
    init = re.search(r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s", text)
    return {"health_s": round(wall, 1), "engine_init_s": float(init.group(1)) if init else None,
            "recompiled_after_load_failure": "due to a load failure" in text}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--starts", type=int, default=2)
    ap.add_argument("--env", action="append", default=[], metavar="K=V")
    ap.add_argument("--server-args", default="", help="more cat-serve flags, e.g. --enforce-eager")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    env = dict(kv.split("=", 1) for kv in args.env)
    with tempfile.TemporaryDirectory() as d:
        rows = []
        for i in range(args.starts):
            rows.append({"start": i + 1, **one_start(Path(d) / f"server-{i}.log", env, args.server_args.split())})
            print(json.dumps(rows[-1]), flush=True)
    result = {"env": env, "server_args": args.server_args, "machine": platform.processor() or platform.machine(), "starts": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
