"""The lab's fixed recipes: every setting an experiment runs with, and where its outputs live.

    python -m lab.recipe sft       # train (or resume, or skip when cached) the SFT checkpoint
    python -m lab.recipe path      # print the cached SFT checkpoint's path (make serve MODEL=$(...))
    python -m lab.recipe search --split dev|test [--k 4 8] [--limit N]   # serve it, run lab.search

This package holds the recipes (constants, and the cache paths derived from them) and nothing that runs;
one small driver per experiment does the running (``sft``, ``calibrate``, ``search``, ``rl``, ``caspo``,
``transfer``; ``runs`` has what they share: child processes, a served checkpoint, segment records), and
``cli`` is the command line above (``__main__``). Modules that only need a setting (``lab.search``,
``lab.calib_check``) import it from here and never a driver, so no import goes in a circle.

The SFT checkpoint lives in ``$CAT_SERVE_CACHE`` (default ``~/.cache/cat-serve``) under
``lab/sft-<hash of the recipe>``, so a changed recipe never reuses a stale checkpoint. Its training
runs through ``cat-train sft --resume``: an interrupted run continues from its last checkpoint
(every ``save_steps``). Wall and CPU seconds of every training segment are appended to
``results/lab/sft/segments.jsonl``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from training.objectives import OBJECTIVES as OBJECTIVE_REGISTRY

REPO = Path(__file__).resolve().parents[2]


def results_root() -> Path:
    """``results/lab/``, or ``$LAB_RESULTS`` (tests and smoke runs point it elsewhere)."""
    return Path(os.environ.get("LAB_RESULTS", REPO / "results" / "lab"))


def cache_root() -> Path:
    return Path(os.environ.get("CAT_SERVE_CACHE", Path.home() / ".cache" / "cat-serve")) / "lab"


# Training mixture: five difficulties interleaved, so the model sees every one from the first batch on.
# The evaluation difficulty (LAB_DIFFICULTY) is chosen afterwards on the dev split.
SFT_MIX = ("arith:ops=2,digits=1|arith:ops=2,digits=2,distractors=1|arith:ops=3,digits=1,distractors=1"
           "|arith:ops=3,digits=2|arith:ops=4,digits=2,distractors=1")
SFT_RECIPE = {
    "model": "embedded", "data_path": SFT_MIX, "limit": 4000, "max_steps": 45, "batch_size": 8, "gradient_accumulation_steps": 2,
    "learning_rate": 2e-4, "lr_scheduler_type": "constant_with_warmup", "warmup_steps": 10,
    "prompt_style": "both", "max_length": 256, "save_steps": 5, "seed": 0,
}
# chosen on dev (results/lab/sft/dev_difficulty.json); the test split is run once with it
LAB_DIFFICULTY = "ops=3,digits=1,distractors=1"


def recipe_hash(recipe: dict) -> str:
    """Hash of everything but ``max_steps`` and ``save_steps``: with a constant learning rate after warm-up a
    shorter run is the exact prefix of a longer one, so raising ``max_steps`` resumes the cached run."""
    key = {k: v for k, v in recipe.items() if k not in ("max_steps", "save_steps")}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]


def sft_dir(recipe: dict = SFT_RECIPE) -> Path:
    return cache_root() / f"sft-{recipe_hash(recipe)}"


# The lab model's calibration profile (issue #9 item 4): dev items 100.. (lab-search-dev uses dev items 0-99 of the
# same seeded order, lab-search the test split), every sampling strategy at n = 4 (the lab's K), CaT steps = lines
# (DeepConf on all 400 remaining dev items, 133 held out, missed the target too and was not adopted:
# results/lab/calibration/deepconf400/)
CALIBRATE_ARGS = ["--seed", "0", "--offset", "100", "--limit", "300", "--max-tokens", "160", "--concurrency", "16",
                  "--search-params", json.dumps({"cat": {"branches": 4, "step_delimiters": ["\n"]},
                                                 **{s: {"n": 4} for s in ("self_consistency", "ppl_consistency",
                                                                          "rpc", "deepconf")}})]


# The same collection on 1000 dev items of a larger dev set (n=1200: its first 500 are the dev split above, in
# another seeded order), 333 held out: the 300-item profile's verdict turned on the split (python -m
# lab.calib_check). Its profile is written beside the results, not into the checkpoint, so the served profile
# of the search experiments stays the one they ran with. Rows of runs/ whose items recur are reused (same
# collection settings).
LARGE_DATASET = f"arith:{LAB_DIFFICULTY},n=1200@dev"
LARGE_ARGS = [*CALIBRATE_ARGS[:2], "--offset", "0", "--limit", "1000", *CALIBRATE_ARGS[6:]]
# --fresh: the remaining 200 items of LARGE_DATASET, collected the same way into large/fresh/ and scored by the
# large profile's maps (python -m lab.calib_check --large): more held-out items for the same fixed maps
FRESH_ARGS = [*CALIBRATE_ARGS[:2], "--offset", "1000", "--limit", "200", *CALIBRATE_ARGS[6:]]


# RL (issue item 3b): the same seed, steps, group size, prompts and dev set for every objective.
# Measured here (2 cores, a vLLM server beside it): 2 prompts x 8 took 80 s per step and a dev evaluation
# (32 x 8 samples) 204 s, about 70 min per objective; one prompt x 8 per step and an evaluation every 10
# steps halve that. Arith solutions are ~35 tokens, so 64 new tokens cut nothing but runaway samples.
RL_RECIPE = {
    "group_size": 8, "prompts_per_step": 1, "max_steps": 40, "learning_rate": 1e-5, "temperature": 1.0,
    "max_new_tokens": 64, "seed": 0, "save_steps": 5, "limit": 2000,
    "eval_limit": 32, "eval_samples": 8, "eval_every": 10,
}
OBJECTIVES = tuple(OBJECTIVE_REGISTRY)  # every objective of training.objectives, in its order

# RL at issue 21's size (make lab-rl800): >= 800 distinct train prompts per objective (8 prompts x G 8 x 100 steps),
# dev curves every 10 steps on 64 questions x 8 samples, seeds 0 and 1 for GRPO and CAPO. The trainer autocasts to
# bf16 and the sampler runs in bf16 where the CPU has native bf16 (results/lab/rl_timing/sft_8x8_bf16: ~1.6x per
# step here); elsewhere both stay fp32. GSPO takes 2 optimiser updates per batch, so its ratio is not 1 and it is
# not GRPO under another name.
RL800_RECIPE = {**RL_RECIPE, "prompts_per_step": 8, "max_steps": 100, "eval_limit": 64, "eval_every": 10,
                "mixed_precision": "native", "vllm_dtype": "auto"}
RL800_BY_OBJECTIVE = {"gspo": {"inner_epochs": 2}}
RL800_SEEDS = (0, 1)


def rl800_recipe(objective: str, seed: int = 0) -> dict:
    return {**RL800_RECIPE, **RL800_BY_OBJECTIVE.get(objective, {}), "seed": seed}


def rl_dir(objective: str, recipe: dict = RL_RECIPE) -> Path:
    return cache_root() / f"rl-{objective}-{recipe_hash({**recipe, 'sft': recipe_hash(SFT_RECIPE)})}"


# CASPO (issue item 3c): two rounds from SFT, on-policy contexts (Eq. 1), the exact arith critic as judge
CASPO_RECIPE = {"rounds": 2, "limit": 64, "max_steps": 20, "candidates_per_step": 4, "learning_rate": 1e-5,
                "max_step_tokens": 32, "seed": 0}


# CASPO at issue 21's size (make lab-caspo1k): >= 1,000 pairs. The 64-problem recipe gave 41 + 67 pairs
# (results/lab/caspo/train), ~1.7 per problem over its two rounds, so 704 train problems (11 batches of 64) aim at
# ~1,200. The collection samples through a colocated vLLM engine (every example's j-th context in one batch) in bf16
# where the CPU has it natively; DPO at an effective batch of 32 (8 x 4 accumulated), 16 steps per round (about one
# pass over a round's pairs), under bf16 autocast where the CPU has it natively (in float32 a step took 178 s here).
# The learning rate is chosen on dev step ECE among CASPO1K_LRS, then test runs once.
CASPO1K_RECIPE = {**CASPO_RECIPE, "limit": 704, "max_steps": 16, "batch_size": 8, "gradient_accumulation_steps": 4,
                  "rollout_engine": "vllm", "vllm_dtype": "auto", "mixed_precision": "native"}
CASPO1K_LRS = (5e-7, 2e-6, 1e-5)
CASPO1K_EVAL = {"dev": 64, "test": 200}  # questions of lab.steps per split (dev: per learning rate)


def caspo_dir(recipe: dict = CASPO_RECIPE) -> Path:
    """The run's cache folder. ``first_round_from`` is not part of the name: where round 0's pairs came from (this
    run's collection, or another run's with the same collection settings) is provenance, kept in the run's
    metrics (``pairs_from``)."""
    key = {k: v for k, v in recipe.items() if k != "first_round_from"}
    return cache_root() / f"caspo-{recipe_hash({**key, 'sft': recipe_hash(SFT_RECIPE)})}"


# PC@K and CaT in the product's mode (stream, with the dev sweep's settings): ~20 min per model here. The
# faithful mode (~100 s an item) and adaptive would make it ~4 h for three models.
TRANSFER_STRATEGIES = ("PC", "CaT-stream")


# GRPO: the control, RL's accuracy without CAPO's (or C²GSPG's) calibration term; GSPO and C²GSPG only at RL-800
TRANSFER_MODELS = ("sft", "caspo", "capo", "grpo", "gspo", "c2gspg")


RUN_LAST = ("CaT-faithful",)  # one engine call per step and branch: the slowest by far (~100 s an item at K=4)

SEARCH_CONCURRENCY = 8  # requests in flight: the same for every strategy, so latencies compare
# The dev sweep of CaT's settings (make lab-search-dev): confident_threshold at these quantiles of the profile's
# step confidences (the share of steps that branch), stream with its trunk sampled or greedy (trunk_temperature
# 0), and adaptive with beam 1 at the 10 % quantile. TOKEN_TARGET is the product's cost target (x SC@K's tokens).
SWEEP_RATES = (0.1, 0.25)
TOKEN_TARGET = 0.35


# `make lab-all`: the whole lab in order (issue #10's "<= 4 h in total"), every step resuming; the settings the
# test split runs with are chosen by the dev sweep before it. lab-calibrate-large is issue #9's check, not here.
ALL_STEPS = (["sft"], ["calibrate"], ["search", "--split", "dev", "--k", "4", "--limit", "100"],
             ["search", "--split", "test", "--k", "4", "8", "--limit", "300"],
             *(["rl", "--objective", o] for o in OBJECTIVES), ["caspo", "--split", "dev"], ["caspo", "--split", "test"],
             ["transfer", "--split", "test", "--k", "4", "--limit", "300"])

