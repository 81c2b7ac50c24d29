"""``arith``: seeded, procedural multi-step arithmetic word problems with an exact step critic.

A problem is a chain over one running quantity: a start value, then 2-6 operations, each with its own
number from the text (``+ b``, ``- b``, ``* b``, ``/ b`` with exact division). Distractor sentences add
numbers that play no part. The reference solution has one step per line and ends with GSM8K's answer
marker, which ``cat_serve.search.answers`` recognises::

    12 + 5 = 17
    17 * 3 = 51
    #### 51

Knobs (``ArithConfig``): ``ops`` (operations per problem, 2-6), ``digits`` (size of the start value and
of the numbers added or subtracted; factors and divisors are always 2-9), ``distractors`` (irrelevant
sentences).

Splits. Every problem has a *math hash*: a hash of its start value and operation list (names and
sentences excluded, so two wordings of the same arithmetic land in the same split). The hash alone
decides the split (``test``: bucket 0-9 of 100, ``dev``: 10-19, ``train``: 20-99); a split's generator
draws problems from one seeded stream and keeps those whose hash falls in its buckets, skipping
repeats. The splits therefore cannot overlap, whatever the seed.

The critic (``Critic``). Given the reference chain and a *partial solution written by the model*, it
returns the correct next step and judges a candidate step. Decision: **the critic continues from the
model's state** ("local" correctness, the default). The state is the number of operations the model
has done (its lines of the form ``a op b = c``) and the value it last wrote (``c`` of its last step,
even if that ``c`` is wrong). The correct next step applies the problem's next operation to that
value, with exact arithmetic; after the last operation it is the answer line ``#### <value>``. So
after a model-written ``12 * 3 = 35`` the next correct step is ``35 + 5 = 40``: a step is judged on
what it does, not blamed for an earlier error. ``strict=True`` instead also requires every earlier
step to have been correct (a step on a doomed path is then wrong), which equals "the candidate is the
reference step". Lines that are not ``a op b = c`` (prose) do not move the state.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field, replace
from fractions import Fraction

SPLITS = {"test": range(0, 10), "dev": range(10, 20), "train": range(20, 100)}
OPS = ("+", "-", "*", "/")
FINAL = "####"

NAMES = ("Ava", "Ben", "Chloe", "Dan", "Emma", "Finn", "Grace", "Hugo", "Ivy", "Jack", "Kira", "Leo",
         "Mia", "Noah", "Olga", "Paul", "Rosa", "Sam", "Tara", "Umar", "Vera", "Will", "Yara", "Zane")
THINGS = ("apples", "marbles", "stickers", "coins", "books", "pencils", "shells", "cards", "stamps", "beads")
OTHER_THINGS = ("cats", "bikes", "plants", "hats", "cousins", "lamps", "kites", "boots")

TEMPLATES = {
    "+": ("{n} buys {b} more {t}.", "{n} finds {b} more {t}.", "A friend gives {n} {b} {t}."),
    "-": ("{n} gives away {b} {t}.", "{n} loses {b} {t}.", "{n} sells {b} {t}."),
    "*": ("Then {n} ends up with {b} times as many {t} as before.",
          "{n}'s number of {t} grows to {b} times what it was."),
    "/": ("{n} splits the {t} into {b} equal piles and keeps one pile.",
          "{n} shares the {t} equally among {b} friends, keeping one share, so {n} has one share left."),
}
DISTRACTORS = ("{o} is {c} years old.", "{o} has {c} {u}.", "The shop is {c} minutes away.",
               "{o} walked {c} steps yesterday.", "There are {c} {u} in the garden.")


@dataclass(frozen=True)
class ArithConfig:
    ops: int = 3
    digits: int = 2
    distractors: int = 0

    def __post_init__(self):
        if not 2 <= self.ops <= 6:
            raise ValueError(f"arith: ops must be 2-6, got {self.ops}")
        if not 1 <= self.digits <= 4:
            raise ValueError(f"arith: digits must be 1-4, got {self.digits}")
        if not 0 <= self.distractors <= 5:
            raise ValueError(f"arith: distractors must be 0-5, got {self.distractors}")


@dataclass(frozen=True)
class Problem:
    start: int
    ops: tuple[tuple[str, int], ...]
    question: str = field(compare=False)

    @property
    def values(self) -> list[Fraction]:
        """Running value after 0, 1, ... len(ops) operations."""
        out = [Fraction(self.start)]
        for op, b in self.ops:
            out.append(apply(op, out[-1], b))
        return out

    @property
    def answer(self) -> str:
        return fmt(self.values[-1])

    @property
    def steps(self) -> list[str]:
        v = self.values
        return [f"{fmt(v[i])} {op} {b} = {fmt(v[i + 1])}" for i, (op, b) in enumerate(self.ops)]

    @property
    def solution(self) -> str:
        return "\n".join(self.steps) + f"\n{FINAL} {self.answer}"

    @property
    def math_hash(self) -> str:
        key = f"{self.start}|" + "|".join(f"{op}{b}" for op, b in self.ops)
        return hashlib.sha256(key.encode()).hexdigest()


def apply(op: str, a: Fraction, b: int | Fraction) -> Fraction:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return a / b
    raise ValueError(f"unknown operation {op!r}")


def fmt(x: Fraction) -> str:
    """Exact value as text: ``17``, ``-3``, ``2.5``; a non-terminating fraction as ``p/q``."""
    if x.denominator == 1:
        return str(x.numerator)
    d = x.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    if d != 1:
        return f"{x.numerator}/{x.denominator}"
    s = f"{float(x):.10f}".rstrip("0").rstrip(".")
    return s


def bucket(problem: Problem) -> int:
    return int(problem.math_hash[:8], 16) % 100


def split_of(problem: Problem) -> str:
    b = bucket(problem)
    return next(name for name, r in SPLITS.items() if b in r)


def generate_one(rng: random.Random, cfg: ArithConfig) -> Problem:
    """One problem: a chain that never goes negative, divisions exact."""
    lo, hi = (1 if cfg.digits == 1 else 10 ** (cfg.digits - 1)), 10 ** cfg.digits - 1
    start = rng.randint(max(lo, 2), hi)
    v, ops = start, []
    for _ in range(cfg.ops):
        choices = ["+", "*"]
        if v > 1:
            choices.append("-")
        divisors = [d for d in range(2, 10) if v % d == 0]
        if divisors:
            choices.append("/")
        op = rng.choice(choices)
        if op == "+":
            b = rng.randint(lo, hi)
        elif op == "-":
            b = rng.randint(1, min(hi, v - 1))
        elif op == "*":
            b = rng.randint(2, 9)
        else:
            b = rng.choice(divisors)
        ops.append((op, b))
        v = v + b if op == "+" else v - b if op == "-" else v * b if op == "*" else v // b  # exact: b divides v
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    sentences = [f"{name} has {start} {thing}."]
    for op, b in ops:
        sentences.append(rng.choice(TEMPLATES[op]).format(n=name, b=b, t=thing))
    for _ in range(cfg.distractors):
        other = rng.choice([x for x in NAMES if x != name])
        text = rng.choice(DISTRACTORS).format(o=other, c=rng.randint(lo, hi), u=rng.choice(OTHER_THINGS))
        sentences.insert(rng.randint(1, len(sentences)), text)  # never before the start sentence
    sentences.append(f"How many {thing} does {name} have now?")
    return Problem(start=start, ops=tuple(ops), question=" ".join(sentences))


def generate(split: str, n: int, cfg: ArithConfig = ArithConfig(), *, seed: int = 0,
             exact: bool = True) -> list[Problem]:
    """The first ``n`` distinct problems of ``split`` drawn from the stream seeded by (seed, config).

    A small space (``ops=2,digits=1``) may hold fewer: ``exact`` raises then, otherwise the problems found
    within the draw budget are returned (the same ones every time)."""
    if split not in SPLITS:
        raise ValueError(f"arith: unknown split {split!r}; one of {sorted(SPLITS)}")
    rng = random.Random(f"arith|{seed}|{cfg.ops}|{cfg.digits}|{cfg.distractors}")
    out, seen = [], set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * n + 10_000:
            if not exact:
                break
            raise RuntimeError(f"arith: could not draw {n} distinct {split} problems for {cfg}")
        p = generate_one(rng, cfg)
        if split_of(p) == split and p.math_hash not in seen:
            seen.add(p.math_hash)
            out.append(p)
    return out


# ------------------------------------------------------------------------------------------------
# dataset specs: "arith[:ops=3,digits=2,distractors=1,n=1000,seed=0][@split]"
# ------------------------------------------------------------------------------------------------

DEFAULT_N = {"train": 20_000, "dev": 500, "test": 1000}


@dataclass(frozen=True)
class ArithSpec:
    config: ArithConfig = ArithConfig()
    split: str = "test"
    n: int | None = None  # None: DEFAULT_N[split]
    seed: int = 0

    @property
    def size(self) -> int:
        return self.n if self.n is not None else DEFAULT_N[self.split]

    def problems(self) -> list[Problem]:
        """``n`` problems when ``n`` is given (an error if the space is too small), else up to the default."""
        return generate(self.split, self.size, self.config, seed=self.seed, exact=self.n is not None)

    def with_split(self, split: str) -> ArithSpec:
        return replace(self, split=split)


def is_arith(source: str | None) -> bool:
    return bool(source) and (source == "arith" or source.startswith(("arith:", "arith@")))


def parse_spec(source: str, *, default_split: str = "test") -> ArithSpec:
    """``arith[:key=value,...][@split]`` -> ArithSpec; a spec without ``@split`` means ``default_split``."""
    if not is_arith(source):
        raise ValueError(f"not an arith spec: {source!r}")
    body = source[len("arith"):]
    body, _, split = body.partition("@")
    kv: dict[str, int] = {}
    for part in filter(None, body.lstrip(":").split(",")):
        key, eq, value = part.partition("=")
        if not eq or key.strip() not in ("ops", "digits", "distractors", "n", "seed"):
            raise ValueError(f"arith spec {source!r}: expected key=value with key in ops, digits, distractors, "
                             f"n, seed; got {part!r}")
        try:
            kv[key.strip()] = int(value)
        except ValueError as e:
            raise ValueError(f"arith spec {source!r}: {key}={value!r} is not an integer") from e
    cfg = ArithConfig(**{k: kv[k] for k in ("ops", "digits", "distractors") if k in kv})
    split = split or default_split
    if split not in SPLITS:
        raise ValueError(f"arith spec {source!r}: unknown split {split!r}; one of {sorted(SPLITS)}")
    return ArithSpec(config=cfg, split=split, n=kv.get("n"), seed=kv.get("seed", 0))


# ------------------------------------------------------------------------------------------------
# the exact critic
# ------------------------------------------------------------------------------------------------

_NUM = r"(-?\d+(?:\.\d+)?(?:/\d+)?)"
STEP = re.compile(rf"^\s*{_NUM}\s*([+\-*/×x÷])\s*{_NUM}\s*=\s*{_NUM}\s*\.?\s*$")
ANSWER = re.compile(rf"^\s*{FINAL}\s*{_NUM}\s*\.?\s*$")
_CANON = {"×": "*", "x": "*", "÷": "/"}


@dataclass(frozen=True)
class Step:
    a: Fraction
    op: str
    b: Fraction
    c: Fraction


def parse_step(line: str) -> Step | None:
    """``"12 * 3 = 36"`` -> Step; anything else (prose, the answer line) -> None."""
    m = STEP.match(line.replace(",", ""))
    if not m:
        return None
    a, op, b, c = m.groups()
    return Step(Fraction(a), _CANON.get(op, op), Fraction(b), Fraction(c))


def parse_answer(line: str) -> Fraction | None:
    m = ANSWER.match(line.replace(",", ""))
    return Fraction(m.group(1)) if m else None


@dataclass(frozen=True)
class State:
    done: int  # operations the model has performed
    value: Fraction  # the value the model last wrote (its state, right or wrong)
    on_track: bool  # every earlier step was the correct one from the true state


class Critic:
    """Exact judge of arith steps; built from a ``Problem`` or from its reference steps alone."""

    def __init__(self, start: Fraction | int, ops: tuple[tuple[str, int | Fraction], ...]):
        self.start = Fraction(start)
        self.ops = tuple((op, Fraction(b)) for op, b in ops)

    @classmethod
    def from_problem(cls, problem: Problem) -> Critic:
        return cls(problem.start, problem.ops)

    @classmethod
    def from_reference(cls, steps) -> Critic:
        """From reference step lines (``"12 + 5 = 17"``...; an answer line is ignored)."""
        parsed = [parse_step(s) for s in steps if parse_answer(s) is None]
        if not parsed or any(p is None for p in parsed):
            raise ValueError(f"not an arith reference solution: {list(steps)!r}")
        return cls(parsed[0].a, tuple((p.op, p.b) for p in parsed))

    def _correct_from(self, done: int, value: Fraction, step: Step) -> bool:
        if done >= len(self.ops):
            return False
        op, b = self.ops[done]
        if step.op != op:
            return False
        operands_ok = (step.a, step.b) == (value, b) or (op in "+*" and (step.a, step.b) == (b, value))
        return operands_ok and step.c == apply(op, value, b)

    def state(self, prefix_lines) -> State:
        done, value, on_track = 0, self.start, True
        for line in prefix_lines:
            step = parse_step(line)
            if step is None:
                if line.strip():
                    on_track = False
                continue
            on_track = on_track and self._correct_from(done, value, step)
            done, value = done + 1, step.c
        return State(done, value, on_track)

    def next_step(self, prefix_lines=()) -> str:
        """The correct next line from the model's state."""
        st = self.state(prefix_lines)
        if st.done >= len(self.ops):
            return f"{FINAL} {fmt(st.value)}"
        op, b = self.ops[st.done]
        return f"{fmt(st.value)} {op} {fmt(b)} = {fmt(apply(op, st.value, b))}"

    def judge(self, prefix_lines, candidate: str, *, strict: bool = False) -> bool:
        """Whether ``candidate`` is a correct next line after the model's ``prefix_lines``."""
        st = self.state(prefix_lines)
        if strict and not st.on_track:
            return False
        answer = parse_answer(candidate)
        if answer is not None:
            return st.done >= len(self.ops) and answer == st.value
        step = parse_step(candidate)
        return step is not None and self._correct_from(st.done, st.value, step)


def split_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]
