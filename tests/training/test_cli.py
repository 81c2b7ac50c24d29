"""cat-train argument parsing (flags generated from the config dataclasses) and one end-to-end run."""

from __future__ import annotations

import json

import pytest

from training.cli import build_parser, main, parse_args
from training.config import CASPOArgs, RLArgs, SFTArgs


def test_parse_rl_objective_and_hyper_parameters():
    command, args = parse_args(["rl", "--objective", "capo", "--tau", "0.5", "--group-size", "4", "--resume"])
    assert command == "rl" and isinstance(args, RLArgs)
    assert (args.objective, args.tau, args.group_size, args.resume, args.epsilon) == ("capo", 0.5, 4, True, None)
    with pytest.raises(SystemExit):
        parse_args(["rl", "--objective", "ppo"])


def test_parse_caspo_temperatures_and_defaults():
    _, args = parse_args(["caspo", "--temperatures", "0.5", "1.5"])
    assert isinstance(args, CASPOArgs) and args.temperatures == (0.5, 1.5)
    assert parse_args(["caspo"])[1].temperatures == (0.7, 1.0, 1.2)
    assert parse_args(["caspo"])[1].beta == 0.1
    assert isinstance(parse_args(["sft", "--limit", "3"])[1], SFTArgs)


def test_help_text_comes_from_config():
    sub = build_parser()._subparsers._group_actions[0].choices["rl"]
    assert "logistic pair surrogate" in sub.format_help()


@pytest.mark.slow
def test_main_rl_end_to_end(tmp_path, tokenizer_dir, capsys):
    data = tmp_path / "gsm8k_train.jsonl"
    data.write_text(json.dumps({"question": "What is 2+2?", "answer": "2+2=<<2+2=4>>4\n#### 4"}) + "\n")
    out = tmp_path / "ckpt"
    assert main(["rl", "--objective", "gspo", "--tokenizer", tokenizer_dir, "--data-dir", str(tmp_path),
                 "--output-dir", str(out), "--max-steps", "1", "--group-size", "2", "--prompts-per-step", "1",
                 "--max-new-tokens", "4", "--rollout-engine", "transformers"]) == 0
    assert (out / "config.json").exists() and "checkpoint written" in capsys.readouterr().out


def test_sigterm_runs_exit_handlers(tmp_path):
    """cat-train turns SIGTERM into SystemExit, so ``finally`` blocks and atexit hooks run (a colocated vLLM
    engine shuts its EngineCore down in them)."""
    from tests.sigterm import assert_sigterm_runs_finally, blocking_body

    assert_sigterm_runs_finally(tmp_path, blocking_body("run") + "import training.cli as cli\n"
                                "cli.run = run\ncli.main(['rl'])\n")


def test_killed_outright_cat_train_takes_what_it_started(tmp_path):
    """cat-train SIGKILLed (the OOM killer; no exit handler runs) while it runs a child, as a colocated vLLM
    engine: the watchdog ``main`` starts kills that child (only cat-train's own pid is signalled, as the OOM
    killer does)."""
    import subprocess
    import sys

    import psutil

    code = ("import os, signal, subprocess, time\nimport training.cli as cli\n"
            "def run(*_a):\n"
            "    child = subprocess.Popen(['sleep', '300'])\n"
            "    print(child.pid, flush=True)\n"
            "    time.sleep(2)\n"  # the watchdog looks once a second
            "    os.kill(os.getpid(), signal.SIGKILL)\n"
            "cli.run = run\ncli.main(['rl'])\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(proc.stdout.readline()))
    try:
        assert proc.wait(timeout=60) == -9
        gone, _ = psutil.wait_procs([child], timeout=10)
        assert gone, "cat-train's child outlived it"
    finally:
        if child.is_running():
            child.kill()
