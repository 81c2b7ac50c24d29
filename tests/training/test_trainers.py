"""CPU smoke tests: a few steps on a tiny in-process Llama, checkpoint written and reloadable."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from training.checkpoint import ARGS_FILE, METRICS_FILE, read_state
from training.config import RLArgs
from training.objectives import OBJECTIVES

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


@pytest.mark.parametrize("objective", list(OBJECTIVES))  # every objective of the registry
def test_rl_smoke_and_resume(objective, tmp_path, tokenizer_dir, tiny_examples):
    from training.rl import train_rl

    args = RLArgs(model="tiny", tokenizer=tokenizer_dir, output_dir=str(tmp_path / "ckpt"), objective=objective,
                  max_steps=2, group_size=4, prompts_per_step=1, max_new_tokens=6, learning_rate=1e-3,
                  inner_epochs=2, beta=0.05, rollout_engine="transformers")
    before = None
    path = train_rl(args, reward_fn=parity_reward, examples=tiny_examples)
    rows = assert_checkpoint(path, 2)
    assert {"reward", "accuracy", "entropy", "auroc", "loss", "sampler_logp_gap"} <= set(rows[0])
    assert rows[0]["sampler_logp_gap"] < 1e-4  # HFEngine samples the live policy: same log-probs as the trainer
    if objective == "grpo":
        before = AutoModelForCausalLM.from_pretrained(path).state_dict()
        args.resume, args.max_steps = True, 3
        path = train_rl(args, reward_fn=parity_reward, examples=tiny_examples)
        rows = assert_checkpoint(path, 3)
        assert [r["step"] for r in rows] == [1, 2, 3]
        after = AutoModelForCausalLM.from_pretrained(path).state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before)


def test_sft_smoke_and_resume(tmp_path, tokenizer_dir, tiny_examples):
    from training.config import SFTArgs
    from training.sft import TRAINER_RESUME_FILES, sft_row, train_sft

    row = sft_row(tiny_examples[1])
    assert row["completion"][0]["content"] == "She earns 12*3 = 36 dollars.\nSo she earns 36 dollars.\n#### 36"
    args = SFTArgs(model="tiny", tokenizer=tokenizer_dir, output_dir=str(tmp_path / "sft"), max_steps=2,
                   batch_size=2, learning_rate=1e-3)
    path = train_sft(args, examples=tiny_examples)
    rows = assert_checkpoint(path, 2)
    assert all("loss" in r for r in rows)
    assert all((path / name).exists() for name in TRAINER_RESUME_FILES)
    args.resume, args.max_steps = True, 3
    rows = assert_checkpoint(train_sft(args, examples=tiny_examples), 3)
    assert [r["step"] for r in rows] == [1, 2, 3]


@pytest.mark.parametrize("keep_optimizer", [True, False])
def test_sft_resume_continues_exactly(keep_optimizer, monkeypatch, tmp_path, tokenizer_dir, tiny_examples):
    """A 3-step run killed after its step-1 checkpoint, then the same command with --resume, ends with the
    weights of the uninterrupted run: the same batches (the resumed run skips the one it trained on), Adam
    moments and learning-rate schedule. Without the saved optimiser the resumed run starts Adam afresh and
    diverges, so the check can fail."""
    from training.config import SFTArgs
    from training.sft import PublishCheckpoint, train_sft

    examples = tiny_examples * 2  # batch size 1: 4 batches per epoch
    args = dict(model="tiny", tokenizer=tokenizer_dir, max_steps=3, batch_size=1, learning_rate=1e-2, save_steps=1)
    straight = train_sft(SFTArgs(output_dir=str(tmp_path / "a"), **args), examples=examples)

    publish = PublishCheckpoint.on_save

    def killed_after_step_1(self, targs, state, control, **kw):
        publish(self, targs, state, control, **kw)
        if state.global_step == 1:
            raise KeyboardInterrupt("killed after step 1")

    monkeypatch.setattr(PublishCheckpoint, "on_save", killed_after_step_1)
    with pytest.raises(KeyboardInterrupt):
        train_sft(SFTArgs(output_dir=str(tmp_path / "b"), **args), examples=examples)
    monkeypatch.undo()
    assert read_state(tmp_path / "b")["step"] == 1
    if not keep_optimizer:
        (tmp_path / "b" / "optimizer.pt").unlink()
    resumed = train_sft(SFTArgs(output_dir=str(tmp_path / "b"), resume=True, **args), examples=examples)
    assert [r["step"] for r in assert_checkpoint(resumed, 3)] == [1, 2, 3]
    a = AutoModelForCausalLM.from_pretrained(straight).state_dict()
    b = AutoModelForCausalLM.from_pretrained(resumed).state_dict()
    same = all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert same == keep_optimizer


def test_sft_resume_refuses_a_checkpoint_without_trainer_state(tmp_path, tokenizer_dir, tiny_examples):
    from training.config import SFTArgs
    from training.sft import train_sft

    args = SFTArgs(model="tiny", tokenizer=tokenizer_dir, output_dir=str(tmp_path / "sft"), max_steps=1,
                   batch_size=2)
    path = train_sft(args, examples=tiny_examples)
    (path / "trainer_state.json").unlink()
    args.resume, args.max_steps = True, 2
    with pytest.raises(ValueError, match="--model"):
        train_sft(args, examples=tiny_examples)


def test_round_temperature_schedule():
    from training.caspo import round_temperature

    assert [round_temperature((0.7, 1.0, 1.2), r) for r in range(4)] == [0.7, 1.0, 1.2, 1.2]


def test_caspo_smoke_and_resume(tmp_path, tokenizer_dir, tiny_examples):
    from training.caspo import train_caspo
    from training.config import CASPOArgs

    args = CASPOArgs(model="tiny", tokenizer=tokenizer_dir, output_dir=str(tmp_path / "caspo"), rounds=2,
                     max_steps=1, candidates_per_step=3, max_step_tokens=6, batch_size=2, learning_rate=1e-3)
    path = train_caspo(args, examples=tiny_examples)
    AutoModelForCausalLM.from_pretrained(path)
    assert AutoTokenizer.from_pretrained(path).chat_template
    assert read_state(path)["round"] == 2
    pairs = [json.loads(line) for line in (path / "pairs_round0.jsonl").read_text().splitlines()]
    assert pairs and {"prompt", "chosen", "rejected", "kind"} <= set(pairs[0])
    assert (path / "pairs_round1.jsonl").exists()
    rounds = [json.loads(line) for line in (path / METRICS_FILE).read_text().splitlines() if "temperature" in line]
    assert [r["temperature"] for r in rounds] == [0.7, 1.0]
    args.resume, args.rounds = True, 3
    path = train_caspo(args, examples=tiny_examples)
    assert read_state(path)["round"] == 3
    assert sorted(p.name for p in path.glob("pairs_round*.jsonl")) == [f"pairs_round{i}.jsonl" for i in range(3)]


@pytest.mark.parametrize("choice,dtype", [("no", torch.float32), ("bf16", torch.bfloat16)])
def test_caspo_dpo_autocasts_as_mixed_precision_says(choice, dtype, tokenizer_dir):
    """--mixed-precision reaches TRL's DPO: the policy's forward runs under bf16 autocast on the CPU with "bf16"
    (as "native" does on a CPU with native bf16), in float32 with "no"; the weights stay float32."""
    from training.caspo import dpo_round
    from training.config import CASPOArgs
    from training.models import load_model_and_tokenizer
    from training.pairs import PreferencePair

    model, tok = load_model_and_tokenizer("tiny", tokenizer_dir, seed=0)
    seen = []
    model.model.layers[0].mlp.down_proj.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    pairs = [PreferencePair(prompt="1 + 2 =", chosen=" 3", rejected=" 4", kind="incorrect", confidence=0.5)] * 2
    model, _ = dpo_round(model, tok, pairs, CASPOArgs(model="tiny", max_steps=1, batch_size=2, mixed_precision=choice))
    assert seen and set(seen) == {dtype}
    assert next(model.parameters()).dtype == torch.float32


def test_caspo_first_round_from_reuses_round_0(tmp_path, tokenizer_dir, tiny_examples, monkeypatch):
    """A second learning rate takes the first run's round-0 pairs (collection runs for round 1 only) and trains
    on them at its own lr; a run whose collection settings differ is refused, naming the setting."""
    import training.caspo as caspo
    from training.caspo import train_caspo
    from training.config import CASPOArgs

    def args(out, **kw):
        return CASPOArgs(model="tiny", tokenizer=tokenizer_dir, output_dir=str(tmp_path / out), max_steps=1,
                         candidates_per_step=3, max_step_tokens=6, batch_size=2, **kw)

    first = train_caspo(args("lr-a", rounds=1, learning_rate=1e-3), examples=tiny_examples)
    collected = []
    real = caspo.collect_pairs
    monkeypatch.setattr(caspo, "collect_pairs", lambda *a, **k: collected.append(a[4]) or real(*a, **k))
    second = train_caspo(args("lr-b", rounds=2, learning_rate=1e-2, first_round_from=str(first)),
                         examples=tiny_examples)
    assert collected == [1.0]  # round 1's temperature: round 0 was not collected again
    assert (second / "pairs_round0.jsonl").read_text() == (first / "pairs_round0.jsonl").read_text()
    rows = [json.loads(line) for line in (second / METRICS_FILE).read_text().splitlines() if "temperature" in line]
    assert rows[0]["pairs_from"] == str(first) and "pairs_from" not in rows[1]
    assert rows[0]["pairs"] == json.loads((first / METRICS_FILE).read_text().splitlines()[0])["pairs"]
    with pytest.raises(ValueError, match=r"seed=0 \(here 1\)"):
        train_caspo(args("lr-c", rounds=1, seed=1, first_round_from=str(first)), examples=tiny_examples)


@pytest.mark.parametrize("keep_optimizer", [True, False])
def test_rl_resume_continues_exactly(keep_optimizer, tmp_path, tokenizer_dir, tiny_examples):
    """1 step + resume 1 step == 2 steps straight (same rollouts, same Adam moments, same reference).
    Without the saved optimiser state the resumed run diverges: the check can fail."""
    from training.rl import OPTIMIZER_FILE, train_rl

    def args(out, steps, resume=False):
        return RLArgs(model="tiny", tokenizer=tokenizer_dir, output_dir=str(out), objective="grpo", beta=0.05,
                      max_steps=steps, group_size=4, prompts_per_step=1, max_new_tokens=6, learning_rate=1e-2,
                      rollout_engine="transformers", resume=resume)

    straight = train_rl(args(tmp_path / "a", 2), reward_fn=parity_reward, examples=tiny_examples)
    first = train_rl(args(tmp_path / "b", 1), reward_fn=parity_reward, examples=tiny_examples)
    assert (first / OPTIMIZER_FILE).exists()
    if not keep_optimizer:
        (first / OPTIMIZER_FILE).unlink()
    resumed = train_rl(args(tmp_path / "b", 2, resume=True), reward_fn=parity_reward, examples=tiny_examples)
    a = AutoModelForCausalLM.from_pretrained(straight).state_dict()
    b = AutoModelForCausalLM.from_pretrained(resumed).state_dict()
    same = all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert same == keep_optimizer


def test_rl_crash_keeps_the_last_periodic_checkpoint(tmp_path, tokenizer_dir, tiny_examples):
    """--save-steps 2: a crash in step 3 leaves the step-2 checkpoint, and the same command with --resume
    does steps 3 and 4 only."""
    from training.rl import train_rl

    calls = []

    def crashing_reward(texts, golds):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed in step 3")
        return parity_reward(texts, golds)

    args = RLArgs(model="tiny", tokenizer=tokenizer_dir, output_dir=str(tmp_path / "ckpt"), objective="gspo",
                  max_steps=4, save_steps=2, group_size=2, prompts_per_step=1, max_new_tokens=4,
                  rollout_engine="transformers")
    with pytest.raises(KeyboardInterrupt):
        train_rl(args, reward_fn=crashing_reward, examples=tiny_examples)
    assert read_state(tmp_path / "ckpt")["step"] == 2
    resumed_steps = []

    def counting_reward(texts, golds):
        resumed_steps.append(1)
        return parity_reward(texts, golds)

    args.resume = True
    path = train_rl(args, reward_fn=counting_reward, examples=tiny_examples)
    assert [r["step"] for r in assert_checkpoint(path, 4)] == [1, 2, 3, 4]
    assert len(resumed_steps) == 2  # steps 3 and 4 only


@pytest.mark.parametrize("objective,aggregation", [("grpo", "sequence"), ("grpo", "token"), ("capo", "sequence"),
                                                   ("capo", "token"), ("gspo", "sequence"), ("c2gspg", "sequence")])
def test_policy_update_by_groups_has_the_whole_batch_gradient(objective, aggregation, tokenizer_dir):
    """``policy_update`` back-propagates one group at a time; with its weights the summed gradient equals
    the gradient of the objective on the whole batch (ragged completions, two groups of two)."""
    from accelerate import Accelerator

    from training.models import build_tiny_model, load_tokenizer
    from training.objectives import OBJECTIVES
    from training.rl import Rollout, policy_update, token_logps

    tok = load_tokenizer(tokenizer_dir)
    torch.manual_seed(0)
    rows, size, prompt, length = 4, 2, 5, 6
    completion_mask = torch.ones(rows, length, dtype=torch.long)
    completion_mask[1, 4:] = 0
    completion_mask[2, 2:] = 0
    rollout = Rollout(torch.randint(0, 1000, (rows, prompt + length)),
                      torch.cat([torch.ones(rows, prompt, dtype=torch.long), completion_mask], 1),
                      completion_mask, prompt, [""] * rows)
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    args = RLArgs(objective=objective, aggregation=aggregation, group_size=size, max_grad_norm=1e9,
                  beta=0.1 if objective == "grpo" else 0.0, ref_high=1e9)
    model = build_tiny_model(tok, seed=0)
    with torch.no_grad():
        ref_logps = token_logps(build_tiny_model(tok, seed=1), rollout)

    logps = token_logps(model, rollout)
    loss, _ = OBJECTIVES[objective](logps, logps.detach(), ref_logps, rewards, completion_mask,
                                    group_size=size, **args.objective_kwargs())
    loss.backward()
    whole = {name: p.grad.clone() for name, p in model.named_parameters()}
    assert max(float(g.abs().max()) for g in whole.values()) > 1e-4  # a real gradient, not all zeros

    class KeepGradients:  # zero_grad as an optimiser would, but no step, so the gradients can be read
        def zero_grad(self, set_to_none=True):
            model.zero_grad(set_to_none=set_to_none)

        def step(self):
            pass

    old, entropy, metrics = policy_update(model, KeepGradients(), rollout, rewards, None, ref_logps, args,
                                          Accelerator(cpu=True))
    assert torch.allclose(old, logps.detach(), atol=1e-6) and entropy.shape == (rows, length)
    assert metrics["loss"] == pytest.approx(float(loss.detach()), rel=1e-5, abs=1e-7)
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, whole[name], rtol=1e-4, atol=1e-7), name
