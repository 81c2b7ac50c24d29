"""scripts/lab_gpu.sh (issue 21 item 6) on the CPU with the tiny model: it refuses to run without a GPU unless
DEVICE=cpu, trains GRPO and CAPO side by side, writes their rows and wall times where make lab-report reads them,
and the report shows them with the claim line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_refuses_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    proc = subprocess.run(["bash", "scripts/lab_gpu.sh"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out")})
    assert proc.returncode == 2 and "needs one" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cpu_run_with_the_tiny_model(tmp_path, tokenizer_dir):
    from lab.report import build

    out = tmp_path / "results" / "rl8000-gpu"
    env = {**os.environ, "PYTHON": sys.executable, "DEVICE": "cpu", "MODEL": "tiny", "TOKENIZER": tokenizer_dir,
           "STEPS": "2", "PROMPTS": "1", "EVAL_LIMIT": "2", "EVAL_EVERY": "1", "OUT": str(out),
           "CKPT": str(tmp_path / "ckpt"), "ROLLOUT_ENGINE": "transformers", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "scripts/lab_gpu.sh"], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for obj in ("grpo", "capo"):
        rows = [json.loads(line) for line in (out / f"{obj}-s0" / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows if "step" in r and "eval_step" not in r] == [1, 2]
        dev = [r for r in rows if "eval_step" in r]
        assert [r["eval_step"] for r in dev] == [0, 1, 2] and len(dev[-1]["dev_q_correct"]) == 2
        [seg] = [json.loads(line) for line in (out / f"{obj}-s0" / "segments.jsonl").read_text().splitlines()]
        assert seg["device"] == "cpu" and seg["wall_s"] > 0
    report = build(tmp_path / "results")
    assert "## RL at 8,000 prompts on one GPU" in report and "- rl8000-gpu: CAPO's AUC-mean" in report
    assert "rl8000-gpu/capo-s0" in report  # its wall time in the commands table
