"""Supervised fine-tuning on GSM8K reference solutions: a thin use of TRL's ``SFTTrainer``.

Rows become conversational prompt/completion pairs (the chat template is applied by TRL and the
loss covers the completion only). The answer is the reference solution with its calculator notes
removed and the ``#### x`` line kept, so the model learns the format ``grade`` reads.

Checkpoints and ``--resume`` use the Trainer's own machinery. The Trainer saves every ``save_steps``
steps and at the end into a scratch directory; ``PublishCheckpoint`` then writes our checkpoint
(``training.checkpoint``: atomic, with ``metrics.jsonl``) from the Trainer's checkpoint: its weights
(gathered by the Trainer when sharded), tokenizer and resume files (optimiser, scheduler, RNG and
``trainer_state.json``). The checkpoint directory is then also a Trainer checkpoint, so
``trainer.train(resume_from_checkpoint=output_dir)`` restores the optimiser and scheduler and skips the
batches already trained on. ``--max-steps`` counts all steps,
so re-running the same command with ``--resume`` finishes the run.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from datasets import Dataset
from transformers import TrainerCallback

from cat_serve.prompts import EVAL_SUFFIX, TRAIN_SUFFIX
from training.checkpoint import is_checkpoint, read_state, save_checkpoint
from training.config import SFTArgs
from training.data import GSM8KExample, load_gsm8k
from training.models import load_model_and_tokenizer, trainer_precision_kwargs

# what Trainer.train(resume_from_checkpoint=...) reads besides the weights
TRAINER_RESUME_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth")


def sft_row(ex: GSM8KExample, suffix: str = TRAIN_SUFFIX) -> dict:
    answer = "\n".join(ex.clean_steps) + f"\n#### {ex.gold}"
    return {
        "prompt": [{"role": "user", "content": ex.question + suffix}],
        "completion": [{"role": "assistant", "content": answer}],
    }


def prompt_suffix(style: str, i: int) -> str:
    """The instruction of row ``i``: cat-train's, cat-eval's, or alternating between them."""
    if style == "train" or (style == "both" and i % 2 == 0):
        return TRAIN_SUFFIX
    if style in ("eval", "both"):
        return EVAL_SUFFIX
    raise ValueError(f"unknown prompt style {style!r}")


def sft_dataset(examples: list[GSM8KExample], style: str = "train") -> Dataset:
    return Dataset.from_list([sft_row(ex, prompt_suffix(style, i)) for i, ex in enumerate(examples)])


def loss_rows(log_history: list[dict]) -> list[dict]:
    """The Trainer's per-step training logs (it also logs a run summary without ``loss``)."""
    return [row for row in log_history if "loss" in row]


class PublishCheckpoint(TrainerCallback):
    """After each Trainer save: our atomic checkpoint, made of the Trainer's saved checkpoint (weights as
    the Trainer gathered them, tokenizer, resume files) plus our args, metrics and state."""

    def __init__(self, sft_args: SFTArgs):
        self.sft_args = sft_args

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        saved = Path(args.output_dir) / f"checkpoint-{state.global_step}"

        def copy_trainer_checkpoint(tmp: Path) -> None:
            shutil.copytree(saved, tmp, dirs_exist_ok=True)

        save_checkpoint(self.sft_args.output_dir, None, None, args=self.sft_args,
                        metrics=loss_rows(state.log_history), state={"step": state.global_step},
                        extra=copy_trainer_checkpoint)


def train_sft(args: SFTArgs, *, examples: list[GSM8KExample] | None = None):
    from trl import SFTConfig, SFTTrainer

    examples = examples or load_gsm8k(args.data_path, data_dir=args.data_dir, limit=args.limit,
                                      max_solution_steps=args.max_solution_steps)
    resume = args.resume and is_checkpoint(args.output_dir)
    if resume and not (Path(args.output_dir) / TRAINER_RESUME_FILES[0]).exists():
        raise ValueError(f"{args.output_dir} holds no SFT trainer state ({TRAINER_RESUME_FILES[0]}), so --resume "
                         "cannot continue it; start a new run from its weights with --model "
                         f"{args.output_dir} --output-dir <another dir>")
    done = read_state(args.output_dir)["step"] if resume else 0
    if done >= args.max_steps:
        print(f"{args.output_dir} is already at step {done} (--max-steps {args.max_steps}); nothing to do")
        return Path(args.output_dir).resolve()
    model, tokenizer = load_model_and_tokenizer(args.output_dir if resume else args.model, args.tokenizer,
                                                seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="cat-sft-") as work:
        config = SFTConfig(
            output_dir=work, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
            learning_rate=args.learning_rate, max_length=args.max_length, seed=args.seed,
            lr_scheduler_type=args.lr_scheduler_type, warmup_steps=args.warmup_steps,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            logging_steps=1, save_strategy="steps", save_steps=args.save_steps, save_total_limit=1,
            report_to="none", dataloader_num_workers=0, **trainer_precision_kwargs(),
        )
        trainer = SFTTrainer(model=model, args=config, train_dataset=sft_dataset(examples, args.prompt_style),
                             processing_class=tokenizer, callbacks=[PublishCheckpoint(args)])
        trainer.train(resume_from_checkpoint=str(Path(args.output_dir).resolve()) if resume else None)
    return Path(args.output_dir).resolve()
