"""Training on CUDA: a few steps of each trainer on the tiny model, in bf16 autocast. Skipped without CUDA.

The real-model runs (rl capo 10 steps, caspo 1 round, sft 50 steps on SmolLM2-135M) are in
scripts/gpu_check.sh; these check placement and precision quickly."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from training.checkpoint import METRICS_FILE, read_state
from training.data import parse_example

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

EXAMPLES = [
    parse_example("Natalia sold 48 clips in April and half as many in May. How many in May?",
                  "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 24"),
    parse_example("Weng earns $12 an hour. How much for 3 hours?",
                  "She earns 12*3 = <<12*3=36>>36 dollars.\nSo she earns 36 dollars.\n#### 36"),
]


def parity_reward(texts, golds):
    return [float(len(t) % 2) for t in texts]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from training.models import load_tokenizer

    path = tmp_path_factory.mktemp("tokenizer")
    load_tokenizer(None).save_pretrained(path)
    return str(path)


def finite_weights(path) -> dict:
    state = AutoModelForCausalLM.from_pretrained(path).state_dict()
    assert all(torch.isfinite(v).all() for v in state.values())
    return state


def test_precision_and_device_helpers():
    from training.models import mixed_precision, train_device, trainer_precision_kwargs

    assert train_device().type == "cuda"
    bf16 = torch.cuda.is_bf16_supported()
    assert mixed_precision() == ("bf16" if bf16 else "no")
    assert trainer_precision_kwargs() == {"bf16": bf16, "use_cpu": False}


def test_rl_on_cuda_bf16(tmp_path, tokenizer_dir):
    from training.config import RLArgs
    from training.models import build_tiny_model, load_tokenizer
    from training.rl import train_rl

    torch.cuda.reset_peak_memory_stats()
    args = RLArgs(model="tiny", tokenizer=tokenizer_dir, output_dir=str(tmp_path / "rl"), objective="grpo",
                  beta=0.05, max_steps=2, group_size=4, prompts_per_step=1, max_new_tokens=8, learning_rate=1e-3,
                  rollout_engine="transformers")
    path = train_rl(args, reward_fn=parity_reward, examples=EXAMPLES)
    assert torch.cuda.max_memory_allocated() > 0  # the policy and its batches lived on the GPU
    rows = [json.loads(line) for line in (path / METRICS_FILE).read_text().splitlines()]
    assert read_state(path)["step"] == 2 and len(rows) == 2
    assert all(math.isfinite(r["loss"]) for r in rows)
    # sampling (KV-cached decode) and the gradient pass both run under bf16 autocast: the gap is bf16
    # rounding of different kernels, not stale weights (a stale sampler gives ~0.25 on CPU)
    assert rows[0]["sampler_logp_gap"] < 0.05
    after = finite_weights(path)
    before = build_tiny_model(load_tokenizer(tokenizer_dir), seed=args.seed).state_dict()
    assert after["model.embed_tokens.weight"].dtype == torch.float32  # fp32 master weights are saved
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_sft_on_cuda_bf16(tmp_path, tokenizer_dir):
    from training.config import SFTArgs
    from training.sft import train_sft

    args = SFTArgs(model="tiny", tokenizer=tokenizer_dir, output_dir=str(tmp_path / "sft"), max_steps=2,
                   batch_size=2, learning_rate=1e-3, max_length=256)
    path = train_sft(args, examples=EXAMPLES)
    assert read_state(path)["step"] == 2
    finite_weights(path)


def test_caspo_collects_and_trains_on_cuda(tmp_path, tokenizer_dir):
    from training.caspo import train_caspo
    from training.config import CASPOArgs

    torch.cuda.reset_peak_memory_stats()
    args = CASPOArgs(model="tiny", tokenizer=tokenizer_dir, output_dir=str(tmp_path / "caspo"), rounds=1,
                     max_steps=1, candidates_per_step=3, max_step_tokens=6, batch_size=2, learning_rate=1e-3)
    path = train_caspo(args, examples=EXAMPLES)
    assert torch.cuda.max_memory_allocated() > 0
    assert read_state(path)["round"] == 1
    assert (path / "pairs_round0.jsonl").read_text().strip()
    finite_weights(path)
