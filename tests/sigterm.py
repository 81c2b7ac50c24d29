"""One check for every command that turns SIGTERM into SystemExit (cat-train, cat-eval, lab.recipe)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path


def assert_sigterm_runs_finally(tmp_path: Path, code: str) -> None:
    """Run ``code`` (a script given the marker path as ``sys.argv[1]``; it prints ``ready`` and then blocks
    inside a ``try`` whose ``finally`` writes the marker), SIGTERM it, and check that it exited 128 + 15
    with the marker written: without a SIGTERM handler the process dies without running ``finally``."""
    marker = tmp_path / "cleaned"
    proc = subprocess.Popen([sys.executable, "-c", code, str(marker)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert marker.read_text() == "cleaned"


def blocking_body(name: str) -> str:
    """The source of a function ``name`` (any arguments) that prints ready and sleeps in try/finally."""
    return (
        "import pathlib, sys, time\n"
        f"def {name}(*_args):\n"
        "    try:\n"
        "        print('ready', flush=True)\n"
        "        time.sleep(60)\n"
        "    finally:\n"
        "        pathlib.Path(sys.argv[1]).write_text('cleaned')\n"
    )
