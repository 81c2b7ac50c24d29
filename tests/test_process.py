"""``cat_serve.process``: a server that fails or is interrupted mid start-up leaves no engine process.

The fast tests use ``tests/stand_in_server.py`` in place of ``python -m cat_serve``: it starts an "engine"
child that ignores SIGTERM, so only the SIGKILL of what is left of the process group ends it; the test
then looks for that child with psutil. Each caller that starts a server (the test fixture, ``cat-eval
calibrate --serve-model``, the lab's ``served``, ``scripts/load_fault.py``) is run through the same
failure. The slow test starts a real ``python -m cat_serve --engine vllm`` and stops it once vLLM's
engine process exists, long before it is healthy.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import cat_serve.process
from cat_serve.process import ServerProcess, ServerStartError

REPO = Path(__file__).resolve().parents[1]
STAND_IN = Path(__file__).with_name("stand_in_server.py")


def engine_pid(log: Path, within: float = 30) -> int:
    """The stand-in's engine child, from the line it logs."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        m = re.search(r"engine pid (\d+)", log.read_text() if log.exists() else "")
        if m:
            return int(m.group(1))
        time.sleep(0.05)
    raise AssertionError(f"no engine pid in {log}")


def assert_gone(pids, within: float = 10) -> None:
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=within)
    alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running: {[(p.pid, p.cmdline()) for p in alive]}"


def in_group(pgid: int) -> list[int]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            pass
    return out


@pytest.fixture
def stand_in(monkeypatch):
    """Every ``ServerProcess.cat_serve`` starts the stand-in instead (with the caller's arguments)."""
    monkeypatch.setattr(cat_serve.process, "cat_serve_command", lambda *a: [sys.executable, str(STAND_IN), *a])
    return monkeypatch


# ---------------------------------------------------------------------- process groups
def test_kill_group_returns_once_no_member_is_alive():
    """A group of three (a shell and two children that ignore SIGTERM): ``group_members`` lists all three,
    and when ``kill_group`` returns none is alive (a zombie not yet reaped is not alive)."""
    from cat_serve.process import group_members, kill_group

    proc = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 60 & sleep 60 & wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(group_members(proc.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        members = group_members(proc.pid)
        assert proc.pid in members and len(members) == 3
        os.killpg(proc.pid, signal.SIGTERM)  # ignored by all three
        time.sleep(0.2)
        assert len(group_members(proc.pid)) == 3
        kill_group(proc.pid)
        assert group_members(proc.pid) == []
        assert in_group(proc.pid) == []  # the test suite's own check (psutil) agrees
    finally:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------- ServerProcess itself
def test_missed_deadline_stops_the_group_and_shows_the_log(stand_in, tmp_path):
    server = ServerProcess.cat_serve(["--engine", "vllm"], log=tmp_path / "s.log").launch()
    child = engine_pid(server.log)
    t0 = time.monotonic()
    with pytest.raises(ServerStartError, match=r"not ready after 0\.5 s[\s\S]*engine pid"):
        server.wait_healthy(timeout=0.5, poll_s=0.1)
    assert time.monotonic() - t0 < 20  # the server obeys SIGTERM: no 30 s wait before the SIGKILL
    assert server.proc.returncode is not None
    assert_gone([child])  # it ignored SIGTERM: the SIGKILL of the group ended it


def test_exit_during_start_still_kills_what_it_left(stand_in, tmp_path):
    stand_in.setenv("STAND_IN_MODE", "exit")
    server = ServerProcess.cat_serve([], log=tmp_path / "s.log")
    with pytest.raises(ServerStartError, match="exited with 3"):
        server.start(timeout=30)
    assert_gone([engine_pid(server.log)])


def test_interrupted_wait_stops_the_group(stand_in, tmp_path):
    """KeyboardInterrupt (or a SIGTERM turned into SystemExit) while waiting for /health."""
    server = ServerProcess.cat_serve([], log=tmp_path / "s.log").launch()
    child = engine_pid(server.log)

    def interrupt(*_):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(KeyboardInterrupt):
            server.wait_healthy(timeout=60, poll_s=0.1)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert_gone([server.pid, child])


def test_healthy_server_as_context_manager(stand_in, tmp_path):
    import httpx

    stand_in.setenv("STAND_IN_MODE", "healthy")
    with ServerProcess.cat_serve(["--engine", "vllm"], log=tmp_path / "s.log") as server:
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        assert httpx.get(f"{server.root}/health").status_code == 200
        pids = [server.pid, engine_pid(server.log)]
        assert sorted(in_group(server.pid)) == sorted(pids)  # its own group: server + engine
        assert os.getpgid(server.pid) != os.getpgid(0)
    assert_gone(pids)
    assert in_group(pids[0]) == []
    server.stop()  # twice is harmless


def test_a_killed_caller_takes_its_server_with_it(tmp_path):
    """The server has its own session, so a group signal to its caller (``timeout``) misses it; it gets
    SIGTERM when the caller dies, even by SIGKILL (no ``finally`` runs)."""
    code = ("import sys, time\nfrom pathlib import Path\nfrom cat_serve.process import ServerProcess\n"
            f"s = ServerProcess([sys.executable, {str(STAND_IN)!r}], log=Path(sys.argv[1]), port=1).launch()\n"
            "print(s.pid, flush=True)\ntime.sleep(600)\n")
    caller = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "s.log")], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    server_pid = int(caller.stdout.readline())
    engine = engine_pid(tmp_path / "s.log")
    caller.kill()
    caller.wait()
    try:
        assert_gone([server_pid])  # the stand-in exits on SIGTERM (cat-serve stops its engine on it)
    finally:
        os.kill(engine, signal.SIGKILL)  # the stand-in's engine ignores SIGTERM and has no shutdown of its own


def test_stop_before_launch_is_a_no_op(tmp_path):
    ServerProcess(["true"], log=tmp_path / "s.log", port=1).stop()


# ---------------------------------------------------------------------- killed outright: the watchdog
def _sleeper(**kw) -> subprocess.Popen:
    return subprocess.Popen(["sleep", "300"], start_new_session=True, **kw)


def test_descendants_follow_the_tree_and_nothing_else():
    outer = subprocess.Popen(["bash", "-c", "sleep 300 & wait"])
    stranger = _sleeper()
    held: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 10
        while not (found := cat_serve.process.descendants(outer.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        (inner,) = found  # bash's one child: the sleep
        held.append(psutil.Process(inner))
        assert psutil.Process(inner).cmdline() == ["sleep", "300"]
        assert found[inner] == cat_serve.process._stat(inner)[2]  # its start time, as /proc has it
        mine = cat_serve.process.descendants(os.getpid())
        assert {outer.pid, inner, stranger.pid} <= mine.keys()  # children and grandchildren
        assert stranger.pid not in cat_serve.process.descendants(outer.pid)
    finally:
        for p in held:  # psutil's kill checks the start time: a pid reused since is not signalled
            with contextlib.suppress(psutil.Error):
                p.kill()
        for p in (outer, stranger):
            p.kill()
            p.wait()


def test_a_process_killed_outright_takes_what_it_started_with_it():
    """SIGKILL (no exit handler runs) to a process that called ``reap_descendants_on_exit``: the watchdog
    SIGKILLs the process it had started (in a session of its own here, so that nothing but the watchdog can
    reach it) and exits; a process it did not start is left alone."""
    code = ("import subprocess, time\nfrom cat_serve.process import reap_descendants_on_exit\n"
            "reaper = reap_descendants_on_exit(interval=0.1)\n"
            "child = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
            "print(reaper.pid, child.pid, flush=True)\ntime.sleep(600)\n")
    stranger = _sleeper()
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    procs: list[psutil.Process] = []
    try:
        reaper, child = map(int, proc.stdout.readline().split())
        procs = [psutil.Process(reaper), psutil.Process(child)]
        time.sleep(0.5)  # a few of the watchdog's looks
        assert psutil.Process(child).is_running() and psutil.Process(reaper).is_running()
        proc.kill()
        proc.wait()
        assert_gone([child, reaper])
        assert psutil.Process(stranger.pid).status() != psutil.STATUS_ZOMBIE
    finally:
        for p in procs:  # psutil's kill checks the start time: a pid reused since is not signalled
            with contextlib.suppress(psutil.Error):
                p.kill()
        proc.kill()
        proc.wait()
        stranger.kill()
        stranger.wait()


def test_the_watchdog_ends_with_a_normal_exit_too():
    code = ("from cat_serve.process import reap_descendants_on_exit\n"
            "print(reap_descendants_on_exit(interval=0.1).pid, flush=True)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert_gone([int(out.stdout)])


# ---------------------------------------------------------------------- the shell scripts' entry point
def _cli(tmp_path, run: str, mode: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "STAND_IN_MODE": mode}
    return subprocess.run([sys.executable, "-m", "cat_serve.process", "--log", str(tmp_path / "s.log"), *extra,
                           "--run", run, "--", sys.executable, str(STAND_IN), "--port", "{port}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_cli_runs_the_client_against_a_healthy_server_then_stops_it(tmp_path):
    """The client sees the server's address, its exit status is the command's, and the group is gone."""
    out = tmp_path / "client.txt"
    r = _cli(tmp_path, f'echo "$CAT_SERVE_BASE_URL $CAT_SERVE_PID" > {out}; '
                       f'{sys.executable} -c "import httpx,os; print(httpx.get(os.environ[\'CAT_SERVE_ROOT\'] + \'/health\').status_code)"; '
                       'exit 7', "healthy")
    assert r.returncode == 7, r.stderr
    assert r.stdout.strip() == "200"
    base_url, pid = out.read_text().split()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", base_url)
    assert_gone([int(pid), engine_pid(tmp_path / "s.log")])


def test_cli_failed_start_exits_3_with_the_log_and_leaves_nothing(tmp_path):
    marker = tmp_path / "client-ran"
    r = _cli(tmp_path, f"touch {marker}", "slow", "--timeout", "1")
    assert r.returncode == 3
    assert "not ready after 1 s" in r.stderr and "engine pid" in r.stderr
    assert not marker.exists()
    assert_gone([engine_pid(tmp_path / "s.log")])


# ---------------------------------------------------------------------- every caller
def _fixture_start(log_dir: Path):
    from tests.conftest import start_server

    with pytest.raises(pytest.fail.Exception, match="not ready after 1 s"):
        start_server("vllm", log_dir, timeout=1)
    return log_dir / "server-vllm.log"


def _calibrate_start(log_dir: Path):
    from eval.calibrate import own_server, start_own_server

    with pytest.raises(SystemExit, match="not ready after 1 s"):
        start_own_server(own_server("embedded", log_dir / "server.log"), timeout=1)
    return log_dir / "server.log"


def _lab_start(log_dir: Path):
    from lab.recipe.runs import served

    with pytest.raises(ServerStartError, match="not ready after 1 s"):
        with served(Path("/nonexistent/model"), log=log_dir / "server.log", timeout=1):
            pass
    return log_dir / "server.log"


def _load_fault_start(log_dir: Path):
    spec = importlib.util.spec_from_file_location("load_fault", REPO / "scripts" / "load_fault.py")
    load_fault = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(load_fault)
    with pytest.raises(SystemExit, match="not ready after 1 s"):
        load_fault.start_server(log_dir / "server.log", [], timeout=1)
    return log_dir / "server.log"


@pytest.mark.parametrize("caller", [_fixture_start, _calibrate_start, _lab_start, _load_fault_start],
                         ids=["tests.conftest", "eval.calibrate", "lab.recipe.runs.served", "scripts/load_fault"])
def test_every_caller_leaves_no_engine_after_a_missed_start(stand_in, tmp_path, caller):
    log = caller(tmp_path)
    assert_gone([engine_pid(log)])


def test_no_other_code_runs_server_processes():
    """The job lives in cat_serve/process.py only: no other copy puts a child in its own session or
    signals a process group, no product code builds a ``python -m cat_serve`` command itself, and no shell
    script touches ``/health`` (except to run the image's own HEALTHCHECK command)."""
    own = {REPO / "cat_serve" / "process.py", Path(__file__), STAND_IN}
    offenders = []
    for top in ("cat_serve", "eval", "training", "clients", "lab", "scripts", "tests"):
        for f in (REPO / top).rglob("*.py"):
            if f in own:
                continue
            text = f.read_text()
            if "start_new_session" in text or "killpg" in text:
                offenders.append(f"{f.relative_to(REPO)}: process group")
            if top != "tests" and re.search(r"""["']-m["'],\s*["']cat_serve["']""", text):
                offenders.append(f"{f.relative_to(REPO)}: python -m cat_serve")
    for f in (REPO / "scripts").rglob("*.sh"):  # shell scripts go through `python -m cat_serve.process`
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if "/health" in line and "HEALTHCHECK" not in line:
                offenders.append(f"{f.relative_to(REPO)}:{n}: polls /health")
    assert offenders == []


# ---------------------------------------------------------------------- the real case
@contextlib.contextmanager
def real_server_starting(tmp_path: Path):
    """A real ``python -m cat_serve --engine vllm`` launched and caught once vLLM's engine process runs
    (seconds into a start of a minute or more): yields the server and the engine's processes (the server's
    process group, so not its watchdog, which has a session of its own); stopped on the way out."""
    from cat_serve.engine import vllm_available

    if not vllm_available():
        pytest.skip("vllm is not installed")
    server = ServerProcess.cat_serve(["--engine", "vllm", "--max-model-len", "1024", "--kv-cache-gib", "1"],
                                     log=tmp_path / "server.log", cwd=REPO).launch()

    def engine() -> list[psutil.Process]:
        return [p for p in psutil.Process(server.pid).children(recursive=True) if os.getpgid(p.pid) == server.pid]

    try:
        deadline = time.monotonic() + 240
        found: list[psutil.Process] = []
        while time.monotonic() < deadline and not found and server.proc.poll() is None:
            time.sleep(0.5)
            found = engine()
        assert found, f"no engine process appeared\n{server.log_tail()}"
        time.sleep(3)  # a little further into the engine's start-up (and past a look of the watchdog's)
        yield server, engine()
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.vllm
def test_real_cat_serve_interrupted_mid_start_leaves_no_engine(tmp_path):
    """``python -m cat_serve --engine vllm`` stopped mid start-up: nothing of its process group survives."""
    with real_server_starting(tmp_path) as (server, engine):
        with pytest.raises(ServerStartError, match="not ready"):
            server.wait_healthy(timeout=0)  # which stops the group first
    assert_gone([server.pid, *(p.pid for p in engine)])
    assert in_group(server.pid) == []


@pytest.mark.slow
@pytest.mark.vllm
def test_real_cat_serve_killed_outright_leaves_no_engine(tmp_path):
    """``python -m cat_serve --engine vllm`` SIGKILLed alone (not its group: as a user's ``kill -9`` or the OOM
    killer would): its watchdog SIGKILLs vLLM's engine processes."""
    with real_server_starting(tmp_path) as (server, engine):
        os.kill(server.pid, signal.SIGKILL)
        assert_gone([p.pid for p in engine], within=20)
