"""What the lab's drivers share: child processes that pass an interrupt on, a served checkpoint, and the
wall-time records (``segments.jsonl``) the report sums."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from cat_serve.process import ServerProcess, run_job
from lab.recipe import REPO, results_root


def record_segment(kind: str, t0: float, **extra) -> None:
    """Append this invocation's command, start and wall time, the CPUs it could use and its OMP_NUM_THREADS (a
    run alone on both cores is about twice as fast as one beside another run), and ``extra`` to
    results/lab/<kind>/segments.jsonl, ``kind`` e.g. "search" or "rl/capo" (a resumed experiment appends a
    second segment; the report sums them)."""
    (results_root() / kind).mkdir(parents=True, exist_ok=True)
    row = {"command": "python -m lab.recipe " + " ".join(sys.argv[1:]), "wall_s": round(time.time() - t0, 1),
           "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
           "cpus": sorted(os.sched_getaffinity(0)), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), **extra}
    with open(results_root() / kind / "segments.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def run_child(cmd: list[str], *, timeout: float = 120, **kw) -> None:
    """``subprocess.run(cmd, check=True)``, except that an interrupt of this process (SIGTERM arrives here as
    SystemExit, see ``main``) is passed on as SIGTERM, so the child (eval.cli, training.cli) stops its own
    server or saves its state; SIGKILL only after ``timeout`` s. subprocess.run would SIGKILL it at once and
    could orphan the vLLM server it started. The child leads its own process group, and what is left of it
    when the child has ended is killed (``cat_serve.process.run_job``): an OOM-killed trainer orphaned its
    vLLM engine (4.5 GiB) twice before."""
    rc = run_job(cmd, timeout=timeout, **kw)
    if rc:
        raise subprocess.CalledProcessError(rc, cmd)


@contextmanager
def served(model: Path, *, log: Path, timeout: float = 900, extra: tuple[str, ...] = ()):
    """A cat-serve (vLLM, 1 GiB KV cache) on ``model``; yields its /v1 base URL; its process group is stopped
    on exit, and by a failed or interrupted start (``cat_serve.process``)."""
    args = ["--model", str(model), "--engine", "vllm", "--kv-cache-gib", "1", "--max-model-len", "1024", *extra]
    with ServerProcess.cat_serve(args, log=log, cwd=REPO, stop_timeout=60).start(timeout) as server:
        yield server.base_url



def exit_on_sigterm() -> None:
    """SIGTERM as SystemExit: `served` stops its cat-serve, `run_child` passes it on, and an interrupted
    search records its segment."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


