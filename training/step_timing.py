"""Where an RL step's time goes: a few steps of ``training.rl``'s own loop, each part timed.

``python -m training.step_timing`` loads the policy (the embedded SmolLM2-135M-Instruct unless
``--model`` names the lab's SFT checkpoint), starts the same colocated vLLM sampler as ``cat-train rl``,
and runs ``rl_step`` on the lab's arith train prompts with the lab's settings (``LAB_RL``, a copy of
``lab/recipe.py: RL_RECIPE``'s sampling settings). Every part is timed through ``rl_step``'s ``timer``:
rollout generation, reward, reference log-probs, policy forward, backward, optimiser, metrics, then the
weight sync to vLLM (``sync_sampler``) and, once per run, a dev evaluation (``dev_metrics``).

Before/after comparisons run *interleaved* in one process: at each step index every variant takes one
step (A B A B ...), so a change of machine load hits both alike; the first ``--warmup`` steps are not
averaged. Variants:

* ``before``: the loop as it was (LM head on every position, a backward for every group);
* ``after``: ``trim_logits`` (the LM head only on the completion's positions, ``token_logps``);
* ``after+skip``: also ``skip_inert_groups`` (no backward for an all-right or all-wrong group under
  GRPO without KL, GSPO and CAPO: its gradient is zero). How much it saves depends on the share of such
  groups, so it is only meaningful with a model that solves some prompts (the lab's SFT checkpoint).
* ``after+skip+bf16``: also bf16 autocast over the fp32 weights for the trainer's forward, backward and
  reference (what ``cat-train rl --mixed-precision bf16`` does), worth it on a CPU with native bf16
  (AVX512-BF16 / AMX); the rollout engine is unchanged.
* ``after+skip+bf16+vllm-bf16``: also the colocated vLLM sampler in bfloat16 where the CPU has it natively
  (``cat-train rl --vllm-dtype auto``; a second engine, brought up to the current weights outside the timed
  parts before its turn). ``sampler_logp_gap`` in the rows shows what the lower precision costs.

Each step row records the 1-minute load average (``os.getloadavg``), because the machine is shared.
Writes ``steps.jsonl`` (one row per step), ``table.json`` and ``table.md`` (means over the measured
steps, per part) to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

# The lab's RL settings (lab/recipe.py: RL_RECIPE and LAB_DIFFICULTY), copied so this script does not
# depend on the lab driver's layout.
LAB_DIFFICULTY = "ops=3,digits=1,distractors=1"
LAB_RL = {"group_size": 8, "learning_rate": 1e-5, "temperature": 1.0, "max_new_tokens": 64, "seed": 0,
          "limit": 2000}
# "old_logps" (a separate pi_old pass for inner_epochs > 1) is timed no more; rows measured before keep it
PARTS = ("rollout", "reward", "reference", "old_logps", "forward", "backward", "optimizer", "metrics", "sync")
VARIANTS = {"before": {"trim_logits": False, "skip_inert_groups": False},
            "after": {"trim_logits": True, "skip_inert_groups": False},
            "after+skip": {"trim_logits": True, "skip_inert_groups": True},
            "after+skip+bf16": {"trim_logits": True, "skip_inert_groups": True, "bf16": True},
            "after+skip+bf16+vllm-bf16": {"trim_logits": True, "skip_inert_groups": True, "bf16": True,
                                          "vllm_dtype": "auto"}}


class StepTimer:
    """``timer(name)`` context manager that adds the wall seconds spent inside it to ``self.parts[name]``."""

    def __init__(self):
        self.parts: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] += time.perf_counter() - t


def summarise(rows: list[dict], warmup: int) -> list[dict]:
    """Mean seconds per part and per step over the measured (post-warm-up) steps of each (config, variant)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r["index"] >= warmup:
            groups[(r["objective"], r["prompts_per_step"], r["variant"])].append(r)
    table = []
    for (objective, pps, variant), rs in groups.items():
        parts = {p: statistics.mean(r["parts"].get(p, 0.0) for r in rs) for p in PARTS}
        total = statistics.mean(r["total_s"] for r in rs)
        table.append({"objective": objective, "prompts_per_step": pps, "variant": variant, "steps": len(rs),
                      "total_s": total, "total_sd": statistics.stdev(r["total_s"] for r in rs) if len(rs) > 1 else 0.0,
                      "parts_s": parts, "shares": {p: v / total for p, v in parts.items()},
                      "completion_len": statistics.mean(r["completion_len"] for r in rs),
                      "load1": [r["load1"] for r in rs]})
    return table


def markdown(table: list[dict], evals: list[dict], command: str) -> str:
    shown = [p for p in PARTS if any(t["parts_s"][p] > 0.005 for t in table)]
    lines = ["| objective | prompts x G | variant | steps | step s (sd) | " + " | ".join(shown)
             + " | mean tokens | load avg (1 min) |",
             "|---" * (7 + len(shown)) + "|"]
    for t in table:
        cells = [f"{t['parts_s'][p]:.2f} ({100 * t['shares'][p]:.0f}%)" for p in shown]
        lines.append(f"| {t['objective']} | {t['prompts_per_step']} x 8 | {t['variant']} | {t['steps']} | "
                     f"{t['total_s']:.1f} ({t['total_sd']:.1f}) | " + " | ".join(cells)
                     + f" | {t['completion_len']:.1f} | {', '.join(f'{x:.1f}' for x in t['load1'])} |")
    for e in evals:
        lines.append(f"\ndev evaluation, {e['questions']} questions x {e['samples']} samples"
                     f"{' (sampler ' + e['vllm_dtype'] + ')' if e.get('vllm_dtype') else ''}: {e['eval_s']:.1f} s "
                     f"(load {e['load1']:.1f})")
    lines.append(f"\nCommand: `{command}`")
    return "\n".join(lines) + "\n"


def target_run_estimate(trainer: dict, vllm_8x8: dict, *, uniform_share: float, eval_s: float, steps: int = 100,
                        evals: int = 11, startup_s: float = 300.0, groups: int = 8) -> dict:
    """Wall seconds of issue T's run (``groups`` prompts x 8 per step, ``steps`` steps, ``evals`` dev
    evaluations) before and after, composed from measured parts.

    ``trainer``: the ``1x8_transformers`` table rows by (objective, variant) (one group per step, the trainer
    parts); ``vllm_8x8``: the 8 x 8 vLLM step row (rollout and sync of 64 samples). The trainer loop runs
    group by group, so a step's forward + backward is ``groups`` times one group's. ``skip_inert_groups``
    replaces a uniform group's forward + backward by a no-grad forward (CAPO's ``reference`` part, the same
    rows) for ``uniform_share`` of the groups."""
    out = {}
    for objective in ("grpo", "capo"):
        before, after = trainer[(objective, "before")]["parts_s"], trainer[(objective, "after")]["parts_s"]
        no_grad = trainer[("capo", "after")]["parts_s"]["reference"]
        fb_before, fb_after = before["forward"] + before["backward"], after["forward"] + after["backward"]
        fb_skip = (1 - uniform_share) * fb_after + uniform_share * no_grad
        fixed = vllm_8x8["rollout"] + vllm_8x8["sync"] + vllm_8x8.get("reward", 0.0)
        row = {}
        for name, fb, ref, opt in (("before", fb_before, before["reference"], before["optimizer"]),
                                   ("after", fb_after, after["reference"], after["optimizer"]),
                                   ("after+skip", fb_skip, after["reference"], after["optimizer"])):
            step = fixed + groups * (fb + ref) + opt
            row[name] = {"step_s": step, "run_s": startup_s + steps * step + evals * eval_s}
        out[objective] = row
    return {"inputs": {"uniform_share": uniform_share, "eval_s": eval_s, "steps": steps, "evals": evals,
                       "startup_s": startup_s, "groups": groups, "vllm_8x8": vllm_8x8}, "estimate": out}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="embedded", help="checkpoint directory or 'embedded' (default)")
    p.add_argument("--objectives", nargs="+", default=["grpo", "capo"])
    p.add_argument("--prompts-per-step", nargs="+", type=int, default=[1, 8])
    p.add_argument("--variants", nargs="+", default=["before", "after"], choices=list(VARIANTS))
    p.add_argument("--warmup", type=int, default=1, help="steps per variant not averaged")
    p.add_argument("--steps", type=int, default=3, help="measured steps per variant")
    p.add_argument("--eval-limit", nargs="*", type=int, default=[64], help="dev questions of each timed evaluation")
    p.add_argument("--eval-samples", type=int, default=8)
    p.add_argument("--rollout-engine", default="vllm")
    p.add_argument("--out", default="results/lab/rl_timing")
    p.add_argument("--from-steps", action="store_true",
                   help="only rebuild table.json/table.md from --out's steps.jsonl (e.g. of an interrupted run)")
    args = p.parse_args(argv)
    if args.from_steps:
        out = Path(args.out)
        rows = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines() if line.strip()]
        old = json.loads((out / "table.json").read_text()) if (out / "table.json").exists() else {}
        meta = {**old.get("meta", {}), "rebuilt_from_steps": True}
        table, evals = summarise(rows, args.warmup), old.get("evals", [])
        (out / "table.json").write_text(json.dumps({"meta": meta, "steps": table, "evals": evals}, indent=2) + "\n")
        (out / "table.md").write_text(markdown(table, evals, meta.get("command", "(rebuilt from steps.jsonl)")))
        print(markdown(table, evals, meta.get("command", "")))
        return 0
    command = " ".join(shlex.quote(a) for a in [os.path.basename(sys.executable), "-m", "training.step_timing",
                                                  *(argv if argv is not None else sys.argv[1:])])

    import torch
    from accelerate import Accelerator

    from training import objectives as O
    from training.config import RLArgs
    from training.data import load_gsm8k
    from training.models import load_model_and_tokenizer
    from training.rl import (dev_metrics, grade_rewards, question_order, rl_step, rollout_seed, step_questions,
                             sync_sampler)
    from training.rollout import make_rollout_engine

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "steps.jsonl").write_text("")  # a fresh measurement, not appended to an older one
    accelerator = Accelerator(cpu=True)
    base = RLArgs(model=args.model, rollout_engine=args.rollout_engine, data_path=f"arith:{LAB_DIFFICULTY}@train",
                  **LAB_RL)
    examples = load_gsm8k(base.data_path, limit=base.limit)
    policy, tokenizer = load_model_and_tokenizer(args.model, seed=base.seed)
    import copy

    needs_ref = any(O.OBJECTIVES[o].needs_reference(RLArgs(objective=o).objective_kwargs()) for o in args.objectives)
    ref = copy.deepcopy(policy).eval().requires_grad_(False) if needs_ref else None
    optimizer = torch.optim.AdamW(policy.parameters(), lr=base.learning_rate)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    engines, fresh = {}, {}  # vLLM dtype -> engine, and whether it holds the current weights

    def engine_for(dtype: str):
        if dtype not in engines:
            t = time.perf_counter()
            engines[dtype] = make_rollout_engine(args.rollout_engine, accelerator.unwrap_model(policy), tokenizer,
                                                 seed=base.seed, vllm_dtype=dtype)
            print(f"engine {engines[dtype].kind} ({dtype}) up in {time.perf_counter() - t:.1f} s", flush=True)
        elif not fresh[dtype]:
            sync_sampler(engines[dtype], policy, accelerator)  # catch up, outside the timed parts
        fresh[dtype] = True
        return engines[dtype]

    engine = engine_for("weights")
    order = question_order(len(examples), base.seed)
    rows, evals, step_no = [], [], 0
    try:
        for objective in args.objectives:
            for pps in args.prompts_per_step:
                run = RLArgs(**{**base.__dict__, "objective": objective, "prompts_per_step": pps})
                uses_ref = O.OBJECTIVES[objective].needs_reference(run.objective_kwargs())
                for index in range(args.warmup + args.steps):
                    for variant in args.variants:  # interleaved: A B A B ...
                        batch = [examples[i] for i in step_questions(order, step_no, 0, 1, pps)]
                        timer, load1 = StepTimer(), os.getloadavg()[0]
                        opts = dict(VARIANTS[variant])
                        engine = engine_for(opts.pop("vllm_dtype", "weights"))  # start / catch-up: not timed
                        t0 = time.perf_counter()
                        cast = (torch.autocast("cpu", dtype=torch.bfloat16) if opts.pop("bf16", False)
                                else contextlib.nullcontext())
                        with cast:
                            m = rl_step(policy, ref if uses_ref else None, optimizer, tokenizer, batch, run,
                                        grade_rewards, engine, accelerator, seed=rollout_seed(base.seed, step_no, 0),
                                        timer=timer, **opts)
                        with timer("sync"):
                            sync_sampler(engine, policy, accelerator)
                        fresh.update({d: e is engine for d, e in engines.items()})
                        row = {"objective": objective, "prompts_per_step": pps, "variant": variant, "index": index,
                               "step": step_no, "total_s": time.perf_counter() - t0, "parts": dict(timer.parts),
                               "load1": load1, "completion_len": m["completion_len"], "loss": m.get("loss"),
                               "reward": m["reward"], "sampler_logp_gap": m["sampler_logp_gap"]}
                        rows.append(row)
                        step_no += 1
                        print(json.dumps(row), flush=True)
                        with open(out / "steps.jsonl", "a") as f:
                            f.write(json.dumps(row) + "\n")
        for limit in args.eval_limit:
            dev = load_gsm8k(f"arith:{LAB_DIFFICULTY}@dev", limit=limit)
            run = RLArgs(**{**base.__dict__, "eval_samples": args.eval_samples})
            for dtype in list(engines):  # each sampler the variants used, on the same weights
                e = engine_for(dtype)
                load1, t = os.getloadavg()[0], time.perf_counter()
                metrics = dev_metrics(e, tokenizer, dev, run, seed=base.seed + 7919)
                evals.append({"questions": limit, "samples": args.eval_samples, "eval_s": time.perf_counter() - t,
                              "load1": load1, "dev_accuracy": metrics["dev_accuracy"], "vllm_dtype": dtype})
                print(json.dumps(evals[-1]), flush=True)
    finally:
        for e in engines.values():
            e.close()
    table = summarise(rows, args.warmup)
    meta = {"command": command, "model": args.model, "lab_rl": LAB_RL, "difficulty": LAB_DIFFICULTY,
            "affinity": sorted(os.sched_getaffinity(0)), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "torch_threads": torch.get_num_threads(), "cpu_bf16": "avx512_bf16" in open("/proc/cpuinfo").read(),
            "cpu_amx": "amx_bf16" in open("/proc/cpuinfo").read(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (out / "table.json").write_text(json.dumps({"meta": meta, "steps": table, "evals": evals}, indent=2) + "\n")
    (out / "table.md").write_text(markdown(table, evals, command))
    print(markdown(table, evals, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
