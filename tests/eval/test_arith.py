"""The arith task: generator determinism, split disjointness, reference steps, the exact critic."""

from fractions import Fraction

import pytest

from cat_serve.search.answers import has_final_answer
from cat_serve.search.formats import grade
from eval.arith import (SPLITS, ArithConfig, Critic, Problem, fmt, generate, parse_spec, parse_step, split_of)

CONFIGS = [ArithConfig(2, 1, 0), ArithConfig(3, 2, 1), ArithConfig(6, 3, 3)]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_generation_is_deterministic_and_seeded(cfg):
    a = generate("dev", 50, cfg, seed=1)
    b = generate("dev", 50, cfg, seed=1)
    assert [(p.question, p.solution) for p in a] == [(p.question, p.solution) for p in b]
    c = generate("dev", 50, cfg, seed=2)
    assert [p.question for p in a] != [p.question for p in c]
    assert all(len(p.ops) == cfg.ops for p in a)
    assert all(p.question.count(".") == 1 + cfg.ops + cfg.distractors for p in a)  # sentences, then "?"


def test_splits_are_disjoint_by_math_hash_even_across_seeds():
    cfg = ArithConfig(2, 1, 0)  # the smallest space: collisions would show here first
    hashes = {}
    for split in SPLITS:
        problems = generate(split, 300 if split == "train" else 60, cfg, seed=0) + generate(split, 60, cfg, seed=7)
        assert all(split_of(p) == split for p in problems)
        assert len({p.math_hash for p in generate(split, 60, cfg, seed=0)}) == 60  # no repeats in a split
        hashes[split] = {p.math_hash for p in problems}
    assert not hashes["train"] & hashes["dev"]
    assert not hashes["train"] & hashes["test"]
    assert not hashes["dev"] & hashes["test"]


def test_math_hash_ignores_wording():
    assert Problem(3, (("+", 4),), "Ava has 3 apples.").math_hash == Problem(3, (("+", 4),), "Ben has 3 coins.").math_hash
    assert Problem(3, (("+", 4),), "").math_hash != Problem(4, (("+", 3),), "").math_hash


@pytest.mark.parametrize("cfg", CONFIGS)
def test_every_reference_step_verifies(cfg):
    for p in generate("test", 100, cfg):
        critic = Critic.from_problem(p)
        lines = p.solution.splitlines()
        assert lines[-1] == f"#### {p.answer}"
        for j, line in enumerate(lines):
            assert critic.next_step(lines[:j]) == line
            assert critic.judge(lines[:j], line, strict=True)
        assert grade(p.solution, p.answer) and has_final_answer(p.solution)
        assert Critic.from_reference(lines).next_step() == lines[0]  # rebuilt from the solution alone
        assert all(v >= 0 and v.denominator == 1 for v in p.values)


# 12 * 3 = 36, 36 + 5 = 41, 41 - 9 = 32: values computed by hand
PROBLEM = Problem(12, (("*", 3), ("+", 5), ("-", 9)), "")


def test_critic_on_hand_made_steps():
    c = Critic.from_problem(PROBLEM)
    assert c.next_step([]) == "12 * 3 = 36"
    assert c.judge([], "12 * 3 = 36")
    assert c.judge([], "3 × 12 = 36")  # commutative, other symbol
    assert not c.judge([], "12 * 3 = 35")  # wrong arithmetic
    assert not c.judge([], "12 + 3 = 15")  # right arithmetic, wrong operation
    assert not c.judge([], "12 * 5 = 60")  # wrong operand
    assert not c.judge([], "#### 32")  # answering before the operations are done
    assert not c.judge([], "So she has 36.")  # prose is not a step
    assert c.judge(["12 * 3 = 36"], "36 + 5 = 41")
    assert not c.judge(["12 * 3 = 36"], "36 - 9 = 27")  # skipped an operation
    assert not c.judge(["12 * 3 = 36", "36 + 5 = 41"], "9 - 41 = -32")  # subtraction does not commute
    done = ["12 * 3 = 36", "36 + 5 = 41", "41 - 9 = 32"]
    assert c.next_step(done) == "#### 32"
    assert c.judge(done, "#### 32") and not c.judge(done, "#### 31")
    assert not c.judge(done, "32 + 1 = 33")  # no operation is left


def test_critic_continues_from_a_wrong_earlier_step_written_by_the_model():
    c = Critic.from_problem(PROBLEM)
    wrong = ["12 * 3 = 35"]  # the model's own error
    assert c.next_step(wrong) == "35 + 5 = 40"  # the next operation applied to the model's value
    assert c.judge(wrong, "35 + 5 = 40")  # locally correct
    assert not c.judge(wrong, "35 + 5 = 40", strict=True)  # ... but the path is already wrong
    assert not c.judge(wrong, "36 + 5 = 41")  # ignores what the model wrote: not a step from its state
    wrong_path = ["12 * 3 = 35", "35 + 5 = 40", "40 - 9 = 31"]
    assert c.judge(wrong_path, "#### 31") and not c.judge(wrong_path, "#### 32")
    assert not c.judge(wrong_path, "#### 31", strict=True)
    # a prose line keeps the state but leaves the strict path
    assert c.next_step(["Let me think.", "12 * 3 = 36"]) == "36 + 5 = 41"
    assert not c.judge(["Let me think.", "12 * 3 = 36"], "36 + 5 = 41", strict=True)


def test_division_and_fractional_states():
    c = Critic(Fraction(12), (("/", 4), ("*", 2)))
    assert c.judge([], "12 / 4 = 3") and not c.judge([], "4 / 12 = 3")
    assert c.next_step(["12 / 4 = 2.5"]) == "2.5 * 2 = 5"
    assert fmt(Fraction(1, 3)) == "1/3" and fmt(Fraction(5, 2)) == "2.5" and fmt(Fraction(-7)) == "-7"
    assert parse_step("1,200 + 5 = 1,205") is not None


def test_spec_parsing():
    s = parse_spec("arith:ops=4,digits=1,distractors=2,n=7,seed=3@dev")
    assert (s.config, s.split, s.size, s.seed) == (ArithConfig(4, 1, 2), "dev", 7, 3)
    assert parse_spec("arith").split == "test"
    assert parse_spec("arith", default_split="train").split == "train"
    for bad in ("arith:ops=7", "arith:colour=2", "arith:ops=x", "arith@valid", "gsm8k"):
        with pytest.raises(ValueError):
            parse_spec(bad)


def test_registered_in_cat_eval_and_cat_train():
    from eval.datasets import load_dataset
    from training.data import load_gsm8k

    items = load_dataset("arith:ops=2,n=5@dev")
    problems = generate("dev", 5, ArithConfig(2, 2, 0))
    assert [(i.question, i.gold) for i in items] == [(p.question, p.answer) for p in problems]
    assert items[0].id == f"arith-dev-{problems[0].math_hash[:12]}"
    examples = load_gsm8k("arith:ops=2", limit=3)  # train split by default in training
    train = generate("train", 3, ArithConfig(2, 2, 0))
    assert [e.question for e in examples] == [p.question for p in train]
    assert examples[0].gold == train[0].answer and list(examples[0].steps) == train[0].steps


def test_training_mixture_interleaves_its_parts():
    from training.data import load_gsm8k

    examples = load_gsm8k("arith:ops=2,digits=1|arith:ops=4,digits=2", limit=6)
    assert [len(e.steps) for e in examples] == [2, 4, 2, 4, 2, 4]
    first = generate("train", 3, ArithConfig(2, 1, 0))
    assert [e.question for e in examples[::2]] == [p.question for p in first]


def test_a_small_space_gives_what_it_has_unless_n_is_explicit():
    small = parse_spec("arith:ops=2,digits=1@dev").problems()  # default size 500: more than the space holds
    assert 0 < len(small) < 500 and len({p.math_hash for p in small}) == len(small)
    assert [p.math_hash for p in small[:20]] == [p.math_hash for p in parse_spec("arith:ops=2,digits=1,n=20@dev").problems()]
    with pytest.raises(RuntimeError):  # 600 > the 456 the space's dev split holds (n=5000 said the same in 50 s)
        parse_spec("arith:ops=2,digits=1,n=600@dev").problems()
