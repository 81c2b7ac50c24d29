"""Online RL on GSM8K-style data with the pure objectives of ``training.objectives``.

Why a small own trainer and not TRL's ``GRPOTrainer`` with overrides
-------------------------------------------------------------------
``GRPOTrainer`` would need its *private* ``_generate_and_score_completions`` and ``_compute_loss``
overridden: CAPO needs reference log-probs even without a KL term (its perplexity mask) and the
correct/incorrect split rather than scalar advantages, C2GSPG needs the confidence term with grad,
and every objective needs the group layout. Those private methods change shape between TRL
releases (vLLM modes, multi-turn tools, liger paths ...), so overrides would be re-written per
version and the loss would again be buried in a trainer. The loop here is ~150 lines that a reader
can hold in their head: sample ``G`` completions per prompt -> score with the project's one grader
(``cat_serve.search.formats.grade``) -> old/ref log-probs -> ``inner_epochs`` updates of
``OBJECTIVES[name]``. Group sampling goes through the engine layer (``training.rollout``): with vLLM present a vLLM engine
colocated with the trainer whose weights are reloaded in place after every step, otherwise ``HFEngine``
around the live policy, or ``trl vllm-serve`` on other GPUs (``--rollout-engine trl-server``).
SFT and DPO, where TRL needs no surgery, use TRL directly (``sft.py``, ``caspo.py``).

Scale-out: the loop runs under ``accelerate`` (``Accelerator.prepare`` of policy and optimiser), so
``accelerate launch`` / ``torchrun`` with N processes gives N ranks that each sample their own
``prompts_per_step`` prompts and average gradients (DDP, tested on CPU; sharded set-ups: training/README.md).

Logged per step (over all ranks): reward mean, accuracy, mean token entropy, AUROC of sequence
confidence ``exp(mean token logprob)`` against correctness, completion length, the objective's metrics,
``sampler_logp_gap`` (sampler vs trainer log-probs of the sampled tokens) and ``samples``.
``--resume`` continues from the checkpoint's weights, optimiser state (``optimizer.pt``) and step
counter, with rollout seeds derived from the step, so a resumed run repeats what the uninterrupted
run would have done; the reference model is reloaded from ``--model`` (the starting weights).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from cat_serve.engine.base import chat_prompt_ids
from cat_serve.engine.output import left_pad
from cat_serve.prompts import TRAIN_SUFFIX
from eval.metrics import auroc
from training import objectives as O
from training.checkpoint import is_checkpoint, read_metrics, read_state, save_checkpoint
from training.config import RLArgs
from training.data import GSM8KExample, load_gsm8k
from training.models import load_model_and_tokenizer, mixed_precision

RewardFn = Callable[[Sequence[str], Sequence[str]], list[float]]


def grade_rewards(texts: Sequence[str], golds: Sequence[str]) -> list[float]:
    """1.0 when the completion's final answer matches the gold answer (the project's one grader)."""
    from cat_serve.search.formats import grade

    return [1.0 if grade(t, g) else 0.0 for t, g in zip(texts, golds)]


def question_prompt_ids(tokenizer, question: str) -> list[int]:
    """Token ids of the chat-formatted training question (``TRAIN_SUFFIX``), ready for the answer."""
    return chat_prompt_ids(tokenizer, [{"role": "user", "content": question + TRAIN_SUFFIX}])


@dataclass
class Rollout:
    input_ids: torch.Tensor  # [B, P + T] left-padded prompt + right-padded completion
    attention_mask: torch.Tensor  # [B, P + T]
    completion_mask: torch.Tensor  # [B, T] 1 up to and including the first EOS
    prompt_len: int  # P
    texts: list[str]
    sampler_logps: torch.Tensor | None = None  # [B, T] log p(token) reported by the rollout engine
    entropies: torch.Tensor | None = None  # [B, T] engine's per-token entropies (NaN if it has none)


def completion_mask_from(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """[B, T] -> [B, T]: 1 up to and including the first EOS, 0 after it."""
    is_eos = tokens == eos_id
    after_eos = (is_eos.cumsum(-1) - is_eos.long()) > 0  # strictly after the first EOS
    return (~after_eos).long()


def right_pad(rows: Sequence[Sequence[float]], value, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of different lengths -> ([B, T] values, [B, T] 0/1 mask); T >= 1."""
    width = max(1, max(len(r) for r in rows))
    out = torch.full((len(rows), width), value, dtype=dtype)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            out[i, :len(r)] = torch.tensor(list(r), dtype=dtype)
            mask[i, :len(r)] = 1
    return out, mask


def rollout_from_steps(prompts: Sequence[Sequence[int]], groups: Sequence[Sequence], pad_id: int,
                       device: torch.device | str = "cpu") -> Rollout:
    """Engine ``Step`` groups (one list per prompt) -> the trainer's padded ``Rollout``, groups consecutive.

    A step's ``token_ids`` end with the EOS token when it finished, so the completion mask is simply
    its length."""
    steps = [s for g in groups for s in g]
    repeated = [p for p, g in zip(prompts, groups) for _ in g]
    ids, mask = left_pad(repeated, pad_id)
    tokens, cmask = right_pad([s.token_ids for s in steps], pad_id, torch.long)
    lps, _ = right_pad([s.logprobs for s in steps], 0.0, torch.float32)
    ents, _ = right_pad([s.entropies for s in steps], 0.0, torch.float32)
    return Rollout(torch.cat([ids, tokens], 1).to(device), torch.cat([mask, cmask], 1).to(device),
                   cmask.to(device), ids.shape[1], [s.text for s in steps], lps.to(device), ents.to(device))


@torch.no_grad()
def sample_rollouts(engine, tokenizer, prompts: Sequence[Sequence[int]], args: RLArgs,
                    device: torch.device | str = "cpu", *, seed: int | None = None) -> Rollout:
    """``group_size`` sampled completions per prompt from the rollout engine, groups consecutive."""
    from cat_serve.search.types import GenParams

    params = GenParams(max_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                       top_logprobs=0, include_stop_str=True, seed=seed)
    groups = engine.sample_groups(prompts, args.group_size, params)
    return rollout_from_steps(prompts, groups, tokenizer.pad_token_id, device)


def dev_metrics(engine, tokenizer, examples: Sequence[GSM8KExample], args: RLArgs, *, seed: int) -> dict:
    """Sampled accuracy, ECE of exp(mean token logprob) and AUC-mean (CAPO, arXiv 2604.12632) on a fixed dev
    set: ``eval_samples`` completions per question at the rollout temperature, a fixed seed every time."""
    from cat_serve.search.formats import grade
    from cat_serve.search.types import GenParams
    from eval.metrics import auc_mean, auc_mean_all, auroc, ece

    params = GenParams(max_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                       top_logprobs=0, include_stop_str=True, seed=seed)
    groups = engine.sample_groups([question_prompt_ids(tokenizer, ex.question) for ex in examples],
                                  args.eval_samples, params)
    per_q, conf, correct = [], [], []
    for ex, group in zip(examples, groups):
        mean_lp = [sum(st.logprobs) / max(len(st.logprobs), 1) for st in group]
        ok = [grade(st.text, ex.gold) for st in group]
        per_q.append((mean_lp, ok))
        conf += [math.exp(x) for x in mean_lp]
        correct += ok
    return {"dev_accuracy": sum(correct) / max(len(correct), 1), "dev_ece": ece(conf, correct),
            "dev_auc_mean": auc_mean(per_q), "dev_auc_all": auc_mean_all(per_q),
            "dev_confidence": sum(conf) / max(len(conf), 1),
            "dev_questions_with_both": sum(1 for _, ok in per_q if 0 < sum(ok) < len(ok)),
            # per question, for intervals by question (bootstrap) in the lab report
            "dev_q_correct": [sum(ok) for _, ok in per_q], "dev_q_auroc": [auroc(lp, ok) for lp, ok in per_q]}


def rollout_seed(seed: int, step: int, rank: int) -> int:
    """Sampling seed of one rank's rollouts at ``step`` (sample j of a prompt uses ``+ j``): a resumed
    run draws exactly what the uninterrupted run would have drawn."""
    return ((seed * 1_000_003 + step) * 256 + rank) * 4096 % (2**31)


def token_logps(model, rollout: Rollout, *, with_entropy: bool = False, chunk: int | None = None,
                trim_logits: bool = True):
    """Per-token log-probs of the completion tokens [B, T] (and entropies [B, T] when asked).

    ``chunk`` rows at a time when given (for the no-grad passes): the [rows, T, V] log-softmax is the
    largest tensor of a step (16 x 330 x 49,152 fp32 = 1 GB for SmolLM2), so chunking bounds memory.

    ``trim_logits``: the LM head runs only on the T + 1 last positions (transformers'
    ``logits_to_keep``), not on the prompt's, whose logits are thrown away. Only the completion's
    log-probs are needed, so this is a pure speed change (the head is a fifth of SmolLM2's forward
    FLOPs per position and the prompt is most of the positions); ``tests/training/test_step_timing.py``
    checks that the loss is unchanged."""
    if chunk is not None and chunk < rollout.input_ids.shape[0]:
        parts = [token_logps(model, _rows(rollout, i, i + chunk), with_entropy=with_entropy, trim_logits=trim_logits)
                 for i in range(0, rollout.input_ids.shape[0], chunk)]
        if not with_entropy:
            return torch.cat(parts)
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    position_ids = (rollout.attention_mask.cumsum(-1) - 1).clamp(min=0)
    width = rollout.input_ids.shape[1] - rollout.prompt_len  # T
    keep = {"logits_to_keep": width + 1} if trim_logits else {}
    logits = model(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask,
                   position_ids=position_ids, **keep).logits  # [B, P+T, V], or [B, T+1, V] trimmed
    logits = logits[:, -(width + 1):-1].float()  # [B, T, V] predicts completion tokens
    logp_all = torch.log_softmax(logits, dim=-1)
    targets = rollout.input_ids[:, rollout.prompt_len:]  # [B, T]
    logps = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [B, T]
    if not with_entropy:
        return logps
    with torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(-1)  # [B, T]
    return logps, entropy


def _rows(rollout: Rollout, lo: int, hi: int) -> Rollout:
    return Rollout(rollout.input_ids[lo:hi], rollout.attention_mask[lo:hi], rollout.completion_mask[lo:hi],
                   rollout.prompt_len, rollout.texts[lo:hi])


def sequence_stats(rewards: torch.Tensor, old_logps, entropy, mask) -> torch.Tensor:
    """[B, 5] per completion: reward, confidence exp(mean token logprob), entropy sum, length, correct.

    Per-sequence rows so that ranks with different completion lengths can be gathered."""
    maskf = mask.to(old_logps.dtype)
    confidence = O.sequence_confidence(old_logps, maskf)  # [B]
    return torch.stack([rewards.to(maskf.dtype), confidence, (entropy * maskf).sum(-1), maskf.sum(-1),
                        (rewards > 0.5).to(maskf.dtype)], dim=-1)


def rollout_metrics(stats: torch.Tensor) -> dict[str, float | None]:
    """Step metrics from the ``sequence_stats`` rows of every rank's groups."""
    reward, confidence, ent_sum, length, correct = stats.double().unbind(-1)
    return {
        "reward": float(reward.mean()),
        "accuracy": float(correct.mean()),
        "entropy": float(ent_sum.sum() / length.sum().clamp(min=1)),  # mean over all completion tokens
        "auroc": auroc(confidence.tolist(), (correct > 0.5).tolist()),  # None with one class only
        "confidence": float(confidence.mean()),
        "completion_len": float(length.mean()),
    }


def no_timer(name: str):
    """The default ``timer`` of ``rl_step``: times nothing (``training.step_timing.StepTimer`` times)."""
    return contextlib.nullcontext()


def rl_step(policy, ref, optimizer, tokenizer, batch: Sequence[GSM8KExample], args: RLArgs,
            reward_fn: RewardFn, engine, accelerator, *, seed: int | None = None, timer=no_timer,
            trim_logits: bool = True, skip_inert_groups: bool = True) -> dict[str, float]:
    """One sample -> score -> ``inner_epochs`` updates cycle on this rank's ``batch``; metrics of all ranks.

    ``timer(name)`` is entered around each part (rollout, reward, reference, forward,
    backward, optimizer, metrics): ``training.step_timing`` uses it to say where a step's time goes."""
    device = accelerator.device
    policy.eval()
    prompts = [question_prompt_ids(tokenizer, ex.question) for ex in batch]
    with timer("rollout"):
        rollout = sample_rollouts(engine, tokenizer, prompts, args, device, seed=seed)
    with timer("reward"):
        golds = [ex.gold for ex in batch for _ in range(args.group_size)]
        rewards = torch.tensor(reward_fn(rollout.texts, golds), dtype=torch.float32, device=device)  # [B]
    with torch.no_grad(), accelerator.autocast():  # the reference in the policy's precision (bf16 on a GPU)
        with timer("reference"):
            ref_logps = (token_logps(ref, rollout, chunk=args.group_size, trim_logits=trim_logits)
                         if ref is not None else None)
    # pi_old must stay fixed while the inner epochs move pi_theta: the first update's forward runs at pi_old
    # (the optimiser steps after its last group), so its detached log-probs are pi_old's for the later
    # epochs, and no separate no-grad pass is needed (it cost a forward of the whole batch each step)
    old_logps = entropy = None
    maskf = rollout.completion_mask.float()
    policy.train()
    for _ in range(args.inner_epochs):
        old_logps, pass_entropy, obj_metrics = policy_update(policy, optimizer, rollout, rewards, old_logps,
                                                             ref_logps, args, accelerator, timer=timer,
                                                             trim_logits=trim_logits,
                                                             skip_inert_groups=skip_inert_groups)
        entropy = pass_entropy if entropy is None else entropy
    if engine.exact_entropy:  # exact entropies of the sampling pass (HFEngine on the live policy)
        entropy = rollout.entropies
    with timer("metrics"):
        # how far the sampler's log-probs are from the trainer's: ~0 unless the sampler holds stale weights
        sampler_gap = O.masked_mean((rollout.sampler_logps - old_logps).abs(), maskf).detach()
        stats = accelerator.gather(sequence_stats(rewards, old_logps, entropy, rollout.completion_mask))
        names = sorted(obj_metrics)
        local = torch.tensor([float(obj_metrics[k]) for k in names] + [float(sampler_gap)], device=device)
        means = accelerator.gather(local[None]).double().mean(0).tolist()  # objective metrics: mean over ranks
    return {**rollout_metrics(stats.cpu()), **dict(zip(names, means)), "sampler_logp_gap": means[-1],
            "samples": int(stats.shape[0])}


def policy_update(policy, optimizer, rollout: Rollout, rewards, old_logps, ref_logps, args: RLArgs, accelerator,
                  *, timer=no_timer, trim_logits: bool = True, skip_inert_groups: bool = True):
    """One optimiser step on the batch, accumulating the gradient one group at a time.

    A group is the unit every objective normalises over (advantages, CAPO pairs), so each group's loss
    is exact on its own; weighting it by its share of the batch (rows, or completion tokens for the
    ``token`` aggregation) makes the summed gradient that of the whole-batch loss, while only one
    group's activations are held for backward: peak memory grows with the group, not with the batch.
    ``skip_inert_groups``: a group whose rewards are all equal, under an objective that gives it zero
    gradient (``Objective.inert_on_uniform_groups``), gets a no-grad forward only (about a third of a
    forward + backward); the update is the same. With ``old_logps=None`` (one update per batch) pi_old
    is the policy of this very pass, as in TRL, so its log-probs and the entropies come from the gradient pass and a separate
    no-grad forward is saved. Returns (old_logps [B, T], entropy [B, T] or None, objective metrics
    combined with the same weights)."""
    rows, size = rollout.input_ids.shape[0], args.group_size
    objective = O.OBJECTIVES[args.objective]
    token_level = args.aggregation == "token" and objective.token_level
    total_tokens = rollout.completion_mask.sum().clamp(min=1)
    fresh = old_logps is None
    olds, entropies, parts, skipped = [], [], [], []
    hyper = args.objective_kwargs()
    inert = skip_inert_groups and objective.inert_on_uniform_groups(hyper)
    optimizer.zero_grad(set_to_none=True)
    for lo in range(0, rows, size):
        part, hi = _rows(rollout, lo, lo + size), lo + size
        weight = part.completion_mask.sum() / total_tokens if token_level else torch.tensor(size / rows)
        # DDP averages gradients over ranks at the last backward of the step only
        sync = contextlib.nullcontext() if hi >= rows else accelerator.no_sync(policy)
        # an all-right or all-wrong group has zero gradient under this objective: a no-grad forward gives
        # its log-probs, entropies and metrics, and its backward is skipped (not the step's last group
        # under DDP, whose backward carries the all-reduce)
        skip = inert and bool((rewards[lo:hi] == rewards[lo]).all()) and not (
            hi >= rows and accelerator.num_processes > 1)
        with sync, (torch.no_grad() if skip else contextlib.nullcontext()):
            with timer("forward"):
                if fresh:
                    logps, ent = token_logps(policy, part, with_entropy=True, trim_logits=trim_logits)
                    old = logps.detach()
                    entropies.append(ent)
                else:
                    logps, old = token_logps(policy, part, trim_logits=trim_logits), old_logps[lo:hi]
                olds.append(old)
                loss, metrics = objective(logps, old, None if ref_logps is None else ref_logps[lo:hi],
                                          rewards[lo:hi], part.completion_mask, group_size=size, **hyper)
            if not skip:
                with timer("backward"):
                    accelerator.backward(loss * weight.to(loss.device))
        parts.append((float(weight), metrics))
        skipped.append(skip)
    if all(skipped):  # no backward at all: a zero gradient, so AdamW still moves (decay, momentum) as before
        for p in policy.parameters():
            if p.requires_grad and p.grad is None:
                p.grad = torch.zeros_like(p)
    with timer("optimizer"):
        accelerator.clip_grad_norm_(policy.parameters(), args.max_grad_norm)
        optimizer.step()
    combined = {k: sum(w * m[k] for w, m in parts) for k in parts[0][1]}
    return torch.cat(olds), (torch.cat(entropies) if fresh else None), combined


def question_order(n: int, seed: int) -> list[int]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def step_questions(order: Sequence[int], step: int, rank: int, world: int, per_rank: int) -> list[int]:
    """Question indices of one rank at ``step``: ranks take consecutive, disjoint slices of the order."""
    base = (step * world + rank) * per_rank
    return [order[(base + k) % len(order)] for k in range(per_rank)]


OPTIMIZER_FILE = "optimizer.pt"


def check_distributed_type(kind) -> None:
    """``rl`` runs single-process or data-parallel (DDP); it refuses sharded set-ups before any work.

    Under FSDP / ZeRO-3 a rank holds only a shard, so sampling would need a gathered full copy of the
    weights per rank (a per-rank loop on the sharded model hangs or fails: ranks stop after different
    numbers of tokens). That is not built; TRL's trainers (``sft``, ``caspo``'s DPO step) do shard."""
    name = getattr(kind, "value", str(kind))
    if name in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):
        raise RuntimeError(
            f"cat-train rl supports single-process and data-parallel (DDP) runs, not {name}: sampling needs "
            "the full weights on every rank. Launch it with `accelerate launch --multi_gpu` (DDP), or shard "
            "`sft` / `caspo` instead (training/README.md).")


def train_rl(args: RLArgs, *, reward_fn: RewardFn | None = None, examples: list[GSM8KExample] | None = None):
    """Run RL up to step ``args.max_steps`` and write the checkpoint to ``args.output_dir``.

    ``--resume`` starts from the checkpoint's step, so the same command finishes an interrupted run.

    Launched with ``accelerate launch --num_processes N`` each rank samples its own prompts
    (``prompts_per_step`` per rank) and its own engine, and the gradients are averaged over ranks."""
    from accelerate import Accelerator

    from training.rollout import make_rollout_engine

    # bf16 autocast on a GPU that has it (a launcher's own --mixed_precision wins)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                              mixed_precision=os.environ.get("ACCELERATE_MIXED_PRECISION") or
                              mixed_precision(args.mixed_precision))
    check_distributed_type(accelerator.distributed_type)
    reward_fn = reward_fn or grade_rewards
    examples = examples or load_gsm8k(args.data_path, data_dir=args.data_dir, limit=args.limit,
                                      max_solution_steps=args.max_solution_steps)
    start, history, model_path = 0, [], args.model
    resuming = args.resume and is_checkpoint(args.output_dir)
    if resuming:
        start, history, model_path = read_state(args.output_dir)["step"], read_metrics(args.output_dir), args.output_dir
        if start >= args.max_steps:
            if accelerator.is_main_process:
                print(f"{args.output_dir} is already at step {start} (--max-steps {args.max_steps}); nothing to do")
            return os.path.abspath(args.output_dir)
    policy, tokenizer = load_model_and_tokenizer(model_path, args.tokenizer, seed=args.seed)
    ref = None
    if O.OBJECTIVES[args.objective].needs_reference(args.objective_kwargs()):  # the starting model (args.model), also after --resume
        ref = policy if not resuming else load_model_and_tokenizer(args.model, args.tokenizer, seed=args.seed)[0]
        ref = copy.deepcopy(ref).to(accelerator.device).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=args.learning_rate)
    optimizer_file = os.path.join(args.output_dir, OPTIMIZER_FILE)
    if resuming and os.path.exists(optimizer_file):
        optimizer.load_state_dict(torch.load(optimizer_file, map_location="cpu", weights_only=True))
    policy, optimizer = accelerator.prepare(policy, optimizer)
    engine = make_rollout_engine(args.rollout_engine, accelerator.unwrap_model(policy), tokenizer,
                                 seed=args.seed + accelerator.process_index, max_model_len=args.vllm_max_model_len,
                                 gpu_memory_utilization=args.vllm_gpu_memory_utilization, host=args.vllm_host,
                                 port=args.vllm_port, group_port=args.vllm_group_port, timeout=args.vllm_timeout,
                                 world_size=accelerator.num_processes, weight_sync=args.vllm_weight_sync,
                                 sync_dir=args.vllm_sync_dir, enforce_eager=args.vllm_enforce_eager,
                                 vllm_dtype=args.vllm_dtype)
    order = question_order(len(examples), args.seed)
    rank, world = accelerator.process_index, accelerator.num_processes
    try:
        if engine.shared:  # a server may hold other weights (another run, or before --resume)
            sync_sampler(engine, policy, accelerator)
        dev = (load_gsm8k(args.eval_data_path, limit=args.eval_limit) if args.eval_data_path else [])

        def evaluate(done: int) -> None:
            if dev and accelerator.is_main_process and not any(
                    r.get("eval_step") == done for r in history):
                t = time.perf_counter()
                row = {"eval_step": done, **dev_metrics(engine, tokenizer, dev, args, seed=args.seed + 7919),
                       "eval_time_s": time.perf_counter() - t}
                history.append(row)
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)

        if start == 0:
            evaluate(0)
        for step in range(start, args.max_steps):
            batch = [examples[i] for i in step_questions(order, step, rank, world, args.prompts_per_step)]
            t0 = time.perf_counter()
            metrics = rl_step(policy, ref, optimizer, tokenizer, batch, args, reward_fn, engine, accelerator,
                              seed=rollout_seed(args.seed, step, rank))
            sync_sampler(engine, policy, accelerator)
            metrics = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
            history.append({"step": step + 1, **metrics, "step_time_s": time.perf_counter() - t0})
            if accelerator.is_main_process:
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in history[-1].items()}),
                      flush=True)
            if args.eval_every and ((step + 1) % args.eval_every == 0 or step + 1 == args.max_steps):
                evaluate(step + 1)
            if step + 1 < args.max_steps and args.save_steps and (step + 1) % args.save_steps == 0:
                save_rl_checkpoint(args, accelerator, policy, optimizer, tokenizer, history, step + 1)
    finally:
        engine.close()
    return save_rl_checkpoint(args, accelerator, policy, optimizer, tokenizer, history, args.max_steps)


def sync_sampler(engine, policy, accelerator) -> None:
    """Give a separate sampler (vLLM) the policy's current weights. A sampler shared by all ranks (TRL's
    server) is updated once, by rank 0, and every rank waits for it before sampling again."""
    if not engine.shared:
        engine.sync_weights(accelerator.unwrap_model(policy))
        return
    if accelerator.is_main_process:
        engine.sync_weights(accelerator.unwrap_model(policy))
    accelerator.wait_for_everyone()


def save_rl_checkpoint(args: RLArgs, accelerator, policy, optimizer, tokenizer, history, step: int):
    """Weights, tokenizer, args, metrics, step and optimiser state, atomically; rank 0 writes."""
    state = {"step": step, "objective": args.objective, "world_size": accelerator.num_processes}
    state_dict = accelerator.get_state_dict(policy)  # a collective when sharded: every rank calls it
    path = None
    if accelerator.is_main_process:
        opt_state = optimizer.state_dict()
        path = save_checkpoint(args.output_dir, accelerator.unwrap_model(policy), tokenizer, args=args,
                               metrics=history, state=state, state_dict=state_dict,
                               extra=lambda tmp: torch.save(opt_state, tmp / OPTIMIZER_FILE))
    accelerator.wait_for_everyone()
    return path or os.path.abspath(args.output_dir)
