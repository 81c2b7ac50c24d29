"""CASPO (the CaT/CASPO paper, arXiv 2605.07353, §3.2 / Algorithm 1): step-level confidence-aware preference optimisation.

Each round:

1. **Collect.** For every GSM8K question and every reference step ``j`` the context ``q_j`` is the
   chat prompt plus the reference steps before ``j`` (notes removed). The policy samples
   ``candidates_per_step`` next steps at the round's temperature (schedule 0.7 -> 1.0 -> 1.2, the
   last repeating); the first sample is ``s_j``, the others are its competitors. Each step is cut at
   its first newline and gets
   * its length-normalised log-probability (ranks competitors),
   * an entropy confidence ``c = exp(-mean token entropy)`` in (0, 1] (1 = the model was certain at
     every token), from the raw (temperature-1) distribution (exact entropies: ``HFEngine``'s, the engine
     layer's transformers adapter on the live policy, or one policy forward when a colocated vLLM engine
     samples; ``step_groups``),
   * a correctness judgement: exact by default (the step's calculator note, or the gold answer for
     the last step), or a critic model behind an OpenAI endpoint (``--judge critic``; ``training.judge``).
   ``training.pairs.caspo_pairs`` then applies Algorithm 1's rules; pairs are saved as
   ``pairs_round<r>.jsonl`` beside the checkpoint.
2. **Optimise.** TRL's ``DPOTrainer`` (sigmoid DPO loss, ``beta`` = 0.1) on those pairs, with the
   reference model *reset to a frozen copy of the current policy* each round. (TRL would reload a
   reference from the model's original path if given ``ref_model=None``, which is not the latest policy.)

A checkpoint is written after every round (``state.json`` holds the next round), so ``--resume``
continues with the next round from the latest weights. ``--first-round-from DIR`` takes round 0's pairs from
another run of the same start model and collection settings (a learning-rate sweep collects them once).
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from cat_serve.files import read_jsonl, write_jsonl
from training.checkpoint import is_checkpoint, read_metrics, read_state, save_checkpoint
from training.config import CASPOArgs
from training.data import GSM8KExample, load_gsm8k
from training.judge import CriticJudge, judge_step
from training.models import load_model_and_tokenizer, train_device, trainer_precision_kwargs
from training.pairs import INCORRECT, Competitor, PreferencePair, StepSample, caspo_pairs
from training.rl import question_prompt_ids

def round_temperature(temperatures: Sequence[float], r: int) -> float:
    return temperatures[min(r, len(temperatures) - 1)]


@torch.no_grad()
def step_groups(sampler, policy, tokenizer, contexts: Sequence[Sequence[int]], *, n: int, temperature: float,
                max_tokens: int) -> list[list[tuple[str, float, float | None]]]:
    """For every context, ``n`` candidate next steps as (text, mean logprob, entropy confidence), from one
    ``sampler.sample_groups`` call (a ``training.rollout`` engine: ``HFEngine`` on the live policy, or the
    colocated vLLM engine, which batches every context of a depth).

    Each step is cut at its first newline (``"\n"`` is the stop string). The mean log-probability is the
    sampler's, of the raw (temperature-1) distribution (HFEngine's; vLLM's default raw log-probs). The entropy
    confidence ``exp(-mean token entropy)`` is exact: the sampler's own where its entropies are exact (HFEngine),
    else one no-grad forward of ``policy`` over the first candidate of each context (vLLM reports top-k
    estimates only). Algorithm 1 reads the confidence of that first candidate (s_j) alone; the competitors'
    are None there."""
    from cat_serve.search.types import GenParams

    params = GenParams(max_tokens=max_tokens, temperature=temperature, stop=("\n",), top_logprobs=0)
    groups = sampler.sample_groups([list(c) for c in contexts], n, params)
    exact = getattr(sampler, "exact_entropy", False)
    firsts = None if exact else exact_confidences(policy, tokenizer, contexts, [g[0] for g in groups])
    out = []
    for i, group in enumerate(groups):
        rows = []
        for j, st in enumerate(group):
            k = max(len(st.token_ids), 1)
            conf = math.exp(-sum(st.entropies) / k) if exact else (firsts[i] if j == 0 else None)
            rows.append((st.text.strip(), sum(st.logprobs) / k, conf))
        out.append(rows)
    return out


@torch.no_grad()
def exact_confidences(policy, tokenizer, contexts: Sequence[Sequence[int]], steps, *, chunk: int = 16) -> list[float]:
    """``exp(-mean token entropy)`` of each step (an engine ``Step``) after its context, under ``policy`` at
    temperature 1: the trainer's exact full-vocabulary entropies, ``chunk`` rows per forward."""
    from training.rl import rollout_from_steps, token_logps

    device = next(policy.parameters()).device
    out: list[float] = []
    for lo in range(0, len(steps), chunk):
        rollout = rollout_from_steps(contexts[lo:lo + chunk], [[s] for s in steps[lo:lo + chunk]],
                                     tokenizer.pad_token_id, device)
        _, entropy = token_logps(policy, rollout, with_entropy=True)
        mask = rollout.completion_mask.float()
        mean = (entropy.float() * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        out += [math.exp(-m) for m in mean.tolist()]
    return out


def step_samples(model, tokenizer, ex: GSM8KExample, *, n: int, temperature: float, max_tokens: int,
                 critic: CriticJudge | None = None, sampler=None):
    """One ``StepSample`` per reference step of ``ex``, judged exactly or by ``critic``; sampled by ``sampler``
    (default: ``HFEngine`` on the live ``model``)."""
    if sampler is None:
        from training.rollout import PolicyEngine

        sampler = PolicyEngine(model, tokenizer)
    prompt = question_prompt_ids(tokenizer, ex.question)
    out = []
    last = len(ex.steps) - 1
    for j, (raw_ref, ref) in enumerate(zip(ex.steps, ex.clean_steps)):
        prefix = "".join(s + "\n" for s in ex.clean_steps[:j])
        context_ids = prompt + tokenizer(prefix, add_special_tokens=False)["input_ids"]
        cands = step_groups(sampler, model, tokenizer, [context_ids], n=n, temperature=temperature,
                            max_tokens=max_tokens)[0]

        def judge(text: str) -> bool:
            exact = judge_step(text, raw_ref, gold=ex.gold if j == last else None)
            if critic is None:
                return exact
            return critic(question=ex.question, prefix=prefix, candidate=text, reference=ref, exact=exact)

        (text, _, conf), rivals = cands[0], cands[1:]
        out.append(StepSample(
            context=tokenizer.decode(context_ids), candidate=text, correct=judge(text), confidence=conf,
            reference=ref, competitors=tuple(Competitor(t, lp, judge(t)) for t, lp, _ in rivals),
        ))
    return out


def arith_round_samples(sampler, policy, tokenizer, examples: Sequence[GSM8KExample], *, n: int, temperature: float,
                        max_tokens: int, on_policy: bool) -> list[StepSample]:
    """Steps of arith examples judged by ``eval.arith.Critic`` (exact, from the model's own state).

    ``on_policy``: q_j = [x, s_1 .. s_{j-1}] with the model's own sampled steps (Eq. 1), until it writes
    the answer line or ``len(steps) + 2`` steps; otherwise the reference steps before j (teacher forcing).
    The StepSample's ``reference`` is the critic's correct step from that context.

    Depth by depth: the j-th contexts of every example still going are sampled in one ``step_groups`` call
    (one batch for the vLLM engine). Samples are returned example by example, in step order."""
    from eval.arith import Critic

    states = [{"critic": Critic.from_reference(ex.steps), "prompt": question_prompt_ids(tokenizer, ex.question),
               "reference": list(ex.clean_steps) + [f"#### {ex.gold}"], "prefix": [], "samples": [], "done": False}
              for ex in examples]
    depth = 0
    while True:
        active = [st for st in states if not st["done"] and depth < len(st["reference"]) + (2 if on_policy else 0)]
        if not active:
            break
        contexts = []
        for st in active:
            if not on_policy:
                st["prefix"] = st["reference"][:depth]
            prefix = "".join(line + "\n" for line in st["prefix"])
            contexts.append(st["prompt"] + tokenizer(prefix, add_special_tokens=False)["input_ids"])
        groups = step_groups(sampler, policy, tokenizer, contexts, n=n, temperature=temperature, max_tokens=max_tokens)
        for st, context_ids, cands in zip(active, contexts, groups):
            critic, lines = st["critic"], st["prefix"]
            (text, _, conf), rivals = cands[0], cands[1:]
            st["samples"].append(StepSample(
                context=tokenizer.decode(context_ids), candidate=text, correct=critic.judge(lines, text),
                confidence=conf, reference=critic.next_step(lines),
                competitors=tuple(Competitor(t, lp, critic.judge(lines, t)) for t, lp, _ in rivals),
            ))
            if on_policy:
                if not text or text.lstrip().startswith("####"):
                    st["done"] = True
                else:
                    st["prefix"] = lines + [text]
        depth += 1
    return [sample for st in states for sample in st["samples"]]


COLLECT_BATCH = 64  # arith examples sampled together, depth by depth (x candidates_per_step sequences per call)


def collect_pairs(model, tokenizer, examples: Sequence[GSM8KExample], args: CASPOArgs, temperature: float,
                  sampler=None):
    """(pairs, collection metrics) for one round. ``sampler``: a ``training.rollout`` engine holding the
    current weights (default: ``HFEngine`` on the live ``model``); the arith judge batches its contexts."""
    if args.contexts == "on_policy" and args.judge != "arith":
        raise ValueError("--contexts on_policy needs --judge arith (an exact critic that judges any state)")
    model.eval()
    critic = None
    if args.judge == "critic":
        critic = CriticJudge(args.critic_base_url, args.critic_model, api_key=args.critic_api_key)
    if sampler is None:
        from training.rollout import PolicyEngine

        sampler = PolicyEngine(model, tokenizer)
    if args.judge == "arith":
        samples, t0 = [], time.time()
        for lo in range(0, len(examples), COLLECT_BATCH):
            samples += arith_round_samples(
                sampler, model, tokenizer, examples[lo:lo + COLLECT_BATCH], n=args.candidates_per_step,
                temperature=temperature, max_tokens=args.max_step_tokens, on_policy=args.contexts == "on_policy")
            print(json.dumps({"collected": min(lo + COLLECT_BATCH, len(examples)), "of": len(examples),
                              "steps": len(samples), "s": round(time.time() - t0, 1)}), flush=True)
    else:
        samples = [s for ex in examples for s in step_samples(
            model, tokenizer, ex, n=args.candidates_per_step, temperature=temperature,
            max_tokens=args.max_step_tokens, critic=critic, sampler=sampler)]
    pairs = caspo_pairs(samples, threshold=args.confidence_threshold)
    n = max(len(samples), 1)
    metrics = {
        "steps": len(samples),
        "step_accuracy": sum(s.correct for s in samples) / n,
        "step_confidence": sum(s.confidence for s in samples) / n,
        "pairs": len(pairs),
        "pairs_incorrect": sum(p.kind == INCORRECT for p in pairs),
        "pairs_unconfident": sum(p.kind != INCORRECT for p in pairs),
        **({} if critic is None else {"critic_calls": critic.calls, "critic_fallbacks": critic.fallbacks}),
    }
    return pairs, metrics


def dpo_round(model, tokenizer, pairs: list[PreferencePair], args: CASPOArgs) -> tuple[object, list[dict]]:
    """One DPO optimisation on ``pairs`` against a frozen copy of the current policy."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    dataset = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs])
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    with tempfile.TemporaryDirectory(prefix="cat-caspo-") as work:
        config = DPOConfig(
            output_dir=work, beta=args.beta, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            learning_rate=args.learning_rate, seed=args.seed, logging_steps=1, save_strategy="no",
            report_to="none", dataloader_num_workers=0, **trainer_precision_kwargs(args.mixed_precision),
        )
        trainer = DPOTrainer(model=model, ref_model=ref, args=config, train_dataset=dataset,
                             processing_class=tokenizer)
        trainer.train()
    logs = [row for row in trainer.state.log_history if "loss" in row]
    return trainer.model, logs


# what round 0's pairs depend on: a run may reuse another's round 0 only when all of these agree
COLLECTION_ARGS = ("model", "tokenizer", "data_path", "data_dir", "limit", "max_solution_steps", "seed", "temperatures",
                   "candidates_per_step", "confidence_threshold", "max_step_tokens", "judge", "contexts",
                   "rollout_engine", "vllm_dtype", "vllm_max_model_len", "critic_base_url", "critic_model")


def collection_mismatch(source: Path, args: CASPOArgs) -> list[str]:
    """``COLLECTION_ARGS`` on which the run in ``source`` (its training_args.json) differs from ``args``, as
    ``name=theirs (here mine)``; empty when its round 0 was collected as ``args`` would collect it."""
    from dataclasses import asdict

    theirs, mine = json.loads((Path(source) / "training_args.json").read_text()), json.loads(json.dumps(asdict(args)))
    return [f"{k}={theirs.get(k)!r} (here {mine.get(k)!r})" for k in COLLECTION_ARGS if theirs.get(k) != mine.get(k)]


def first_round(source: Path, args: CASPOArgs) -> tuple[list[PreferencePair], dict]:
    """Round 0's pairs and collection metrics from the CASPO checkpoint ``source`` (``--first-round-from``),
    after checking that it collected them as this run would (``COLLECTION_ARGS``). Round 1 then starts its
    sampler from the new weights with seed + 1, as a run resumed at round 1 does."""
    source = Path(source)
    pairs_file = source / "pairs_round0.jsonl"
    if not (pairs_file.exists() and (source / "training_args.json").exists()):
        raise ValueError(f"--first-round-from {source}: no finished round 0 there (pairs_round0.jsonl and "
                         "training_args.json)")
    differ = collection_mismatch(source, args)
    if differ:
        raise ValueError(f"--first-round-from {source}: its round 0 was collected with other settings: "
                         + ", ".join(differ))
    row = next((m for m in read_metrics(source) if m.get("round") == 0 and "pairs" in m), None)
    if row is None:
        raise ValueError(f"--first-round-from {source}: its metrics.jsonl has no round-0 collection row")
    keep = ("steps", "step_accuracy", "step_confidence", "pairs", "pairs_incorrect", "pairs_unconfident", "collect_s",
            "critic_calls", "critic_fallbacks")
    pairs = [PreferencePair(**row_) for row_ in read_jsonl(pairs_file)]
    return pairs, {**{k: row[k] for k in keep if k in row}, "pairs_from": str(source)}


def _load_pairs(directory: Path) -> dict[str, list[dict]]:
    return {p.name: read_jsonl(p) for p in sorted(directory.glob("pairs_round*.jsonl"))}


def train_caspo(args: CASPOArgs, *, examples: list[GSM8KExample] | None = None):
    """Run the remaining rounds; a checkpoint after each. Returns the checkpoint directory."""
    examples = examples or load_gsm8k(args.data_path, data_dir=args.data_dir, limit=args.limit,
                                      max_solution_steps=args.max_solution_steps)
    start, history, model_path, pair_files = 0, [], args.model, {}
    if args.resume and is_checkpoint(args.output_dir):
        start, history = read_state(args.output_dir)["round"], read_metrics(args.output_dir)
        model_path, pair_files = args.output_dir, _load_pairs(Path(args.output_dir))
    model, tokenizer = load_model_and_tokenizer(model_path, args.tokenizer, seed=args.seed)
    model = model.to(train_device())  # collection samples on the GPU too (DPOTrainer would move it only later)
    path = Path(args.output_dir)
    sampler = None
    try:
        for r in range(start, args.rounds):
            torch.manual_seed(args.seed + r)
            temperature = round_temperature(args.temperatures, r)
            if r == 0 and args.first_round_from:
                pairs, metrics = first_round(Path(args.first_round_from), args)
            else:
                if sampler is None:
                    from training.rollout import make_rollout_engine

                    sampler = make_rollout_engine(args.rollout_engine, model, tokenizer, seed=args.seed + r,
                                                  max_model_len=args.vllm_max_model_len, vllm_dtype=args.vllm_dtype)
                t0 = time.time()
                pairs, metrics = collect_pairs(model, tokenizer, examples, args, temperature, sampler=sampler)
                metrics["collect_s"] = round(time.time() - t0, 1)
            pair_files[f"pairs_round{r}.jsonl"] = [p.to_dict() for p in pairs]
            dpo_logs = []
            if pairs:
                t0 = time.time()
                model, dpo_logs = dpo_round(model, tokenizer, pairs, args)
                metrics["dpo_s"] = round(time.time() - t0, 1)
                # no sampler after a reused round 0: the next round starts one from the new weights
                if sampler is not None and sampler.kind == "transformers":  # HFEngine holds the policy object
                    sampler = None
                elif sampler is not None and r + 1 < args.rounds:
                    sampler.sync_weights(model)
            history.append({"round": r, "temperature": temperature, **metrics,
                            "dpo_loss": dpo_logs[-1]["loss"] if dpo_logs else None})
            history.extend({"round": r, **row} for row in dpo_logs)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                              for k, v in history[-1 - len(dpo_logs)].items()}), flush=True)

            def write_pairs(tmp: Path) -> None:
                for name, rows in pair_files.items():
                    write_jsonl(tmp / name, rows)

            path = save_checkpoint(args.output_dir, model, tokenizer, args=args, metrics=history,
                                   state={"round": r + 1, "rounds": args.rounds}, extra=write_pairs)
    finally:
        if sampler is not None:
            sampler.close()
    return path
