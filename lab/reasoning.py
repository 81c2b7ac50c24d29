"""A small reasoning-format model to test reasoning serving on (issue #23 item 3): SmolLM2 taught ``<think>``.

    python -m lab.reasoning sft     # train once (cached), print the checkpoint path (make lab-reasoning-sft)
    python -m lab.reasoning path    # print the cached checkpoint's path (nothing is trained)

The embedded SmolLM2-135M-Instruct is fine-tuned on ``arith`` problems written the way reasoning models
answer (Qwen3 / DeepSeek-R1 style)::

    <think>
    12 + 5 = 17
    17 * 3 = 51
    </think>

    The answer is 51.

The goal is the *format*, not accuracy: a model that reliably thinks inside ``<think>…</think>`` and then
gives a short answer, so that ``cat-serve --reasoning-parser qwen3`` (vLLM's ``qwen3`` parser; its
``deepseek_r1`` parser reads the same format) can be tested on a real checkpoint.

* ``<think>`` and ``</think>`` are added to the vocabulary as single, never-split tokens (embeddings resized).
  They are *not* marked special: vLLM detokenizes with ``skip_special_tokens=True`` by default, which would drop
  special tokens from the text that the parsers read (Qwen3's and DeepSeek-R1's tokenizers add them the same way).
* The chat template (``THINK_TEMPLATE``) is SmolLM2's ChatML plus Qwen3's thinking conventions: an assistant
  message's ``reasoning_content`` (or ``reasoning``) is rendered inside ``<think>…</think>`` before its content;
  the generation prompt opens ``<think>\\n`` itself (as Qwen3-Thinking-2507's and DeepSeek-R1-0528's templates
  do), so the model only has to close it; ``enable_thinking=False`` (a ``chat_template_kwargs`` key) pre-fills
  an empty ``<think>\\n\\n</think>\\n\\n`` so the model answers directly.
* Embeddings are untied and the new rows start where they help a short run most (a first run with tied,
  mean-initialised rows learnt the steps but still ended the turn where ``</think>`` belongs, 40 steps): the
  input rows are the mean of the marker's own text pieces (``</``, ``think``, ``>``), and the output row of
  ``</think>`` is a copy of ``<|im_end|>``'s, so at the end of the steps the model starts out torn between the
  two and the SFT only has to tip it towards ``</think>``.
* Cost (results/lab/reasoning/sft.json): 40 steps of 8 took 961 CPU-seconds on one core (24 s a step; 1,966 s of
  wall time on the shared two-core machine, 1 thread, pinned). Far from the two minutes a test fixture could
  afford, so the vLLM tests skip without the cached checkpoint and name ``make lab-reasoning-sft``.
* The checkpoint is cached under ``$CAT_SERVE_CACHE/lab/reasoning-<hash of the recipe>`` (as ``lab.recipe``'s
  SFT), written atomically; the wall time of each training run is recorded in
  ``results/lab/reasoning/sft.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from lab.recipe import cache_root, results_root

THINK_START, THINK_END = "<think>", "</think>"
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# SmolLM2's ChatML template (its default system prompt kept) with Qwen3's thinking conventions (see the module doc)
THINK_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- if message['role'] == 'assistant' %}"
    "{%- set reasoning = message.get('reasoning_content') or message.get('reasoning') or '' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if reasoning %}{{- '<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' }}{%- endif %}"
    "{{- (message['content'] or '') + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)
# The vLLM reasoning parser that reads this format (qwen3 honours enable_thinking=False; deepseek_r1 works too
# while thinking is on)
REASONING_PARSER = "qwen3"

# Format-only SFT: short 1-digit problems (short sequences train fast); three prompt styles in turn (the bare
# question, cat-train's and cat-eval's instructions) so the format does not hang on one instruction.
REASONING_RECIPE = {
    "model": "embedded", "data": "arith:ops=2,digits=1|arith:ops=3,digits=1|arith:ops=2,digits=2",
    "limit": 1000, "max_steps": 40, "batch_size": 8, "learning_rate": 2e-4, "warmup_steps": 5,
    "max_length": 192, "seed": 0, "template": THINK_TEMPLATE, "answer": "The answer is {answer}.",
}


def recipe_hash(recipe: dict = REASONING_RECIPE) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]


def reasoning_dir(recipe: dict = REASONING_RECIPE) -> Path:
    return cache_root() / f"reasoning-{recipe_hash(recipe)}"


DONE = ".reasoning-complete"


def is_built(path: Path) -> bool:
    return (path / DONE).exists()


def completion_text(steps, answer: str, recipe: dict = REASONING_RECIPE) -> str:
    """The assistant turn the model learns: the steps (one per line) inside <think>, then the short answer."""
    return f"{THINK_START}\n" + "\n".join(steps) + f"\n{THINK_END}\n\n" + recipe["answer"].format(answer=answer)


def training_rows(recipe: dict = REASONING_RECIPE) -> list[dict]:
    """TRL conversational prompt/completion rows (the loss covers the completion only)."""
    from cat_serve.prompts import EVAL_SUFFIX, TRAIN_SUFFIX
    from training.data import load_arith

    suffixes = ("", TRAIN_SUFFIX, EVAL_SUFFIX)
    return [{"prompt": [{"role": "user", "content": ex.question + suffixes[i % len(suffixes)]}],
             "completion": [{"role": "assistant", "content": completion_text(ex.clean_steps, ex.gold, recipe)}]}
            for i, ex in enumerate(load_arith(recipe["data"], limit=recipe["limit"]))]


def add_think_tokens(model, tokenizer) -> None:
    """``<think>``/``</think>`` as single added tokens (not special: see the module doc), embeddings resized and
    untied with the new rows initialised as the module doc says, and the thinking chat template."""
    import torch
    from tokenizers import AddedToken

    markers = (THINK_START, THINK_END)
    pieces = {t: tokenizer.encode(t, add_special_tokens=False) for t in markers}  # before they are tokens
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False, single_word=False) for t in markers])
    model.resize_token_embeddings(len(tokenizer))
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        head = torch.nn.Parameter(emb.detach().clone())  # untie: the output rows get their own values
        for t in markers:
            new = tokenizer.convert_tokens_to_ids(t)
            emb[new] = emb[pieces[t]].mean(0)
            head[new] = emb[new]
        head[tokenizer.convert_tokens_to_ids(THINK_END)] = head[tokenizer.eos_token_id]
    model.config.tie_word_embeddings = False
    if hasattr(model.config, "get_text_config"):
        model.config.get_text_config().tie_word_embeddings = False
    model.lm_head.weight = head
    tokenizer.chat_template = THINK_TEMPLATE


def train(recipe: dict = REASONING_RECIPE, out: Path | None = None) -> Path:
    """Train the checkpoint into a scratch directory beside ``out`` and move it into place when complete."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from training.models import load_model_and_tokenizer, trainer_precision_kwargs

    out = out or reasoning_dir(recipe)
    out.parent.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_model_and_tokenizer(recipe["model"], seed=recipe["seed"])
    add_think_tokens(model, tokenizer)
    with tempfile.TemporaryDirectory(prefix=".reasoning-", dir=out.parent) as work:
        config = SFTConfig(
            output_dir=str(Path(work) / "trainer"), max_steps=recipe["max_steps"],
            per_device_train_batch_size=recipe["batch_size"], learning_rate=recipe["learning_rate"],
            lr_scheduler_type="constant_with_warmup", warmup_steps=recipe["warmup_steps"],
            max_length=recipe["max_length"], seed=recipe["seed"], logging_steps=5, save_strategy="no",
            report_to="none", dataloader_num_workers=0, **trainer_precision_kwargs(),
        )
        trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(training_rows(recipe)),
                             processing_class=tokenizer)
        trainer.train()
        final = Path(work) / "model"
        trainer.model.save_pretrained(final)
        tokenizer.save_pretrained(final)
        losses = [row for row in trainer.state.log_history if "loss" in row]
        (final / "recipe.json").write_text(json.dumps({"recipe": recipe, "hash": recipe_hash(recipe),
                                                       "losses": losses}, indent=1))
        (final / DONE).write_text("")
        if out.exists():
            shutil.rmtree(out)
        final.rename(out)
    return out


def build(recipe: dict = REASONING_RECIPE) -> Path:
    """The cached checkpoint, trained first when missing; a training run appends its time to
    results/lab/reasoning/sft.json."""
    out = reasoning_dir(recipe)
    if is_built(out):
        print(f"cached: {out}")
        return out
    t0, c0 = time.time(), resource.getrusage(resource.RUSAGE_SELF)
    train(recipe, out)
    c1 = resource.getrusage(resource.RUSAGE_SELF)
    row = {"recipe": recipe_hash(recipe), "steps": recipe["max_steps"], "batch_size": recipe["batch_size"],
           "wall_s": round(time.time() - t0, 1),
           "cpu_s": round(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime, 1),
           "cpus_usable": len(os.sched_getaffinity(0)), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
           "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0))}
    dest = results_root() / "reasoning" / "sft.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(dest.read_text())["runs"] if dest.exists() else []
    dest.write_text(json.dumps({"runs": [*runs, row]}, indent=1) + "\n")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("sft", help="train the reasoning-format checkpoint (cached) and print its path")
    sub.add_parser("path", help="print the cached checkpoint's path")
    args = ap.parse_args(argv)
    if args.cmd == "sft":
        print(build())
        return 0
    path = reasoning_dir()
    if not is_built(path):
        print(f"not built yet: {path} (make lab-reasoning-sft)", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
