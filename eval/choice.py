"""``singleop_choice``: SingleOp as 4-way multiple choice, so ``cat-eval`` measures search on an answer
that is a letter, not a number.

Each SingleOp test row (``singleop_test.jsonl`` of the shared data, in file order) becomes one item:
the question, then options A-D (the true answer and three distractors near it), then the line
"Answer with the letter (A, B, C or D) of the correct option."; the gold is the letter. Distractors
of an integer answer v are drawn from v-3..v+3, v+10, v-10, 2v and v//2 (non-negative, not v); of a
decimal answer from v +- 0.5, v +- 1, 2v and v/2. Row i draws its 3 distractors and the order of
the 4 options with ``random.Random(f"{SEED}:{i}")``, so the file is the same on every machine:

    python -m eval.choice            # rewrites eval/data/singleop_choice.jsonl from the shared data

The file is committed (``SHIPPED``); ``eval.datasets`` loads it by name (``--dataset singleop_choice``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from cat_serve.files import default_data_dir, read_jsonl

SOURCE = "singleop_test.jsonl"
SEED = 0
NAME = "singleop_choice"
SHIPPED = {NAME: Path(__file__).resolve().parent / "data" / f"{NAME}.jsonl"}
LETTERS = "ABCD"
INSTRUCTION = "Answer with the letter (A, B, C or D) of the correct option."


def fmt(value: float) -> str:
    """``14.0 -> "14"``, ``1.25 -> "1.25"`` (at most 5 decimals, as the source)."""
    text = f"{round(value, 5):.5f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def distractor_pool(value: float) -> list[float]:
    """Candidate wrong answers near ``value``, sorted, without ``value`` and negatives."""
    if float(value).is_integer():
        v = int(value)
        pool = {v + d for d in (-3, -2, -1, 1, 2, 3, 10, -10)} | {2 * v, v // 2}
    else:
        pool = {value + d for d in (-1.0, -0.5, 0.5, 1.0)} | {2 * value, value / 2}
    return sorted({round(x, 5) for x in pool if x >= 0 and fmt(x) != fmt(value)})


def build_rows(rows: list[dict], seed: int = SEED) -> list[dict]:
    """SingleOp rows ``{"input", "target"}`` -> multiple-choice rows ``{"id", "question", "answer", "value"}``."""
    out = []
    for i, row in enumerate(rows):
        value = float(row["target"])
        rng = random.Random(f"{seed}:{i}")
        options = [fmt(value)] + [fmt(x) for x in rng.sample(distractor_pool(value), 3)]
        rng.shuffle(options)
        lines = [row["input"].strip(), *(f"{letter}) {o}" for letter, o in zip(LETTERS, options)), INSTRUCTION]
        out.append({"id": f"{NAME}-{i}", "question": "\n".join(lines),
                    "answer": LETTERS[options.index(fmt(value))], "value": fmt(value)})
    return out


def write(path: Path = SHIPPED[NAME], data_dir: Path | None = None) -> Path:
    rows = build_rows(read_jsonl((data_dir or default_data_dir()) / SOURCE))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


if __name__ == "__main__":
    print(write())
