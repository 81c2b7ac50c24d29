"""CPU smoke tests: a few steps on a tiny in-process Llama, checkpoint written and reloadable."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from training.checkpoint import ARGS_FILE, METRICS_FILE, read_state
from training.config import RLArgs

pytestmark = pytest.mark.slow


def parity_reward(texts, golds):
    """A reward a random tiny model can earn: mixed groups, so advantages are non-zero."""
    return [float(len(t) % 2) for t in texts]


def assert_checkpoint(path, steps: int):
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.num_hidden_layers == 2
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.chat_template
    assert json.loads((path / ARGS_FILE).read_text())
    rows = [json.loads(line) for line in (path / METRICS_FILE).read_text().splitlines()]
    assert len(rows) == steps and read_state(path)["step"] == steps
    assert not [p for p in path.parent.iterdir() if ".tmp-" in p.name]
    return rows


@pytest.mark.parametrize("objective", ["grpo", "gspo", "capo", "c2gspg"])
def test_rl_smoke_and_resume(objective, tmp_path, tokenizer_dir, tiny_examples):
    from training.rl import train_rl

    args = RLArgs(model="tiny", tokenizer=tokenizer_dir, output_dir=str(tmp_path / "ckpt"), objective=objective,
                  max_steps=2, group_size=4, prompts_per_step=1, max_new_tokens=6, learning_rate=1e-3,
                  inner_epochs=2, beta=0.05)
    before = None
    path = train_rl(args, reward_fn=parity_reward, examples=tiny_examples)
    rows = assert_checkpoint(path, 2)
    assert {"reward", "accuracy", "entropy", "auroc", "loss"} <= set(rows[0])
    if objective == "grpo":
        before = AutoModelForCausalLM.from_pretrained(path).state_dict()
        args.resume, args.max_steps = True, 1
        path = train_rl(args, reward_fn=parity_reward, examples=tiny_examples)
        rows = assert_checkpoint(path, 3)
        assert [r["step"] for r in rows] == [1, 2, 3]
        after = AutoModelForCausalLM.from_pretrained(path).state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before)


def test_sft_smoke_and_resume(tmp_path, tokenizer_dir, tiny_examples):
    from training.config import SFTArgs
    from training.sft import sft_row, train_sft

    row = sft_row(tiny_examples[1])
    assert row["completion"][0]["content"] == "She earns 12*3 = 36 dollars.\nSo she earns 36 dollars.\n#### 36"
    args = SFTArgs(model="tiny", tokenizer=tokenizer_dir, output_dir=str(tmp_path / "sft"), max_steps=2,
                   batch_size=2, learning_rate=1e-3)
    path = train_sft(args, examples=tiny_examples)
    rows = assert_checkpoint(path, 2)
    assert all("loss" in r for r in rows)
    args.resume, args.max_steps = True, 1
    rows = assert_checkpoint(train_sft(args, examples=tiny_examples), 3)
    assert [r["step"] for r in rows] == [1, 2, 3]
