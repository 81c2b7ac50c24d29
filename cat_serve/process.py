"""Run a server as a child process: start it, wait for ``/health``, stop it with everything it started.

The one place that does this job, and runs batch jobs the same way (``run_job``) (the test fixtures, ``cat-eval calibrate --serve-model``, the lab and
``scripts/load_fault.py`` all use it). Why it is more than ``Popen`` + ``terminate``:

* cat-serve on vLLM starts an EngineCore process (and Worker processes) of its own. Signalling the server
  alone orphans them, and during vLLM's start-up the server waits out a SIGTERM. So the server runs in a
  new session (its own process group), and ``stop`` sends SIGTERM to the whole group, waits, then SIGKILLs
  whatever is left of the group.
* A start that fails (the process exits, or ``/health`` does not answer 200 by the deadline, or the caller
  is interrupted while waiting) stops the group before raising, so no engine process outlives it. The
  error carries the tail of the server's log, which is where the reason is.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HOST = "127.0.0.1"  # loopback only: these servers are for the process that starts them
LOG_TAIL_CHARS = 4000


class ServerStartError(RuntimeError):
    """The server exited or did not answer ``/health`` in time; the message ends with its log's tail."""


def free_port(host: str = HOST) -> int:
    """A port nothing listens on now (the OS picks it; a race with another process is possible but rare)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def cat_serve_command(*args: str) -> list[str]:
    """``python -m cat_serve ARGS`` with this interpreter (tests replace it to start a stand-in server)."""
    return [sys.executable, "-m", "cat_serve", *args]


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started it dies (Linux prctl
    PR_SET_PDEATHSIG), so a caller killed without running its ``finally`` (``timeout``, SIGKILL) does
    not leave a server behind in its own session; cat-serve's SIGTERM shutdown then stops its engine."""
    import ctypes  # noqa: PLC0415

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def stop_process_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to ``proc``'s process group (``proc`` must lead it: ``start_new_session=True``), wait up to
    ``timeout`` s for ``proc``, then SIGKILL to what is left of the group until none of it is alive
    (``kill_group``). Safe to call twice or after ``proc`` exited: children that outlived it are still in
    the group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    kill_group(proc.pid)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _stat(pid: int) -> tuple[int, int, int] | None:
    """``(ppid, pgrp, start time)`` of a live process from /proc/<pid>/stat (the start time, in clock ticks
    since boot, tells a pid reused later apart); None when it is gone or a zombie (it holds no memory)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ... (start time: [19])
    return None if fields[0] in (b"Z", b"X") else (int(fields[1]), int(fields[2]), int(fields[19]))


def _processes() -> dict[int, tuple[int, int, int]]:
    """Every live process: pid -> ``_stat``, one pass over /proc."""
    return {int(e.name): st for e in os.scandir("/proc") if e.name.isdigit() and (st := _stat(int(e.name)))}


def group_members(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (zombies left out), from /proc."""
    return [pid for pid, (_, pgrp, _) in _processes().items() if pgrp == pgid]


def kill_group(pgid: int, timeout: float = 10) -> None:
    """SIGKILL process group ``pgid`` until none of it is alive, or ``timeout`` s. A SIGKILLed process
    with gigabytes mapped (a vLLM engine) takes a moment to exit, and one forked as the first signal went
    out can miss it: so signal again until /proc shows the group empty."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        if not group_members(pgid) or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def descendants(pid: int, table: dict[int, tuple[int, int, int]] | None = None) -> dict[int, int]:
    """The live descendants of ``pid`` (children, their children, ...): pid -> start time, from /proc (or
    ``table``, a ``_processes()`` the caller already read)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for child, (ppid, _, start) in (_processes() if table is None else table).items():
        children.setdefault(ppid, []).append((child, start))
    found, todo = {}, [pid]
    while todo:
        for child, start in children.get(todo.pop(), ()):
            if child not in found:
                found[child] = start
                todo.append(child)
    return found


def reap_descendants_on_exit(interval: float = 1.0) -> subprocess.Popen | None:
    """Start a watchdog that SIGKILLs what this process started once this process has ended, however it
    ended: SIGKILL and the OOM killer included, where no exit handler runs.

    vLLM's EngineCore (and Worker) processes do not notice their parent's death: a ``cat-serve`` or
    ``cat-train`` killed outright left them running with the model and KV cache in memory (4-5 GiB for an RL
    sampler, most of a GPU on CUDA). The watchdog runs in its own session (a signal to this process's group
    misses it), looks at this process's descendants every ``interval`` s and, once this process is gone,
    SIGKILLs those of them that still run (a process started less than ``interval`` s before the end can be
    missed). The caller's own process group handling (``stop_process_group``, ``run_job``) is unchanged.
    Linux only (/proc); None elsewhere."""
    me = os.getpid()
    if (st := _stat(me)) is None:
        return None
    code = f"from cat_serve.process import _reaper; _reaper({me}, {st[2]}, {interval!r})"
    root = str(Path(__file__).resolve().parents[1])  # where cat_serve is, installed or not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
    # no pipe of this process's stays open in the watchdog (a caller reading this process's output to its
    # end would otherwise wait for the watchdog too)
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _reaper(pid: int, start: int, interval: float, timeout: float = 10) -> None:
    """The watchdog's loop (``reap_descendants_on_exit``): follow ``pid``'s descendants while ``pid`` (started at
    ``start``) lives, then SIGKILL the ones still running until none is, or ``timeout`` s."""

    def running(p: int, t: int, table: dict) -> bool:  # still the process that started at t
        return p in table and table[p][2] == t

    seen: dict[int, int] = {}
    while running(pid, start, table := _processes()):
        seen = {p: t for p, t in seen.items() if running(p, t, table)}
        seen.update(descendants(pid, table))
        time.sleep(interval)
    seen.pop(os.getpid(), None)
    deadline = time.monotonic() + timeout
    while True:
        table = _processes()
        alive = [p for p, t in seen.items() if running(p, t, table)]
        if not alive:
            return
        for p in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)


def run_job(cmd: Sequence[str], *, timeout: float = 120, **kw) -> int:
    """Run ``cmd`` (a batch job, not a server: a trainer, an evaluation) to its end; its exit status.

    The job leads its own process group and dies with its caller (``_die_with_parent``). An interrupt of the
    caller (KeyboardInterrupt, or SystemExit from a SIGTERM handler) is passed on to the job alone as SIGTERM, so
    it can stop the servers it started or save its state; SIGKILL after ``timeout`` s. Whatever is left of the
    group when the job has ended is SIGKILLed: a job killed outright (the kernel's OOM killer) cannot stop the
    vLLM engine processes it started, and they would keep their memory (4-5 GiB for an RL sampler)."""
    proc = subprocess.Popen(list(cmd), start_new_session=True, preexec_fn=_die_with_parent, **kw)  # noqa: PLW1509
    try:
        return proc.wait()
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    finally:
        kill_group(proc.pid)


class ServerProcess:
    """One server process on ``host:port`` with its log in ``log``.

    >>> with ServerProcess.cat_serve(["--engine", "vllm"], log=Path("server.log")) as server:
    ...     requests_go_to(server.base_url)

    ``start`` launches and waits for ``/health``; ``stop`` ends the process group. As a context manager
    it does both (``__enter__`` starts unless already started).
    """

    def __init__(self, cmd: Sequence[str], *, log: Path, port: int, host: str = HOST, cwd: Path | None = None,
                 env: dict[str, str] | None = None, name: str = "server", stop_timeout: float = 30):
        self.cmd, self.log, self.port, self.host, self.name = list(cmd), Path(log), port, host, name
        self.cwd, self.env, self.stop_timeout = cwd, env, stop_timeout
        self.proc: subprocess.Popen | None = None

    @classmethod
    def cat_serve(cls, args: Sequence[str], *, log: Path, port: int | None = None, **kw) -> ServerProcess:
        """``python -m cat_serve ARGS --host H --port P`` (a free port unless given)."""
        port = port or free_port(kw.get("host", HOST))
        cmd = cat_serve_command(*args, "--host", kw.get("host", HOST), "--port", str(port))
        return cls(cmd, log=log, port=port, name=kw.pop("name", "cat-serve"), **kw)

    @property
    def root(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def launch(self) -> ServerProcess:
        """Start the process (its own session, output to ``log``) without waiting for it."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1"}
        with self.log.open("w") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True,
                                         preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        return self

    def start(self, timeout: float = 600) -> ServerProcess:
        """``launch``, then ``wait_healthy``."""
        return self.launch().wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 600, poll_s: float = 1.0) -> ServerProcess:
        """Poll ``/health`` until it answers 200. If the process exits, the deadline passes or the wait is
        interrupted (KeyboardInterrupt, a SIGTERM turned into SystemExit), stop the process group first,
        then raise (``ServerStartError`` with the log's tail, or the interruption itself)."""
        import httpx  # noqa: PLC0415  (the server side of cat_serve does not need it at import)

        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    raise ServerStartError(f"{self.name} exited with {self.proc.returncode}\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{self.root}/health", timeout=2).status_code == 200:
                        return self
                if time.monotonic() >= deadline:
                    raise ServerStartError(f"{self.name} not ready after {timeout:g} s\n{self.log_tail()}")
                time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """End the process group (see ``stop_process_group``); a no-op before ``launch``."""
        if self.proc is not None:
            stop_process_group(self.proc, timeout=self.stop_timeout)

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError as e:
            return f"(log {self.log} unreadable: {e})"
        return f"--- last {min(chars, len(text))} characters of {self.log} ---\n{text[-chars:]}"

    def __enter__(self) -> ServerProcess:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ------------------------------------------------------------------ the same job for shell scripts
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cat_serve.process --log FILE --port N --run 'CLIENT' -- SERVER COMMAND...``

    Start SERVER COMMAND as a ``ServerProcess``, wait for its ``/health``, run CLIENT (a bash command line;
    it sees ``CAT_SERVE_ROOT``, ``CAT_SERVE_BASE_URL``, ``CAT_SERVE_PORT`` and ``CAT_SERVE_PID``), then stop
    the server's process group. The exit status is CLIENT's, or 3 with the log's tail on stderr when the
    server does not start. For shell scripts (scripts/gpu_check.sh, scripts/build_image.sh), so that no
    script polls ``/health`` or stops a server itself. ``{port}`` in SERVER COMMAND becomes the port.
    """
    import argparse  # noqa: PLC0415

    ap = argparse.ArgumentParser(prog="python -m cat_serve.process", description=main.__doc__.split("\n\n")[1])
    ap.add_argument("--log", type=Path, required=True, help="the server's stdout and stderr")
    ap.add_argument("--port", type=int, default=0, help="its port (default: a free one, passed as {port})")
    ap.add_argument("--host", default=HOST)
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for /health (default 600)")
    ap.add_argument("--run", required=True, help="the client: a bash command line run once the server is healthy")
    ap.add_argument("server", nargs=argparse.REMAINDER, help="-- then the server's command line")
    args = ap.parse_args(argv)
    cmd = args.server[1:] if args.server[:1] == ["--"] else args.server
    if not cmd:
        ap.error("the server's command line is missing (after --)")
    port = args.port or free_port(args.host)
    server = ServerProcess([c.replace("{port}", str(port)) for c in cmd], log=args.log, port=port, host=args.host)
    try:
        server.start(args.timeout)
    except ServerStartError as e:
        print(e, file=sys.stderr)
        return 3
    env = {**os.environ, "CAT_SERVE_ROOT": server.root, "CAT_SERVE_BASE_URL": server.base_url,
           "CAT_SERVE_PORT": str(port), "CAT_SERVE_PID": str(server.pid)}
    try:
        return subprocess.run(["bash", "-c", args.run], env=env, check=False).returncode
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
