"""Dataset registry: every source becomes a list of ``Item(id, question, gold)``.

Sources
-------
* a built-in name (``gsm8k``, ``math500``, ``multiarith``, ``singleop``, ``aime24``, ``amc23``),
  read from the JSONL files in the data dir (``--data-dir``, else ``$CAT_SERVE_DATA``, else
  ``<repo>/../shared/data``);
* ``singleop_choice``: SingleOp as 4-way multiple choice (gold: a letter), shipped in ``eval/data/``
  and made by ``eval/choice.py``;
* a path to any user JSONL file, with ``question_field`` / ``answer_field`` / ``id_field``
  (defaults ``question`` / ``answer`` / line number);
* ``arith[:ops=3,digits=2,distractors=0,n=1000,seed=0][@test|dev|train]`` — the lab's procedural
  arithmetic task (``eval.arith``), generated from its seed (split ``test`` unless named);
* ``hf:NAME[:CONFIG][@SPLIT]`` — a Hugging Face dataset, only on request and only online;
  ``datasets`` is imported lazily and is never required otherwise.

Subsets are deterministic: ``select_subset`` shuffles the whole list with ``random.Random(seed)``
and takes the first ``limit`` items, so the same seed gives the same items and a larger limit
extends a smaller one (a run with ``--limit 4`` contains the items of ``--limit 2``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cat_serve.files import default_data_dir, read_jsonl



@dataclass(frozen=True)
class Item:
    id: str
    question: str
    gold: str


@dataclass(frozen=True)
class DatasetSpec:
    """How to read one built-in JSONL file."""

    filename: str
    question_field: str
    answer_field: str
    id_field: str | None = None  # None: ids are "<name>-<line index>"
    gold_fn: Callable[[Any], str] | None = None  # raw answer field -> gold string


def format_gold(value: Any) -> str:
    """Raw gold value -> string: ``14.0 -> "14"``, ``141.5 -> "141.5"``, strings stripped."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def gsm8k_gold(answer: str) -> str:
    """GSM8K's gold is the text after ``####``; thousands separators are dropped (``2,125``)."""
    final = answer.rsplit("####", 1)[-1].strip()
    return re.sub(r"(?<=\d),(?=\d{3}\b)", "", final)


def builtin_specs() -> dict[str, DatasetSpec]:
    return {
        "gsm8k": DatasetSpec("gsm8k_test.jsonl", "question", "answer", gold_fn=gsm8k_gold),
        "gsm8k_train": DatasetSpec("gsm8k_train.jsonl", "question", "answer", gold_fn=gsm8k_gold),
        "math500": DatasetSpec("math500_test.jsonl", "problem", "answer", id_field="unique_id"),
        "multiarith": DatasetSpec("multiarith_test.jsonl", "input", "target"),
        "singleop": DatasetSpec("singleop_test.jsonl", "input", "target"),
        "aime24": DatasetSpec("aime24_test.jsonl", "problem", "answer", id_field="id"),
        "amc23": DatasetSpec("amc23_test.jsonl", "problem", "answer", id_field="id"),
    }


def rows_to_items(
    rows: Iterable[dict],
    *,
    prefix: str,
    question_field: str,
    answer_field: str,
    id_field: str | None = None,
    gold_fn: Callable[[Any], str] | None = None,
) -> list[Item]:
    to_gold = gold_fn or format_gold
    items = []
    for i, row in enumerate(rows):
        missing = [f for f in (question_field, answer_field) if f not in row]
        if missing:
            raise KeyError(f"{prefix} row {i} lacks field(s) {missing}; has {sorted(row)}")
        item_id = f"{prefix}-{i}" if id_field is None else str(row[id_field])
        items.append(Item(item_id, str(row[question_field]), to_gold(row[answer_field])))
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{prefix}: ids in field {id_field!r} are not unique")
    return items


def load_hf(spec: str, *, question_field: str, answer_field: str, id_field: str | None) -> list[Item]:
    """``hf:NAME[:CONFIG][@SPLIT]`` (split defaults to ``test``); needs ``datasets`` and a network."""
    try:
        import datasets  # noqa: PLC0415  (optional, only on request)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("hf: datasets need `pip install datasets` and network access") from e
    body = spec[len("hf:"):]
    body, _, split = body.partition("@")
    name, _, config = body.partition(":")
    ds = datasets.load_dataset(name, config or None, split=split or "test")
    return rows_to_items(
        ds, prefix=name.replace("/", "_"), question_field=question_field,
        answer_field=answer_field, id_field=id_field,
    )


def load_items(
    source: str,
    *,
    data_dir: str | Path | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
) -> list[Item]:
    """All items of a built-in name, a JSONL path or an ``hf:`` spec, in file order."""
    specs = builtin_specs()
    if source in specs:
        spec = specs[source]
        path = Path(data_dir) if data_dir is not None else default_data_dir()
        return rows_to_items(
            read_jsonl(path / spec.filename), prefix=source,
            question_field=question_field or spec.question_field,
            answer_field=answer_field or spec.answer_field,
            id_field=id_field or spec.id_field, gold_fn=spec.gold_fn,
        )
    from eval.choice import SHIPPED  # noqa: PLC0415  (datasets shipped in eval/data/)

    if source in SHIPPED:  # e.g. singleop_choice: SingleOp as 4-way multiple choice (eval/choice.py)
        return rows_to_items(read_jsonl(SHIPPED[source]), prefix=source, question_field="question",
                             answer_field="answer", id_field="id")
    q, a = question_field or "question", answer_field or "answer"
    from eval.arith import is_arith  # noqa: PLC0415

    if is_arith(source):
        return arith_items(source)
    if source.startswith("hf:"):
        return load_hf(source, question_field=q, answer_field=a, id_field=id_field)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(
            f"unknown dataset {source!r}: not one of {sorted(specs)}, not a file, not hf:..."
        )
    return rows_to_items(read_jsonl(path), prefix=path.stem, question_field=q, answer_field=a,
                         id_field=id_field)


def arith_items(source: str) -> list[Item]:
    """Items of an ``arith`` spec; ids carry the split and the math hash (``arith-test-<hash12>``)."""
    from eval.arith import parse_spec  # noqa: PLC0415

    spec = parse_spec(source)
    return [Item(f"arith-{spec.split}-{p.math_hash[:12]}", p.question, p.answer) for p in spec.problems()]


def select_subset(items: Sequence[Item], *, limit: int | None, seed: int = 0) -> list[Item]:
    """Deterministic subset: seeded shuffle of all items, then the first ``limit``.

    ``limit=None`` keeps every item in file order.
    """
    if limit is None:
        return list(items)
    order = list(items)
    random.Random(seed).shuffle(order)
    return order[: max(limit, 0)]


def load_dataset(
    source: str,
    *,
    limit: int | None = None,
    seed: int = 0,
    data_dir: str | Path | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
) -> list[Item]:
    items = load_items(source, data_dir=data_dir, question_field=question_field,
                       answer_field=answer_field, id_field=id_field)
    return select_subset(items, limit=limit, seed=seed)
