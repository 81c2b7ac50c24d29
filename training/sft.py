"""Supervised fine-tuning on GSM8K reference solutions: a thin use of TRL's ``SFTTrainer``.

Rows become conversational prompt/completion pairs (the chat template is applied by TRL and the
loss covers the completion only). The answer is the reference solution with its calculator notes
removed and the ``#### x`` line kept, so the model learns the format ``grade`` reads.
TRL's own checkpointing is off; the result goes through ``training.checkpoint`` (atomic, with
``metrics.jsonl`` from the trainer's log history). ``--resume`` starts from the saved weights and
step counter (optimiser state restarts).
"""

from __future__ import annotations

import tempfile

from datasets import Dataset

from training.checkpoint import is_checkpoint, read_metrics, read_state, save_checkpoint
from training.config import SFTArgs
from training.data import GSM8KExample, load_gsm8k
from training.models import load_model_and_tokenizer, trainer_precision_kwargs
from training.rl import PROMPT_SUFFIX


def sft_row(ex: GSM8KExample) -> dict:
    answer = "\n".join(ex.clean_steps) + f"\n#### {ex.gold}"
    return {
        "prompt": [{"role": "user", "content": ex.question + PROMPT_SUFFIX}],
        "completion": [{"role": "assistant", "content": answer}],
    }


def sft_dataset(examples: list[GSM8KExample]) -> Dataset:
    return Dataset.from_list([sft_row(ex) for ex in examples])


def train_sft(args: SFTArgs, *, examples: list[GSM8KExample] | None = None):
    from trl import SFTConfig, SFTTrainer

    examples = examples or load_gsm8k(args.data_path, data_dir=args.data_dir, limit=args.limit,
                                      max_solution_steps=args.max_solution_steps)
    start, history, model_path = 0, [], args.model
    if args.resume and is_checkpoint(args.output_dir):
        start, history, model_path = read_state(args.output_dir)["step"], read_metrics(args.output_dir), args.output_dir
    model, tokenizer = load_model_and_tokenizer(model_path, args.tokenizer, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="cat-sft-") as work:
        config = SFTConfig(
            output_dir=work, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
            learning_rate=args.learning_rate, max_length=args.max_length, seed=args.seed,
            logging_steps=1, save_strategy="no", report_to="none", dataloader_num_workers=0,
            **trainer_precision_kwargs(),
        )
        trainer = SFTTrainer(model=model, args=config, train_dataset=sft_dataset(examples),
                             processing_class=tokenizer)
        trainer.train()
    for row in trainer.state.log_history:
        if "loss" in row:
            history.append({**row, "step": start + int(row["step"])})
    state = {"step": start + args.max_steps}
    return save_checkpoint(args.output_dir, trainer.model, tokenizer, args=args, metrics=history, state=state)
