"""lab.recipe.runs.run_child passes an interrupt on to its child as SIGTERM (subprocess.run would SIGKILL it, and a
child eval.cli could not stop the vLLM server it started)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.sigterm import assert_sigterm_runs_finally, blocking_body


def test_sigterm_reaches_the_child_and_its_finally(tmp_path):
    # the child is the one that blocks and writes the marker; the parent is SIGTERMed
    child = ("import signal, sys\nsignal.signal(signal.SIGTERM, lambda *_: sys.exit(143))\n"
             + blocking_body("work") + "work()\n")
    parent = ("import sys\nimport lab.recipe.runs as r\nr.exit_on_sigterm()\n"
              f"r.run_child([sys.executable, '-c', {child!r}, sys.argv[1]])\n")
    assert_sigterm_runs_finally(tmp_path, parent)


def test_a_failing_child_raises_like_check_true():
    from lab.recipe.runs import run_child

    with pytest.raises(subprocess.CalledProcessError):
        run_child([sys.executable, "-c", "raise SystemExit(3)"])
    run_child([sys.executable, "-c", "pass"])


def test_run_all_records_one_total_segment(tmp_path, monkeypatch, capsys):
    import json

    from lab.recipe.cli import run_all

    monkeypatch.setenv("LAB_RESULTS", str(tmp_path))
    run_all(steps=(["path"], ["path"]))
    assert capsys.readouterr().out.count("== lab.recipe path") == 2
    with pytest.raises(SystemExit):  # a failing step stops the run, and its segment says so
        run_all(steps=(["path"], ["no-such-step"]))
    rows = [json.loads(line) for line in (tmp_path / "all" / "segments.jsonl").read_text().splitlines()]
    assert [(r["steps"], r.get("interrupted")) for r in rows] == [(2, None), (2, True)]


def test_a_segment_records_the_cpus_and_threads_it_ran_with(tmp_path, monkeypatch):
    import json
    import os

    from lab.recipe.runs import record_segment

    monkeypatch.setenv("LAB_RESULTS", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1, 0})
    record_segment("rl800/x", 0.0, interrupted=True)
    [row] = [json.loads(line) for line in (tmp_path / "rl800" / "x" / "segments.jsonl").read_text().splitlines()]
    assert (row["cpus"], row["omp_num_threads"], row["interrupted"]) == ([0, 1], "2", True)


def _alive(pid: int) -> bool:
    """pid runs (a zombie, reparented to an init that does not reap it, counts as gone)."""
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_a_child_killed_outright_leaves_no_grandchildren(tmp_path):
    """The OOM killer SIGKILLs a trainer; the vLLM engine processes it started must not outlive it."""
    import os
    import time

    from lab.recipe.runs import run_child

    pid_file = tmp_path / "grandchild.pid"
    child = ("import os, signal, subprocess, sys\n"
             "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
             f"open({str(pid_file)!r}, 'w').write(str(g.pid))\n"
             "os.kill(os.getpid(), signal.SIGKILL)\n")
    with pytest.raises(subprocess.CalledProcessError) as err:
        run_child([sys.executable, "-c", child])
    assert err.value.returncode == -9
    grandchild = int(pid_file.read_text())
    deadline = time.time() + 10
    while _alive(grandchild) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild)
