"""How ``cat-train rl`` scales past one process, as far as a CPU shows it: a colocated vLLM sampler with
in-place weight reloads, TRL's vLLM server mode (a separate server process), and ``accelerate launch``
data parallelism (DDP over gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from cat_serve.engine import vllm_available
from training.checkpoint import METRICS_FILE, read_state
from training.config import RLArgs

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def alternating_reward(texts, golds):
    """1, 0, 1, 0, ... by position: every group is mixed, so every step moves the weights (a reward
    that depends on the sampled text can give a whole group 0, and then the step changes nothing)."""
    return [float(i % 2 == 0) for i in range(len(texts))]


@pytest.mark.vllm
@pytest.mark.skipif(not vllm_available(), reason="vllm is not installed")
@pytest.mark.parametrize("sync", [True, False])
def test_rl_with_colocated_vllm_sampler_tracks_the_policy(sync, monkeypatch, tmp_path, tokenizer_dir, tiny_examples):
    """vLLM samples every step from the weights the trainer just produced: its log-probs of the sampled
    tokens equal the trainer's (|gap| ~1e-7 in fp32). The control run skips the reload: from step 2 on
    vLLM samples stale weights and the gap is large, so the check can fail."""
    from training.models import build_tiny_model, load_tokenizer
    from training.rl import train_rl
    from training.rollout import ColocatedVLLMEngine

    if not sync:
        monkeypatch.setattr(ColocatedVLLMEngine, "sync_weights", lambda self, policy: None)
    args = RLArgs(model="tiny", tokenizer=tokenizer_dir, output_dir=str(tmp_path / "ckpt"), objective="grpo",
                  max_steps=3, group_size=4, prompts_per_step=1, max_new_tokens=8, learning_rate=1e-2,
                  rollout_engine="vllm", vllm_max_model_len=512, vllm_enforce_eager=True)
    path = train_rl(args, reward_fn=alternating_reward, examples=tiny_examples)
    rows = [json.loads(line) for line in (path / METRICS_FILE).read_text().splitlines()]
    assert [r["samples"] for r in rows] == [4, 4, 4]
    gaps = [r["sampler_logp_gap"] for r in rows]
    assert gaps[0] < 1e-4, gaps  # step 1: vLLM started from the same weights
    assert (max(gaps[1:]) < 1e-4) == sync, gaps
    if not sync:
        assert min(gaps[1:]) > 1e-2, gaps
    init = build_tiny_model(load_tokenizer(tokenizer_dir), seed=0).state_dict()
    final = AutoModelForCausalLM.from_pretrained(path).state_dict()
    assert max(float((init[k] - final[k]).abs().max()) for k in init) > 1e-2  # the weights really moved


def test_rl_under_accelerate_launch_two_processes(tmp_path, tokenizer_dir):
    """``accelerate launch --multi_gpu --num_processes 2`` with ``ACCELERATE_USE_CPU=1``: two ranks, DDP over
    gloo (plain ``--cpu`` would start a single process). Every rank samples its own prompt, the step's
    metrics cover both ranks' groups, and one checkpoint is written."""
    data = tmp_path / "gsm8k_train.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {a}+{a}?", "answer": f"#### {2 * a}"}) + "\n"
                            for a in range(1, 5)))
    out = tmp_path / "ckpt"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "training.cli", "rl", "--objective", "gspo", "--model", "tiny", "--tokenizer", tokenizer_dir,
           "--data-dir", str(tmp_path), "--output-dir", str(out), "--max-steps", "2", "--group-size", "2",
           "--prompts-per-step", "1", "--max-new-tokens", "4", "--rollout-engine", "transformers"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("checkpoint written") == 1
    assert read_state(out) == {"step": 2, "objective": "gspo", "world_size": 2}
    rows = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]
    assert [r["samples"] for r in rows] == [4, 4]  # 2 ranks x 1 prompt x 2 samples
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 2
    assert torch.isfinite(torch.tensor([r["loss"] for r in rows])).all()


@pytest.mark.vllm
@pytest.mark.skipif(not vllm_available(), reason="vllm is not installed")
def test_rl_through_trl_server_mode(tmp_path, tokenizer_dir, tiny_examples):
    """TRL's server mode in a separate process: ``python -m training.vllm_server`` (TRL's ``vllm serve``
    command) serves the starting checkpoint; the trainer samples through TRL's ``VLLMClient`` and, with no
    CUDA here, hands the server each step's weights as files it reloads in place. The server's log-probs of
    the sampled tokens equal the trainer's at every step although the weights move every step, so it
    samples the current policy. (The NCCL push that replaces the file reload on GPUs is not run here.)"""
    from cat_serve.process import ServerProcess, free_port
    from training.models import build_tiny_model, load_tokenizer
    from training.rl import train_rl

    tok = load_tokenizer(tokenizer_dir)
    start = tmp_path / "start"
    build_tiny_model(tok, seed=0).save_pretrained(start)
    tok.save_pretrained(start)
    port = free_port()
    log = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "training.vllm_server", "--model", str(start), "--host", "127.0.0.1",
           "--port", str(port), "--dtype", "float32", "--max_model_len", "512", "--enforce_eager", "true"]
    server = ServerProcess(cmd, log=log, port=port, cwd=REPO, env={"VLLM_CPU_KVCACHE_SPACE": "1"},
                           name="training.vllm_server", stop_timeout=60)
    with server.start(timeout=600):
        args = RLArgs(model=str(start), output_dir=str(tmp_path / "ckpt"), objective="grpo", max_steps=3,
                      group_size=4, prompts_per_step=1, max_new_tokens=8, learning_rate=1e-2,
                      rollout_engine="trl-server", vllm_port=port, vllm_timeout=10)
        path = train_rl(args, reward_fn=alternating_reward, examples=tiny_examples)
    rows = [json.loads(line) for line in (path / METRICS_FILE).read_text().splitlines()]
    assert [r["samples"] for r in rows] == [4, 4, 4]
    assert max(r["sampler_logp_gap"] for r in rows) < 1e-4, rows
    # weights reloaded once before step 1 (the server may hold others) and after each of the 3 steps
    assert log.read_text().count('"POST /collective_rpc HTTP/1.1" 200') == 4
    init = AutoModelForCausalLM.from_pretrained(start).state_dict()
    final = AutoModelForCausalLM.from_pretrained(path).state_dict()
    assert max(float((init[k] - final[k]).abs().max()) for k in init) > 1e-2  # the weights really moved


@pytest.mark.vllm
@pytest.mark.skipif(not vllm_available(), reason="vllm is not installed")
def test_caspo_collects_through_a_colocated_vllm_engine_synced_after_each_round(monkeypatch, tmp_path, tokenizer_dir):
    """make lab-caspo1k's sampler: the arith contexts of a depth in one vLLM batch, s_j's confidence from an exact
    policy forward (in (0, 1]), and the engine given the DPO'd weights after round 0 (not after the last)."""
    from training.caspo import train_caspo
    from training.config import CASPOArgs
    from training.data import load_gsm8k
    from training.rollout import ColocatedVLLMEngine

    syncs = []
    real_sync = ColocatedVLLMEngine.sync_weights
    monkeypatch.setattr(ColocatedVLLMEngine, "sync_weights", lambda self, policy: (syncs.append(1), real_sync(self, policy)))
    examples = load_gsm8k("arith:ops=2,digits=1@train", limit=3)
    args = CASPOArgs(model="tiny", tokenizer=tokenizer_dir, output_dir=str(tmp_path / "caspo"), rounds=2, max_steps=1,
                     candidates_per_step=2, max_step_tokens=6, batch_size=2, gradient_accumulation_steps=2,
                     learning_rate=1e-3, judge="arith", contexts="on_policy", rollout_engine="vllm",
                     vllm_max_model_len=512)
    path = train_caspo(args, examples=examples)
    assert read_state(path)["round"] == 2 and len(syncs) == 1
    rounds = [json.loads(line) for line in (path / METRICS_FILE).read_text().splitlines() if "pairs" in line]
    assert [r["round"] for r in rounds] == [0, 1] and all(r["collect_s"] > 0 and r["steps"] >= 3 for r in rounds)
    assert all(0 < r["step_confidence"] <= 1 for r in rounds)
    pairs = [json.loads(line) for line in (path / "pairs_round0.jsonl").read_text().splitlines()]
    assert pairs and {"prompt", "chosen", "rejected"} <= set(pairs[0])
