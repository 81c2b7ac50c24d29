"""The lab's fixed recipes and one-command drivers (``make lab-sft``, ``make lab-search``).

    python -m lab.recipe sft       # train (or resume, or skip when cached) the SFT checkpoint
    python -m lab.recipe path      # print the cached SFT checkpoint's path (make serve MODEL=$(...))
    python -m lab.recipe search --split dev|test [--k 4 8] [--limit N]   # serve it, run lab.search

The SFT checkpoint lives in ``$CAT_SERVE_CACHE`` (default ``~/.cache/cat-serve``) under
``lab/sft-<hash of the recipe>``, so a changed recipe never reuses a stale checkpoint. Its training
runs through ``cat-train sft --resume``: an interrupted run continues from its last checkpoint
(every ``save_steps``). Wall and CPU seconds of every training segment are appended to
``lab/results/sft/segments.jsonl``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "lab" / "results"

# Training mixture: five difficulties interleaved, so the model sees every one from the first batch on.
# The evaluation difficulty (LAB_DIFFICULTY) is chosen afterwards on the dev split.
SFT_MIX = ("arith:ops=2,digits=1|arith:ops=2,digits=2,distractors=1|arith:ops=3,digits=1,distractors=1"
           "|arith:ops=3,digits=2|arith:ops=4,digits=2,distractors=1")
SFT_RECIPE = {
    "model": "embedded", "data_path": SFT_MIX, "limit": 4000, "max_steps": 45, "batch_size": 8, "gradient_accumulation_steps": 2,
    "learning_rate": 2e-4, "lr_scheduler_type": "constant_with_warmup", "warmup_steps": 10,
    "prompt_style": "both", "max_length": 256, "save_steps": 5, "seed": 0,
}
# chosen on dev (lab/results/sft/dev_difficulty.json); the test split is run once with it
LAB_DIFFICULTY = "ops=3,digits=2,distractors=1"


def cache_root() -> Path:
    return Path(os.environ.get("CAT_SERVE_CACHE", Path.home() / ".cache" / "cat-serve")) / "lab"


def recipe_hash(recipe: dict) -> str:
    """Hash of everything but ``max_steps`` and ``save_steps``: with a constant learning rate after warm-up a
    shorter run is the exact prefix of a longer one, so raising ``max_steps`` resumes the cached run."""
    key = {k: v for k, v in recipe.items() if k not in ("max_steps", "save_steps")}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]


def sft_dir(recipe: dict = SFT_RECIPE) -> Path:
    return cache_root() / f"sft-{recipe_hash(recipe)}"


def sft_argv(recipe: dict, output_dir: Path) -> list[str]:
    from training.models import EMBEDDED

    model = recipe["model"]
    if model == EMBEDDED:
        from cat_serve.models import ensure_embedded_model  # noqa: PLC0415

        model = str(ensure_embedded_model())
    argv = ["sft", "--output-dir", str(output_dir), "--resume", "--model", model]
    for key, value in recipe.items():
        if key != "model":
            argv += ["--" + key.replace("_", "-"), str(value)]
    return argv


def trained_steps(path: Path) -> int:
    from training.checkpoint import is_checkpoint, read_state

    return read_state(path)["step"] if is_checkpoint(path) else 0


def train_sft(recipe: dict = SFT_RECIPE) -> Path:
    out = sft_dir(recipe)
    done = trained_steps(out)
    if done >= recipe["max_steps"]:
        print(f"cached: {out} (step {done})")
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "training.cli", *sft_argv(recipe, out)]
    print(" ".join(cmd), flush=True)
    t0, r0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, cwd=REPO, check=True)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    seg = {"recipe": recipe_hash(recipe), "from_step": done, "to_step": trained_steps(out),
           "wall_s": round(time.time() - t0, 1), "cpu_s": round(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, 1),
           "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)), "cpus": os.cpu_count()}
    (RESULTS / "sft").mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "sft" / "segments.jsonl", "a") as f:
        f.write(json.dumps(seg) + "\n")
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(model: Path, *, log: Path, timeout: float = 900):
    """A cat-serve (vLLM, 1 GiB KV cache) on ``model``; yields its /v1 base URL; stopped on exit."""
    import httpx

    port = _free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "cat_serve", "--model", str(model), "--engine", "vllm", "--port", str(port),
           "--kv-cache-gib", "1", "--max-model-len", "1024"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not healthy after {timeout}s: {log.read_text()[-2000:]}")
            time.sleep(2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("sft")
    sub.add_parser("path")
    s = sub.add_parser("search")
    s.add_argument("--split", choices=("dev", "test"), default="test")
    s.add_argument("--k", type=int, nargs="+", default=[4, 8])
    s.add_argument("--limit", type=int, default=300)
    s.add_argument("--only", default=None)
    s.add_argument("--model", default=None, help="default: the cached SFT checkpoint")
    args = ap.parse_args(argv)
    if args.cmd == "path":
        print(sft_dir())
        return 0
    if args.cmd == "sft":
        print(train_sft())
        return 0
    from lab.search import run_search

    model = Path(args.model) if args.model else train_sft()
    with served(model, log=RESULTS / "search" / f"server-{args.split}.log") as base_url:
        for k in args.k:
            run_search(base_url, split=args.split, k=k, limit=args.limit, out=RESULTS / "search",
                       difficulty=LAB_DIFFICULTY, only=args.only.split(",") if args.only else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
