"""Every training hyper-parameter, with its help text, in one place.

Each dataclass is one ``cat-train`` subcommand; ``cli.py`` turns the fields into flags
(``--group-size``, ...) using ``metadata["help"]``. Objective hyper-parameters carry the same names
as the keyword arguments of ``training.objectives`` so trainers forward them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from training.objectives import OBJECTIVES


def _f(default, help: str, **kw):
    """A dataclass field with help text (tuples/lists go through default_factory)."""
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: default, metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class CommonArgs:
    model: str = _f("tiny", "HF model directory, 'embedded' for the packaged SmolLM2-135M-Instruct (converted "
                            "once to an fp32 checkpoint by cat_serve.models), or 'tiny' for a 2-layer Llama "
                            "built in-process (with the embedded SmolLM2 tokenizer) for smoke tests.")
    tokenizer: str | None = _f(None, "Tokenizer directory (default: the model's, or the embedded one for 'tiny').")
    output_dir: str = _f("checkpoints/run", "Checkpoint directory, written atomically (temp dir + rename).")
    data_path: str | None = _f(None, "GSM8K-style JSONL (question, answer), or an arith spec such as "
                                     "'arith:ops=3,digits=2@train' (eval.arith; generated from its seed). "
                                     "Default <data_dir>/gsm8k_train.jsonl.")
    data_dir: str | None = _f(None, "Dataset folder; default $CAT_SERVE_DATA or ../shared/data from the repo root.")
    limit: int | None = _f(None, "Use only the first N questions (after --max-solution-steps).")
    max_solution_steps: int | None = _f(None, "Keep only questions whose reference solution has at most this "
                                              "many steps (lines before '####'): an easier GSM8K subset.")
    max_steps: int = _f(10, "Optimiser steps in all, a resumed run's included (CASPO: per round).")
    learning_rate: float = _f(1e-6, "AdamW learning rate.")
    seed: int = _f(0, "Seed for sampling, data order and the tiny model's init.")
    resume: bool = _f(False, "Continue from the checkpoint in output_dir if it holds one: the same command "
                             "finishes the run where it stopped, without redoing finished steps.")
    max_new_tokens: int = _f(256, "Max tokens per sampled completion / step.")


@dataclass
class SFTArgs(CommonArgs):
    batch_size: int = _f(4, "Per-device train batch size.")
    max_length: int = _f(512, "Truncate prompt+completion to this many tokens.")
    save_steps: int = _f(50, "Also write the checkpoint (with optimiser, scheduler and data position) every N "
                             "steps, so --resume after a crash redoes at most N-1 steps.")
    lr_scheduler_type: str = _f("linear", "Learning-rate schedule (transformers' names): 'linear' decays to 0 at "
                                          "--max-steps; 'constant_with_warmup' makes a shorter run the exact prefix "
                                          "of a longer one.", choices=("linear", "cosine", "constant",
                                                                         "constant_with_warmup"))
    warmup_steps: int = _f(0, "Linear warm-up steps of the learning rate.")
    gradient_accumulation_steps: int = _f(1, "Micro-batches per optimiser step (effective batch = batch_size * this): "
                                             "the same update with less memory.")
    prompt_style: str = _f("train", "Instruction after each question: 'train' (cat-train's '#### <answer>' line), "
                                    "'eval' (cat-eval's boxed-answer line) or 'both' (alternating by row), so the "
                                    "model answers in one format whichever tool prompts it.",
                           choices=("train", "eval", "both"))


@dataclass
class RLArgs(CommonArgs):
    objective: str = _f("grpo", "Objective in training.objectives.OBJECTIVES.", choices=tuple(OBJECTIVES))
    group_size: int = _f(8, "Completions sampled per prompt (G).")
    prompts_per_step: int = _f(2, "Prompts per optimiser step; the batch is prompts_per_step * group_size.")
    inner_epochs: int = _f(1, "Optimiser updates per sampled batch (mu); >1 makes the ratio/clip matter.")
    temperature: float = _f(1.0, "Sampling temperature of the rollouts.")
    top_p: float = _f(1.0, "Nucleus sampling of the rollouts.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm.")
    save_steps: int = _f(10, "RL: also write the checkpoint every N steps (0: only at the end), so --resume "
                             "after a crash redoes at most N-1 steps.")
    rollout_engine: str = _f("auto", "Group sampling engine: 'vllm' (a vLLM engine colocated with the trainer, "
                             "weights reloaded in place after every step), 'transformers' (HFEngine on the live "
                             "policy: exact entropies, no weight sync), 'trl-server' (TRL's server mode: a running "
                             "`python -m training.vllm_server`, e.g. on other GPUs, weights pushed after every step), "
                             "or 'auto' (vllm when it imports, else transformers).",
                             choices=("auto", "vllm", "transformers", "trl-server"))
    vllm_max_model_len: int = _f(2048, "--rollout-engine vllm: context length of the colocated engine.")
    vllm_enforce_eager: bool = _f(False, "--rollout-engine vllm: run the colocated engine eagerly (vLLM's "
                                  "enforce_eager: no compile at start-up, a little slower sampling).")
    vllm_dtype: str = _f("weights", "--rollout-engine vllm: the colocated engine's dtype: 'weights' (the policy's own, "
                         "float32 on a CPU), 'auto' (cat-serve's rule: bfloat16 on a GPU or a CPU with native bf16, "
                         "AVX512-BF16/AMX; else float32) or a dtype name. The trainer's log-probs stay its own.")
    mixed_precision: str = _f("auto", "Autocast of the trainer's forward/backward over fp32 weights: 'auto' (bf16 on a "
                              "GPU that has it, else none), 'native' (also on a CPU with native bf16, AVX512-BF16/AMX: "
                              "2-3x faster there), 'bf16' (always) or 'no'.", choices=("auto", "native", "bf16", "no"))
    vllm_gpu_memory_utilization: float = _f(0.3, "--rollout-engine vllm on a GPU: share of GPU memory vLLM may "
                                            "take (the trainer needs the rest).")
    vllm_host: str = _f("127.0.0.1", "--rollout-engine trl-server: host of the `trl vllm-serve` server.")
    vllm_port: int = _f(8000, "--rollout-engine trl-server: HTTP port of the server.")
    vllm_group_port: int = _f(51216, "--rollout-engine trl-server: NCCL weight-update group port.")
    vllm_timeout: float = _f(240.0, "--rollout-engine trl-server: seconds to wait for the server to come up.")
    vllm_weight_sync: str = _f("auto", "--rollout-engine trl-server: how the weights reach the server: 'nccl' "
                               "(TRL's broadcast; CUDA on both sides), 'reload' (safetensors in --vllm-sync-dir, "
                               "reloaded by the server; any machine) or 'auto' (nccl with CUDA, else reload).",
                               choices=("auto", "nccl", "reload"))
    vllm_sync_dir: str | None = _f(None, "--vllm-weight-sync reload: a directory both trainer and server can read "
                                         "(default: a private one in /dev/shm, for a server on the same machine).")
    eval_data_path: str | None = _f(None, "Fixed dev set for periodic evaluation (a JSONL path or an arith spec, e.g. "
                                          "'arith:ops=3,digits=2@dev'); None: no evaluation.")
    eval_limit: int = _f(32, "Dev questions evaluated (the first N of --eval-data-path).")
    eval_samples: int = _f(8, "Samples per dev question (n of AUC-mean).")
    eval_every: int = _f(10, "Evaluate on the dev set before step 1 and every N steps (and after the last).")
    # objective hyper-parameters (None: the objective's own default)
    epsilon: float | None = _f(None, "Clip range (low side). Default 0.2 token-level, 3e-4 GSPO/C2GSPG.")
    epsilon_high: float | None = _f(None, "Clip range high side (GRPO/GSPO/C2GSPG). Default epsilon / 4e-4.")
    beta: float = _f(0.0, "GRPO: weight of the k3 KL to the reference (0 = no KL, no ref forward).")
    aggregation: str = _f("sequence", "GRPO/CAPO loss aggregation: 'sequence' (GRPO eq. 3) or 'token' (DAPO).",
                          choices=("sequence", "token"))
    tau: float = _f(0.6, "CAPO: temperature of the logistic pair surrogate.")
    ref_low: float = _f(1.05, "CAPO: drop incorrect samples whose reference perplexity is below this.")
    ref_high: float = _f(2.5, "CAPO: drop correct samples whose reference perplexity is above this.")
    normalise: str = _f("pairs", "CAPO: divide advantages by the number of pairs ('pairs') or not ('none').",
                        choices=("pairs", "none"))
    lam: float = _f(0.1, "C2GSPG: weight of the confidence-calibration BCE.")
    kappa: float = _f(2.0, "C2GSPG: slope of sigmoid(kappa*A) targets for non-binary rewards.")

    def objective_kwargs(self) -> dict:
        """Keyword hyper-parameters for ``OBJECTIVES[self.objective]``."""
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}")
        # the objective's own hyper-parameters that this config sets (None: the objective's default)
        return {name: getattr(self, name) for name in OBJECTIVES[self.objective].hyper_parameters
                if getattr(self, name, None) is not None}


@dataclass
class CASPOArgs(CommonArgs):
    rounds: int = _f(3, "Collect -> DPO rounds; the DPO reference is reset to the latest policy each round.")
    temperatures: tuple[float, ...] = _f((0.7, 1.0, 1.2), "Sampling temperature per round (last one repeats).")
    candidates_per_step: int = _f(4, "Candidate steps sampled per step context (s_j plus competitors).")
    confidence_threshold: float = _f(0.8, "Correct steps with confidence above this yield no pair.")
    beta: float = _f(0.1, "DPO beta.")
    batch_size: int = _f(4, "DPO per-device train batch size.")
    gradient_accumulation_steps: int = _f(1, "DPO micro-batches per optimiser step (effective batch = batch_size * "
                                             "this).")
    rollout_engine: str = _f("transformers", "Step sampler of the collection: 'transformers' (HFEngine on the live "
                             "policy, exact entropies), 'vllm' (a colocated vLLM engine, weights reloaded after each "
                             "round's DPO; every example's j-th context in one batch; s_j's entropy confidence from "
                             "one exact policy forward) or 'auto' (vllm when it imports).",
                             choices=("auto", "vllm", "transformers"))
    vllm_dtype: str = _f("weights", "--rollout-engine vllm: the engine's dtype ('weights', 'auto' or a dtype name; "
                         "see cat-train rl).")
    vllm_max_model_len: int = _f(1024, "--rollout-engine vllm: context length of the colocated engine.")
    max_step_tokens: int = _f(64, "Max tokens of one sampled step (cut at the first newline).")
    judge: str = _f("exact", "Step judge: 'exact' (GSM8K calculator notes; the gold answer for the last step), "
                             "'critic' (a chat model behind an OpenAI-compatible endpoint, --critic-base-url) or "
                             "'arith' (eval.arith's exact critic, for arith data: judged from the model's own state).",
                    choices=("exact", "critic", "arith"))
    contexts: str = _f("reference", "Step contexts q_j: 'reference' (teacher-forced: the reference steps before j; "
                                    "a deviation from the paper's Eq. 1) or 'on_policy' (the model's own earlier "
                                    "steps s_1..s_{j-1}, as in Eq. 1; needs --judge arith, whose critic gives the "
                                    "correct step from any state).", choices=("reference", "on_policy"))
    mixed_precision: str = _f("auto", "DPO's autocast over fp32 weights (TRL's bf16): 'auto' (bf16 on a GPU that has "
                              "it, else none), 'native' (also on a CPU with native bf16, AVX512-BF16/AMX), 'bf16' or "
                              "'no'. The collection's exact confidences stay float32.",
                              choices=("auto", "native", "bf16", "no"))
    first_round_from: str | None = _f(None, "A CASPO checkpoint directory whose round-0 pairs this run takes instead "
                                      "of collecting them: a learning-rate sweep collects round 0 once (its "
                                      "training_args must match this run's on the start model, data, seed and every "
                                      "collection setting; round 0 samples from the start model, so its pairs do "
                                      "not depend on the learning rate).")
    critic_base_url: str = _f("http://127.0.0.1:8000/v1", "--judge critic: the endpoint's base URL.")
    critic_model: str = _f("default", "--judge critic: model name sent to the endpoint.")
    critic_api_key: str = _f("EMPTY", "--judge critic: API key sent to the endpoint.")


def field_help(cls) -> dict[str, str]:
    """name -> help text of a config dataclass (for docs and the CLI)."""
    return {f.name: f.metadata.get("help", "") for f in fields(cls)}
