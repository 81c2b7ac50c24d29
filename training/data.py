"""GSM8K data for training: loading, reference steps, exact checks of calculator notes.

GSM8K reference answers look like::

    Natalia sold 48/2 = <<48/2=24>>24 clips in May.
    Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.
    #### 72

Each line is one reasoning *step*; a ``<<expr=value>>`` calculator note makes its arithmetic
checkable; ``#### x`` is the gold final answer. Arithmetic is evaluated exactly with
``fractions.Fraction`` through a tiny AST walker that accepts numbers, + - * / (also x, ×, ÷) and
parentheses only -- never ``eval``.

Paths: nothing is downloaded. ``data_dir`` defaults to ``$CAT_SERVE_DATA`` or ``../shared/data``
relative to the repository root, and every loader takes an explicit path too.
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from cat_serve.files import default_data_dir, read_jsonl

CALC_NOTE = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
FINAL_MARK = "####"
# an inline "expression = number" in free text, e.g. "0.2 x 50 = $10" (for model-written steps)
INLINE_EQUATION = re.compile(r"([0-9.,$()\s+\-*/×÷x]+)=\s*\$?\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?)")


@dataclass(frozen=True)
class GSM8KExample:
    question: str
    answer: str  # the full reference solution, notes and "#### x" included
    steps: tuple[str, ...]  # reference steps (lines before "####"), notes kept
    gold: str  # gold final answer, commas removed

    @property
    def clean_steps(self) -> tuple[str, ...]:
        """Reference steps without calculator notes: what a model is expected to write."""
        return tuple(strip_calc_notes(s) for s in self.steps)


def gsm8k_path(split: str = "train", data_dir: str | os.PathLike | None = None) -> Path:
    return Path(data_dir or default_data_dir()) / f"gsm8k_{split}.jsonl"


def load_gsm8k(
    path: str | os.PathLike | None = None,
    *,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    max_solution_steps: int | None = None,
) -> list[GSM8KExample]:
    """Load GSM8K rows (``question``, ``answer``) from ``path`` or ``<data_dir>/gsm8k_<split>.jsonl``,
    keeping only those whose reference solution has at most ``max_solution_steps`` steps (lines).

    ``path`` may also be an ``arith`` spec (``arith:ops=3,digits=2@train``, see ``eval.arith``; the split
    defaults to ``train`` here): the problems are generated from their seed, nothing is read."""
    if path is not None and str(path).startswith("arith"):
        from eval.arith import is_arith

        if is_arith(str(path)):
            return load_arith(str(path), limit=limit, max_solution_steps=max_solution_steps)
    rows = []
    for row in read_jsonl(path or gsm8k_path(split, data_dir)):
        example = parse_example(row["question"], row["answer"])
        if max_solution_steps is not None and len(example.steps) > max_solution_steps:
            continue
        rows.append(example)
        if limit is not None and len(rows) >= limit:
            break
    return rows


def load_arith(spec: str, *, limit: int | None = None, max_solution_steps: int | None = None) -> list[GSM8KExample]:
    """GSM8K-shaped examples of an ``arith`` spec (reference steps ``a op b = c``, ``#### x``); several specs
    joined by ``|`` make a mixture, interleaved one problem of each in turn."""
    from eval.arith import parse_spec

    specs = [parse_spec(part, default_split="train") for part in spec.split("|")]
    if limit is not None:  # draw no more than needed
        per = -(-limit // len(specs))
        specs = [s if s.n is not None else type(s)(config=s.config, split=s.split, n=per, seed=s.seed) for s in specs]
    streams = [s.problems() for s in specs]
    # a mixture ("arith:ops=2|arith:ops=3") interleaves its parts, so any prefix holds all of them
    mixed = [p for group in itertools.zip_longest(*streams) for p in group if p is not None]
    rows = [parse_example(p.question, p.solution) for p in mixed]
    if max_solution_steps is not None:
        rows = [r for r in rows if len(r.steps) <= max_solution_steps]
    return rows[:limit] if limit is not None else rows


def parse_example(question: str, answer: str) -> GSM8KExample:
    return GSM8KExample(question=question, answer=answer, steps=split_steps(answer), gold=gold_answer(answer))


# ----------------------------------------------------------------------------------------------
# steps and answers
# ----------------------------------------------------------------------------------------------


def split_steps(answer: str) -> tuple[str, ...]:
    """Reference solution -> its non-empty lines before ``####`` (stripped)."""
    body = answer.split(FINAL_MARK, 1)[0]
    return tuple(line.strip() for line in body.splitlines() if line.strip())


def gold_answer(answer: str) -> str:
    """The text after ``####`` with thousands separators removed (``"1,234"`` -> ``"1234"``)."""
    if FINAL_MARK not in answer:
        raise ValueError("GSM8K answer without '####'")
    return answer.rsplit(FINAL_MARK, 1)[1].strip().replace(",", "")


def strip_calc_notes(text: str) -> str:
    """Remove ``<<expr=value>>`` notes, keeping the surrounding text."""
    return CALC_NOTE.sub("", text)


# ----------------------------------------------------------------------------------------------
# exact arithmetic
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalcNote:
    expr: str
    value: str


def parse_calc_notes(step: str) -> list[CalcNote]:
    """All ``<<expr=value>>`` notes of a step, in order."""
    return [CalcNote(m.group(1).strip(), m.group(2).strip()) for m in CALC_NOTE.finditer(step)]


def parse_number(text: str) -> Fraction:
    """``"$1,234.50"`` -> Fraction(2469, 2). Raises ValueError on anything that is not a number."""
    cleaned = text.strip().replace(",", "").lstrip("$").rstrip(".")
    return Fraction(cleaned)


def _normalise_expr(expr: str) -> str:
    expr = expr.replace("×", "*").replace("÷", "/").replace("$", "")
    expr = re.sub(r"(?<=\d),(?=\d{3})", "", expr)  # 1,000 -> 1000
    return re.sub(r"(?<=[\d)\s])x(?=[\s\d(])", "*", expr)  # "3 x 4" -> "3 * 4"


_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


def _eval_node(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _eval_node(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Fraction(repr(node.value)) if isinstance(node.value, float) else Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_eval_node(node.left), _eval_node(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval_node(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    raise ValueError(f"unsupported syntax: {ast.dump(node)[:60]}")


def safe_eval(expr: str) -> Fraction:
    """Exactly evaluate + - * / and parentheses over decimal numbers. Raises ValueError otherwise
    (including division by zero and anything else Python would accept, like ``**`` or names)."""
    try:
        tree = ast.parse(_normalise_expr(expr).strip(), mode="eval")
        return _eval_node(tree)
    except (SyntaxError, ZeroDivisionError) as exc:
        raise ValueError(f"cannot evaluate {expr!r}: {exc}") from exc


def check_equation(expr: str, value: str) -> bool | None:
    """True / False when ``expr == value`` exactly; None when either side cannot be parsed."""
    try:
        return safe_eval(expr) == parse_number(value)
    except ValueError:
        return None


def check_calc_notes(step: str) -> bool | None:
    """Check every calculator note of a step exactly.

    False if any note is wrong; True if there is at least one note and all are right; None when the
    step has no note (or none that could be parsed) -- nothing to check.
    """
    results = [check_equation(n.expr, n.value) for n in parse_calc_notes(step)]
    if any(r is False for r in results):
        return False
    return True if any(r is True for r in results) else None


def check_step_arithmetic(step: str) -> bool | None:
    """Calculator notes when the step has them, else inline ``a op b = c`` equations in the text
    (how a model writes). Same True / False / None convention as ``check_calc_notes``."""
    if parse_calc_notes(step):
        return check_calc_notes(step)
    results = []
    for m in INLINE_EQUATION.finditer(step):
        expr = m.group(1).strip().lstrip("x").strip()
        if re.search(r"[+\-*/×÷x]", expr):  # a bare "= 5" restatement is not arithmetic
            results.append(check_equation(expr, m.group(2)))
    if any(r is False for r in results):
        return False
    return True if any(r is True for r in results) else None


def step_results(step: str) -> list[Fraction]:
    """The numeric results a step states (note values, else inline right-hand sides)."""
    notes = parse_calc_notes(step)
    raw = [n.value for n in notes] if notes else [m.group(2) for m in INLINE_EQUATION.finditer(step)]
    out = []
    for value in raw:
        try:
            out.append(parse_number(value))
        except ValueError:
            pass
    return out
