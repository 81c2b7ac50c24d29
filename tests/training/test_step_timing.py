"""The RL step's speed changes keep its results, and the timing harness adds up what it times."""

from __future__ import annotations

import copy

import pytest
import torch

from training.config import RLArgs


def _ragged_rollout(rows=4, prompt=5, length=6):
    """Left-padded prompts of different lengths, completions cut at different points."""
    from training.rl import Rollout

    torch.manual_seed(0)
    completion_mask = torch.ones(rows, length, dtype=torch.long)
    completion_mask[1, 4:] = 0
    completion_mask[2, 2:] = 0
    prompt_mask = torch.ones(rows, prompt, dtype=torch.long)
    prompt_mask[0, :2] = 0  # row 0's prompt is two tokens shorter (left padding)
    return Rollout(torch.randint(0, 1000, (rows, prompt + length)), torch.cat([prompt_mask, completion_mask], 1),
                   completion_mask, prompt, [""] * rows)


def test_trimmed_logits_give_the_same_log_probs_and_entropies(tokenizer_dir):
    """The LM head on the completion's positions only (``logits_to_keep``) yields the log-probs and
    entropies of the full forward, row by row, with left-padded prompts."""
    from training.models import build_tiny_model, load_tokenizer
    from training.rl import token_logps

    model = build_tiny_model(load_tokenizer(tokenizer_dir), seed=0).eval()
    rollout = _ragged_rollout()
    with torch.no_grad():
        full, full_ent = token_logps(model, rollout, with_entropy=True, trim_logits=False)
        trim, trim_ent = token_logps(model, rollout, with_entropy=True, trim_logits=True)
        chunked = token_logps(model, rollout, chunk=2, trim_logits=True)
    assert trim.shape == full.shape == (4, 6)
    assert torch.allclose(trim, full, atol=1e-6) and torch.allclose(trim_ent, full_ent, atol=1e-5)
    assert torch.allclose(chunked, full, atol=1e-6)
    # the comparison can fail: the log-probs one position off are different numbers
    with torch.no_grad():
        logits = model(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask).logits
    shifted = torch.log_softmax(logits[:, rollout.prompt_len:].float(), -1).gather(
        -1, rollout.input_ids[:, rollout.prompt_len:].unsqueeze(-1)).squeeze(-1)
    assert not torch.allclose(shifted, full, atol=1e-3)


@pytest.mark.parametrize("objective", ["grpo", "capo"])
def test_a_seeded_step_has_the_same_loss_and_update_with_trimmed_logits(objective, tokenizer_dir, tiny_examples):
    """One seeded ``rl_step`` (sampled by the live policy) before and after the speed change: the same
    samples, the same loss (CAPO's non-zero: the rewards alternate within the group), the same new weights."""
    from accelerate import Accelerator

    from training.models import build_tiny_model, load_tokenizer
    from training.rl import rl_step
    from training.rollout import PolicyEngine

    tok = load_tokenizer(tokenizer_dir)
    start = build_tiny_model(tok, seed=0)
    args = RLArgs(objective=objective, group_size=4, prompts_per_step=2, max_new_tokens=8, learning_rate=1.0,
                  ref_low=0.0, ref_high=1e9)  # CAPO: no perplexity mask, so every sample counts

    def alternate(texts, golds):  # half right, half wrong in every group, whatever was sampled
        return [float(i % 2) for i in range(len(texts))]

    results = {}
    for trim in (False, True):
        policy = copy.deepcopy(start)
        ref = copy.deepcopy(start).eval().requires_grad_(False) if objective == "capo" else None
        # SGD, so equal weights mean equal gradients: AdamW divides each gradient by its own scale, which
        # turns round-off on near-zero elements (~1e-12) into full lr-sized differences
        optimizer = torch.optim.SGD(policy.parameters(), lr=args.learning_rate)
        metrics = rl_step(policy, ref, optimizer, tok, tiny_examples, args, alternate, PolicyEngine(policy, tok),
                          Accelerator(cpu=True), seed=123, trim_logits=trim)
        results[trim] = (metrics, {k: v.detach().clone() for k, v in policy.state_dict().items()})
    (before, w_before), (after, w_after) = results[False], results[True]
    # Both losses are 0 at ratio 1 up to round-off: GRPO's advantages and CAPO's pairwise ones each sum to 0 in a
    # group (CAPO: every pair adds w to its correct sample and takes w from its wrong one), so the loss *value*
    # cannot tell a step that learns from one that does not; the advantages and the weights that moved do
    assert before["adv_abs_mean"] > 0.0 and after["adv_abs_mean"] == pytest.approx(before["adv_abs_mean"])
    assert after["loss"] == pytest.approx(before["loss"], rel=1e-5, abs=1e-7)
    assert after["completion_len"] == before["completion_len"] and after["reward"] == before["reward"]
    moved = max(float((w_before[k] - start.state_dict()[k]).abs().max()) for k in w_before)
    assert moved > 1e-3  # the step changed the weights, so equal weights below mean an equal update
    for k in w_before:
        assert torch.allclose(w_after[k], w_before[k], atol=1e-6, rtol=1e-5), k


def test_step_timer_and_summary_add_up():
    """Expected values by hand: two measured steps of 10 s and 14 s (rollout 6 and 8 s) -> mean 12 s,
    rollout 7 s = 7/12 of the step; the warm-up row (index 0) is left out."""
    from training.step_timing import StepTimer, summarise

    timer = StepTimer()
    with timer("rollout"):
        pass
    with timer("rollout"):
        pass
    assert set(timer.parts) == {"rollout"} and timer.parts["rollout"] >= 0.0
    row = {"objective": "grpo", "prompts_per_step": 1, "variant": "after", "completion_len": 30.0, "load1": 5.0}
    rows = [{**row, "index": 0, "total_s": 99.0, "parts": {"rollout": 90.0}},
            {**row, "index": 1, "total_s": 10.0, "parts": {"rollout": 6.0, "sync": 1.0}},
            {**row, "index": 2, "total_s": 14.0, "parts": {"rollout": 8.0, "sync": 2.0}}]
    [t] = summarise(rows, warmup=1)
    assert t["steps"] == 2 and t["total_s"] == 12.0
    assert t["parts_s"]["rollout"] == 7.0 and t["parts_s"]["sync"] == 1.5 and t["parts_s"]["reference"] == 0.0
    assert t["shares"]["rollout"] == pytest.approx(7 / 12)


@pytest.mark.parametrize("objective", ["grpo", "gspo", "capo", "c2gspg"])
def test_inert_on_uniform_groups_is_true_exactly_when_a_uniform_group_has_zero_gradient(objective, tokenizer_dir):
    """The property the skip relies on: an all-right (or all-wrong) group's loss has an all-zero gradient
    for GRPO without KL, GSPO and CAPO; C2GSPG's confidence term and GRPO's KL term are not zero there."""
    from training.models import build_tiny_model, load_tokenizer
    from training.objectives import OBJECTIVES
    from training.rl import token_logps

    model = build_tiny_model(load_tokenizer(tokenizer_dir), seed=0)
    rollout = _ragged_rollout()
    with torch.no_grad():
        ref_logps = token_logps(build_tiny_model(load_tokenizer(tokenizer_dir), seed=1), rollout)
    for beta in ((0.0, 0.1) if objective == "grpo" else (0.0,)):
        args = RLArgs(objective=objective, group_size=4, beta=beta, ref_high=1e9)
        hyper = args.objective_kwargs()
        for reward in (0.0, 1.0):
            model.zero_grad(set_to_none=True)
            logps = token_logps(model, rollout)
            loss, _ = OBJECTIVES[objective](logps, logps.detach() - 0.01, ref_logps, torch.full((4,), reward),
                                            rollout.completion_mask, group_size=4, **hyper)
            loss.backward()
            largest = max(float(p.grad.abs().max()) for p in model.parameters() if p.grad is not None)
            assert (largest == 0.0) == OBJECTIVES[objective].inert_on_uniform_groups(hyper), (beta, reward, largest)


@pytest.mark.parametrize("objective,optimiser,rewards", [
    ("grpo", "sgd", "one_uniform"), ("gspo", "sgd", "one_uniform"), ("capo", "sgd", "one_uniform"),
    ("grpo", "adamw", "all_uniform"), ("capo", "adamw", "all_uniform")])
def test_skipping_inert_groups_keeps_the_update(objective, optimiser, rewards, tokenizer_dir, tiny_examples):
    """A seeded step with and without the skip: the same metrics and the same new weights. One group
    all wrong and one mixed (SGD: equal weights mean equal gradients), or both all wrong (AdamW: with no
    backward at all the weights still move by weight decay, as with a zero gradient before)."""
    from accelerate import Accelerator

    from training.models import build_tiny_model, load_tokenizer
    from training.rl import rl_step
    from training.rollout import PolicyEngine

    tok = load_tokenizer(tokenizer_dir)
    start = build_tiny_model(tok, seed=0)
    args = RLArgs(objective=objective, group_size=4, prompts_per_step=2, max_new_tokens=8, learning_rate=1.0,
                  ref_low=0.0, ref_high=1e9)

    def reward_fn(texts, golds):  # group 0 (rows 0-3) all wrong; group 1 alternating, or all wrong too
        return [0.0 if i < 4 or rewards == "all_uniform" else float(i % 2) for i in range(len(texts))]

    results = {}
    for skip in (False, True):
        policy = copy.deepcopy(start)
        ref = copy.deepcopy(start).eval().requires_grad_(False) if objective == "capo" else None
        optimizer = (torch.optim.SGD(policy.parameters(), lr=1.0) if optimiser == "sgd"
                     else torch.optim.AdamW(policy.parameters(), lr=1e-2))
        metrics = rl_step(policy, ref, optimizer, tok, tiny_examples, args, reward_fn, PolicyEngine(policy, tok),
                          Accelerator(cpu=True), seed=7, skip_inert_groups=skip)
        results[skip] = (metrics, {k: v.detach().clone() for k, v in policy.state_dict().items()})
    (before, w_before), (after, w_after) = results[False], results[True]
    for key in before:
        if isinstance(before[key], float):
            assert after[key] == pytest.approx(before[key], rel=1e-5, abs=1e-7), key
    moved = max(float((w_before[k] - start.state_dict()[k]).abs().max()) for k in w_before)
    assert moved > 1e-5  # the step moved the weights (gradient, or AdamW's weight decay)
    for k in w_before:
        assert torch.allclose(w_after[k], w_before[k], atol=1e-6, rtol=1e-5), k


def test_target_run_estimate_composes_the_parts():
    """By hand: one group's forward + backward 3 + 5 = 8 s before, 2 + 4 = 6 s after; CAPO's no-grad
    reference forward 1 s; optimiser 1 s; 8 x 8 rollout 70 s + sync 2 s. GRPO after, 8 groups:
    72 + 8 * 6 + 1 = 121 s a step; with half the groups uniform 72 + 8 * (0.5 * 6 + 0.5 * 1) + 1 = 101 s.
    The run: 300 + 100 * 121 + 11 * 400 = 16,800 s."""
    from training.step_timing import target_run_estimate

    def row(fwd, bwd, ref):
        return {"parts_s": {"forward": fwd, "backward": bwd, "reference": ref, "optimizer": 1.0}}

    trainer = {("grpo", "before"): row(3, 5, 0), ("grpo", "after"): row(2, 4, 0),
               ("capo", "before"): row(3, 5, 1.5), ("capo", "after"): row(2, 4, 1.0)}
    est = target_run_estimate(trainer, {"rollout": 70.0, "sync": 2.0}, uniform_share=0.5, eval_s=400.0)["estimate"]
    assert est["grpo"]["before"]["step_s"] == 72 + 8 * 8 + 1
    assert est["grpo"]["after"]["step_s"] == 121 and est["grpo"]["after+skip"]["step_s"] == 101
    assert est["grpo"]["after"]["run_s"] == 16_800
    assert est["capo"]["after"]["step_s"] == 72 + 8 * (6 + 1) + 1  # CAPO's reference forward for every group


def test_inner_epochs_take_pi_old_from_the_first_update(tokenizer_dir, tiny_examples):
    """GSPO with 2 inner epochs: ``rl_step`` takes pi_old's log-probs from its first update's forward (the
    optimiser steps after it) instead of a separate no-grad pass. Its new weights equal those of that separate
    pass followed by two updates against it, on the same seeded samples; pi_old taken after the first update
    would give ratio 1 in the second epoch again, and other weights."""
    from accelerate import Accelerator

    from training.models import build_tiny_model, load_tokenizer
    from training.rl import policy_update, question_prompt_ids, rl_step, sample_rollouts, token_logps
    from training.rollout import PolicyEngine

    tok = load_tokenizer(tokenizer_dir)
    start = build_tiny_model(tok, seed=0)
    args = RLArgs(objective="gspo", group_size=4, prompts_per_step=2, max_new_tokens=8, learning_rate=1.0,
                  inner_epochs=2, epsilon=10.0)  # a wide clip, so the second epoch's ratio moves the update

    def alternate(texts, golds):
        return [float(i % 2) for i in range(len(texts))]

    def sgd(model):
        return torch.optim.SGD(model.parameters(), lr=args.learning_rate)

    policy = copy.deepcopy(start)
    rl_step(policy, None, sgd(policy), tok, tiny_examples, args, alternate, PolicyEngine(policy, tok),
            Accelerator(cpu=True), seed=123)

    results = {}
    for when in ("before", "after the first update"):
        ref_policy = copy.deepcopy(start)
        optimizer, accelerator = sgd(ref_policy), Accelerator(cpu=True)
        prompts = [question_prompt_ids(tok, ex.question) for ex in tiny_examples]
        ref_policy.eval()
        rollout = sample_rollouts(PolicyEngine(ref_policy, tok), tok, prompts, args, accelerator.device, seed=123)
        rewards = torch.tensor(alternate(rollout.texts, None))
        with torch.no_grad():
            old = token_logps(ref_policy, rollout)
        ref_policy.train()
        policy_update(ref_policy, optimizer, rollout, rewards, old, None, args, accelerator)
        if when != "before":
            with torch.no_grad():
                old = token_logps(ref_policy, rollout)
        policy_update(ref_policy, optimizer, rollout, rewards, old, None, args, accelerator)
        results[when] = ref_policy.state_dict()
    mine, separate, late = policy.state_dict(), results["before"], results["after the first update"]
    assert max(float((separate[k] - start.state_dict()[k]).abs().max()) for k in mine) > 1e-3  # it learned
    for k in mine:
        assert torch.allclose(mine[k], separate[k], atol=1e-6, rtol=1e-5), k
    assert any(not torch.allclose(late[k], separate[k], atol=1e-5, rtol=1e-4) for k in mine)  # can fail
