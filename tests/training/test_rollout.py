"""Group sampling through the engine layer: Step groups -> padded rollouts, engine choice, the vLLM guard."""

from __future__ import annotations

import math
import os

import pytest
import torch

from cat_serve.search.types import EOS, LENGTH, GenParams, Step
from training.cli import parse_args
from training.rl import rollout_from_steps


def step(ids, finish=EOS, ent=0.5):
    return Step(token_ids=tuple(ids), logprobs=tuple(-0.1 * (i + 1) for i in range(len(ids))),
                entropies=(ent,) * len(ids), text="t" * len(ids), finish_reason=finish)


def test_rollout_from_steps_layout():
    prompts = [[5, 6, 7], [8]]
    groups = [[step([1, 2, 0]), step([3], LENGTH)], [step([4, 4]), step([9, 9, 9, 9], ent=math.nan)]]
    r = rollout_from_steps(prompts, groups, pad_id=0)
    assert r.prompt_len == 3 and r.input_ids.shape == (4, 3 + 4)
    assert r.input_ids[0].tolist() == [5, 6, 7, 1, 2, 0, 0]
    assert r.input_ids[2].tolist() == [0, 0, 8, 4, 4, 0, 0]  # prompt left-padded, completion right-padded
    assert r.attention_mask[2].tolist() == [0, 0, 1, 1, 1, 0, 0]
    assert r.completion_mask.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert r.sampler_logps[0, :3].tolist() == pytest.approx([-0.1, -0.2, -0.3])
    assert r.texts == ["ttt", "t", "tt", "tttt"]
    assert not torch.isfinite(r.entropies).all()  # an engine without entropies -> trainer recomputes


def test_policy_engine_samples_live_weights(tokenizer_dir):
    """HFEngine around the tiny policy: n samples per prompt, exact entropies, logprobs == trainer's."""
    from training.models import load_model_and_tokenizer
    from training.rl import token_logps
    from training.rollout import PolicyEngine, RolloutEngine

    model, tok = load_model_and_tokenizer("tiny", tokenizer_dir)
    prompt = tok("What is 2+2?", add_special_tokens=False)["input_ids"]
    torch.manual_seed(0)
    engine = PolicyEngine(model, tok)
    assert isinstance(engine, RolloutEngine) and engine.exact_entropy and not engine.shared
    groups = engine.sample_groups([prompt], 3, GenParams(max_tokens=5, top_logprobs=0))
    assert len(groups) == 1 and len(groups[0]) == 3
    assert all(1 <= s.num_tokens <= 5 and len(s.entropies) == s.num_tokens for s in groups[0])
    r = rollout_from_steps([prompt], groups, tok.pad_token_id)
    with torch.no_grad():
        logps, ent = token_logps(model, r, with_entropy=True)
    m = r.completion_mask.bool()
    assert torch.allclose(logps[m], r.sampler_logps[m], atol=1e-4)
    assert torch.allclose(ent[m], r.entropies[m], atol=1e-4)
    with torch.no_grad():  # the engine holds the live object: changed weights change what it samples from
        model.lm_head.weight.mul_(0.0)
    flat = PolicyEngine(model, tok).sample_groups([prompt], 1, GenParams(max_tokens=2, top_logprobs=0))[0][0]
    assert flat.entropies[0] == pytest.approx(math.log(model.config.vocab_size), rel=1e-4)


def test_rollout_engine_flag_and_guards(monkeypatch):
    import cat_serve.engine
    from cat_serve.process import free_port
    from training.rollout import RolloutEngineUnavailable, TRLVLLMServerEngine, resolve_rollout_engine

    _, args = parse_args(["rl", "--rollout-engine", "trl-server", "--vllm-port", "8123"])
    assert (args.rollout_engine, args.vllm_port) == ("trl-server", 8123)
    assert parse_args(["rl"])[1].rollout_engine == "auto"
    with pytest.raises(SystemExit):
        parse_args(["rl", "--rollout-engine", "sglang"])
    monkeypatch.setattr(cat_serve.engine, "vllm_available", lambda: True)
    assert resolve_rollout_engine("auto") == "vllm"
    monkeypatch.setattr(cat_serve.engine, "vllm_available", lambda: False)
    assert resolve_rollout_engine("auto") == "transformers"
    assert resolve_rollout_engine("vllm") == "vllm"
    monkeypatch.setattr(cat_serve.engine, "vllm_available", lambda: True)
    assert resolve_rollout_engine("auto", world_size=2, cuda=False) == "vllm"  # CPU ranks: one vLLM each
    assert resolve_rollout_engine("auto", world_size=2, cuda=True) == "transformers"
    with pytest.raises(RolloutEngineUnavailable, match="trl-server"):
        resolve_rollout_engine("vllm", world_size=8, cuda=True)
    with pytest.raises(ValueError, match="weight sync"):
        TRLVLLMServerEngine(tokenizer=None, weight_sync="gloo")
    port = free_port()  # nothing listens there
    with pytest.raises(RolloutEngineUnavailable, match=f"no vLLM server at 127.0.0.1:{port}"):
        TRLVLLMServerEngine(tokenizer=None, port=port, timeout=0.5, weight_sync="reload")
    if torch.cuda.is_available():
        pytest.skip("the guard under test is the CPU-only one")
    with pytest.raises(RolloutEngineUnavailable, match="needs CUDA"):
        TRLVLLMServerEngine(tokenizer=None, weight_sync="nccl")


def test_step_questions_are_disjoint_across_ranks():
    from training.rl import step_questions

    order = list(range(10))
    assert step_questions(order, 0, 0, 2, 2) == [0, 1] and step_questions(order, 0, 1, 2, 2) == [2, 3]
    assert step_questions(order, 1, 0, 2, 2) == [4, 5] and step_questions(order, 2, 1, 2, 2) == [0, 1]  # wraps


def test_embedded_model_resolves_via_cat_serve(monkeypatch, tmp_path):
    import cat_serve.models
    from training.models import resolve_model_path

    monkeypatch.setattr(cat_serve.models, "ensure_embedded_model", lambda: tmp_path)
    assert resolve_model_path("embedded") == str(tmp_path)
    assert resolve_model_path("/some/dir") == "/some/dir"


def test_rl_refuses_sharded_set_ups():
    from accelerate.utils import DistributedType

    from training.rl import check_distributed_type

    for ok in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU):
        check_distributed_type(ok)
    for sharded in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        with pytest.raises(RuntimeError, match="data-parallel"):
            check_distributed_type(sharded)


def test_scratch_dirs_of_dead_processes_are_removed(tmp_path):
    """An OOM-killed trainer leaves its weights in /dev/shm; the next colocated engine removes them, not a
    running process's directory (nor another prefix's)."""
    import subprocess
    import sys

    from training.rollout import remove_orphaned_scratch

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = tmp_path / f"cat-rollout-{os.getpid()}-abc"
    gone = tmp_path / f"cat-rollout-{dead.pid}-xyz"
    other = tmp_path / f"cat-trl-sync-{dead.pid}-xyz"
    old_style = tmp_path / "cat-rollout-k6fm2ag8"  # before pids were in the name: left alone
    for d in (mine, gone, other, old_style):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"0" * 10)
    assert remove_orphaned_scratch(str(tmp_path), "cat-rollout-") == [str(gone)]
    assert mine.exists() and other.exists() and old_style.exists() and not gone.exists()
