#!/usr/bin/env python
"""Load and fault run against a cat-serve this script starts on 127.0.0.1 (never any other address).

    python scripts/load_fault.py [--requests 64] [--disconnects 20] [--schemathesis-time 120] [--out DIR]

Phases (each bounded in count and time), output as JSON lines and a summary:
1. ``load``: N concurrent mixed requests (none / self_consistency / cat) through the openai SDK;
   errors other than intended 429s are counted; p50/p95 latency of the 200s; peak RSS of the server's
   process tree (the API process + vLLM's engine core), sampled every 0.2 s.
2. ``disconnect``: M streaming searches whose clients hang up after the first progress event; the
   engine's in-flight count (``/health``) must be back to 0 within 2 s of the last hang-up.
3. ``schemathesis``: ``schemathesis run`` against the server's own /openapi.json; responses with status
   >= 500 are counted (check ``not_a_server_error``).
4. ``sigterm``: K requests in flight, then SIGTERM; the server must exit 0 and every client must get
   an answer or a clean error (none left hanging).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import psutil

from cat_serve.process import ServerProcess, ServerStartError

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # loopback only, by construction
KEY = "load-fault-key"


def start_server(log: Path, extra: list[str], timeout: float = 900) -> ServerProcess:
    """cat-serve on vLLM with this script's key; a failed start stops its process group and exits."""
    args = ["--engine", "vllm", "--max-model-len", "2048", "--kv-cache-gib", "1", "--api-key", KEY, *extra]
    server = ServerProcess.cat_serve(args, log=log, host=HOST, cwd=REPO)
    try:
        return server.start(timeout)
    except ServerStartError as e:
        sys.exit(str(e))


class RSSSampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.proc, self.peak, self.stop = psutil.Process(pid), 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.2)


def request_mix(i: int) -> dict:
    q = f"What is {i % 9 + 2} * {i % 7 + 3}?"
    base = {"messages": [{"role": "user", "content": q}], "max_tokens": 32, "temperature": 0.7, "seed": i}
    kind = ("none", "self_consistency", "cat")[i % 3]
    if kind == "self_consistency":
        base["extra_body"] = {"search": kind, "search_params": {"n": 3}}
    elif kind == "cat":
        base["extra_body"] = {"search": kind, "search_params": {"branches": 2, "max_steps": 3, "max_step_tokens": 12}}
    return {"kind": kind, **base}


async def phase_load(base_url: str, model: str, n: int, pid: int, time_limit: float) -> dict:
    client = openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=time_limit)
    sampler = RSSSampler(pid)
    sampler.start()

    async def one(i):
        req = request_mix(i)
        kind = req.pop("kind")
        t0 = time.monotonic()
        try:
            await client.chat.completions.create(model=model, **req)
            return kind, 200, time.monotonic() - t0
        except openai.APIStatusError as e:
            return kind, e.status_code, time.monotonic() - t0
        except openai.APIError as e:
            return kind, type(e).__name__, time.monotonic() - t0

    t0 = time.monotonic()
    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), time_limit)
    wall = time.monotonic() - t0
    sampler.stop.set()
    sampler.join()
    lat = sorted(r[2] for r in results if r[1] == 200)
    statuses: dict[str, int] = {}
    for _, st, _ in results:
        statuses[str(st)] = statuses.get(str(st), 0) + 1
    q = statistics.quantiles(lat, n=20) if len(lat) >= 2 else [float("nan")] * 19
    return {"phase": "load", "requests": n, "statuses": statuses,
            "errors_other_than_429": sum(v for k, v in statuses.items() if k not in ("200", "429")),
            "p50_s": round(statistics.median(lat), 3) if lat else None, "p95_s": round(q[18], 3),
            "wall_s": round(wall, 2), "peak_rss_mib": round(sampler.peak / 2**20, 1)}


def phase_disconnect(root: str, model: str, m: int) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": "Count from 1 to 200, one per line."}],
            "stream": True, "max_tokens": 64, "temperature": 1.0,
            "search": "self_consistency", "search_params": {"n": 4}}
    hung_up = []

    def client(i):
        with httpx.Client(timeout=120) as c:
            with c.stream("POST", f"{root}/v1/chat/completions", json={**body, "seed": i},
                          headers={"Authorization": f"Bearer {KEY}"}) as r:
                for line in r.iter_lines():
                    if line.startswith("data: ") and "search_event" in line:
                        break  # mid-search: hang up
        hung_up.append(time.monotonic())

    threads = [threading.Thread(target=client, args=(i,)) for i in range(m)]
    peak = 0
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, httpx.get(f"{root}/health", timeout=5).json()["inflight_requests"])
        time.sleep(0.05)
    last = max(hung_up) if hung_up else time.monotonic()
    while True:
        inflight = httpx.get(f"{root}/health", timeout=5).json()["inflight_requests"]
        if inflight == 0 or time.monotonic() - last > 30:
            break
        time.sleep(0.02)
    back = time.monotonic() - last
    return {"phase": "disconnect", "clients": m, "hung_up": len(hung_up), "peak_engine_inflight": peak,
            "inflight_after": inflight, "back_to_0_s": round(back, 3), "ok": inflight == 0 and back <= 2.0}


def phase_schemathesis(root: str, max_time: int, out: Path) -> dict:
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    if exe is None:
        return {"phase": "schemathesis", "skipped": "schemathesis not installed (pip install schemathesis)"}
    report = out / "schemathesis"
    cmd = [exe, "run", f"{root}/openapi.json", "--checks", "not_a_server_error", "-H", f"Authorization: Bearer {KEY}",
           "--max-time", str(max_time), "--request-timeout", "120", "--workers", "2", "--continue-on-failure",
           "--report", "ndjson", "--report-dir", str(report), "--suppress-health-check", "all"]
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=max_time + 300)
    (out / "schemathesis.txt").write_text(p.stdout + p.stderr)
    statuses: dict[str, int] = {}
    for f in report.glob("*.ndjson"):
        for line in f.read_text().splitlines():
            for code in _status_codes(json.loads(line)):
                statuses[str(code)] = statuses.get(str(code), 0) + 1
    return {"phase": "schemathesis", "exit_code": p.returncode, "wall_s": round(time.monotonic() - t0, 1),
            "responses_by_status": dict(sorted(statuses.items())),
            "responses_5xx": sum(v for k, v in statuses.items() if k.startswith("5")),
            "summary": [x for x in p.stdout.splitlines() if x.strip()][-6:]}


def _status_codes(obj):
    """Every HTTP response status in a schemathesis ndjson event (the layout varies by version)."""
    if isinstance(obj, dict):
        if "status_code" in obj and isinstance(obj["status_code"], int) and "elapsed" in obj:
            yield obj["status_code"]
        for v in obj.values():
            yield from _status_codes(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _status_codes(v)


def phase_sigterm(proc: subprocess.Popen, base_url: str, model: str, k: int) -> dict:
    client = openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=120)
    outcome: dict[int, str] = {}

    def one(i):
        req = request_mix(i)
        req.pop("kind")
        try:
            client.chat.completions.create(model=model, **req)
            outcome[i] = "200"
        except openai.APIStatusError as e:
            outcome[i] = str(e.status_code)
        except openai.APIError as e:
            outcome[i] = type(e).__name__

    threads = [threading.Thread(target=one, args=(i,)) for i in range(k)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = "killed after 120 s"
    exit_s = time.monotonic() - t0
    for t in threads:
        t.join(10)
    hanging = sum(t.is_alive() for t in threads)
    counts: dict[str, int] = {}
    for v in outcome.values():
        counts[v] = counts.get(v, 0) + 1
    return {"phase": "sigterm", "clients": k, "exit_code": rc, "exit_after_s": round(exit_s, 2),
            "outcomes": counts, "clients_hanging": hanging, "ok": rc == 0 and hanging == 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--disconnects", type=int, default=20)
    ap.add_argument("--sigterm-clients", type=int, default=16)
    ap.add_argument("--schemathesis-time", type=int, default=120, help="seconds of fuzzing (0: skip)")
    ap.add_argument("--load-time-limit", type=float, default=900)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "load_fault")
    ap.add_argument("--server-args", default="--max-concurrent 16 --max-queue 32 --max-tokens-paths 512 "
                    "--deadline 120 --shutdown-grace 20", help="extra cat-serve arguments")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    random.seed(0)
    t0 = time.monotonic()
    server = start_server(a.out / "server.log", a.server_args.split())
    root, base_url, proc = server.root, server.base_url, server.proc
    print(json.dumps({"phase": "start", "server_ready_s": round(time.monotonic() - t0, 1),
                      "args": a.server_args}), flush=True)
    model = openai.OpenAI(base_url=base_url, api_key=KEY).models.list().data[0].id
    results = []
    try:
        for run in (lambda: asyncio.run(phase_load(base_url, model, a.requests, proc.pid, a.load_time_limit)),
                    lambda: phase_disconnect(root, model, a.disconnects),
                    lambda: phase_schemathesis(root, a.schemathesis_time, a.out) if a.schemathesis_time else None,
                    lambda: phase_sigterm(proc, base_url, model, a.sigterm_clients)):
            r = run()
            if r is not None:
                results.append(r)
                print(json.dumps(r), flush=True)
    finally:
        server.stop()  # the whole process group, whatever phase_sigterm left
    (a.out / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
