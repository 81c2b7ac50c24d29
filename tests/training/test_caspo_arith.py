"""CASPO on arith: on-policy contexts (Eq. 1) built from the model's own steps, judged by the exact critic."""

import pytest

from training.data import parse_example

EX = parse_example("Ava has 12 apples. Then Ava ends up with 3 times as many apples as before. Ava buys 5 more "
                   "apples. How many apples does Ava have now?", "12 * 3 = 36\n36 + 5 = 41\n#### 41")
# per call of step_groups (one context each): (text, mean logprob, confidence); the first is s_j, the rest its competitors
SCRIPT = [
    [("12 * 3 = 35", -0.1, 0.9), ("12 * 3 = 36", -0.2, 0.8)],
    [("35 + 5 = 40", -0.1, 0.9), ("36 + 5 = 41", -0.3, 0.7)],
    [("#### 40", -0.1, 0.95), ("#### 41", -0.4, 0.6)],
]


@pytest.fixture
def scripted(monkeypatch):
    """step_groups answers each context from SCRIPT, in call order; calls holds each call's decoded contexts."""
    import training.caspo as caspo

    calls: list[list[str]] = []
    script = iter(SCRIPT)

    def fake_step_groups(sampler, policy, tokenizer, contexts, *, n, temperature, max_tokens):
        calls.append([tokenizer.decode(c) for c in contexts])
        return [next(script) for _ in contexts]

    monkeypatch.setattr(caspo, "step_groups", fake_step_groups)
    return calls


def test_on_policy_contexts_follow_the_models_own_steps(scripted, tokenizer_dir):
    from training.caspo import arith_round_samples
    from training.models import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    samples = arith_round_samples(None, None, tok, [EX], n=2, temperature=1.0, max_tokens=8, on_policy=True)
    assert [s.candidate for s in samples] == ["12 * 3 = 35", "35 + 5 = 40", "#### 40"]
    assert scripted[1][0].endswith("12 * 3 = 35\n") and scripted[2][0].endswith("12 * 3 = 35\n35 + 5 = 40\n")
    # judged from the model's state: the wrong first step, then locally right steps on its value
    assert [s.correct for s in samples] == [False, True, True]
    assert [s.reference for s in samples] == ["12 * 3 = 36", "35 + 5 = 40", "#### 40"]
    assert [[c.correct for c in s.competitors] for s in samples] == [[True], [False], [False]]


def test_teacher_forced_contexts_use_the_reference_steps(scripted, tokenizer_dir):
    from training.caspo import arith_round_samples
    from training.models import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    samples = arith_round_samples(None, None, tok, [EX], n=2, temperature=1.0, max_tokens=8, on_policy=False)
    assert scripted[1][0].endswith("12 * 3 = 36\n") and scripted[2][0].endswith("12 * 3 = 36\n36 + 5 = 41\n")
    assert [s.correct for s in samples] == [False, False, False]
    assert [[c.correct for c in s.competitors] for s in samples] == [[True], [True], [True]]


SHORT = parse_example("Bo has 4 pens. Bo buys 2 more pens. How many pens does Bo have now?", "4 + 2 = 6\n#### 6")


def test_one_call_per_depth_batches_every_example_still_going(monkeypatch, tokenizer_dir):
    """Two examples on policy: depth 0 and 1 sample both in one call each; SHORT answers at depth 1, so depth 2
    samples EX alone. Samples come back example by example, each in step order."""
    import training.caspo as caspo
    from training.caspo import arith_round_samples
    from training.models import load_tokenizer

    answers = {  # (example, depth) -> candidates
        ("Ava", 0): [("12 * 3 = 36", -0.1, 0.9), ("12 * 3 = 35", -0.2, None)],
        ("Bo", 0): [("4 + 2 = 6", -0.1, 0.99), ("4 + 2 = 7", -0.5, None)],
        ("Ava", 1): [("36 + 5 = 41", -0.1, 0.9), ("36 + 5 = 40", -0.3, None)],
        ("Bo", 1): [("#### 6", -0.1, 0.95), ("#### 7", -0.4, None)],
        ("Ava", 2): [("#### 41", -0.1, 0.97), ("#### 40", -0.4, None)],
    }
    calls = []

    def fake_step_groups(sampler, policy, tokenizer, contexts, *, n, temperature, max_tokens):
        texts = [tokenizer.decode(c) for c in contexts]
        calls.append(["Ava" if "Ava" in t else "Bo" for t in texts])
        return [answers[(who, len(calls) - 1)] for who in calls[-1]]

    monkeypatch.setattr(caspo, "step_groups", fake_step_groups)
    tok = load_tokenizer(tokenizer_dir)
    samples = arith_round_samples("sampler", None, tok, [EX, SHORT], n=2, temperature=1.0, max_tokens=8,
                                  on_policy=True)
    assert calls == [["Ava", "Bo"], ["Ava", "Bo"], ["Ava"]]
    assert [s.candidate for s in samples] == ["12 * 3 = 36", "36 + 5 = 41", "#### 41", "4 + 2 = 6", "#### 6"]
    assert [s.correct for s in samples] == [True] * 5
    assert [s.confidence for s in samples] == [0.9, 0.9, 0.97, 0.99, 0.95]
    assert [[c.correct for c in s.competitors] for s in samples] == [[False]] * 5


def test_on_policy_needs_the_arith_judge():
    from training.caspo import collect_pairs
    from training.config import CASPOArgs

    with pytest.raises(ValueError, match="on_policy"):
        collect_pairs(None, None, [EX], CASPOArgs(contexts="on_policy", judge="exact"), 1.0)


def test_exact_confidence_by_forward_matches_the_engines_exact_entropies(tokenizer_dir):
    """vLLM reports top-k entropies only, so step_groups recomputes s_j's confidence with one policy forward; on the
    same sampled steps it must equal HFEngine's exact one (and a competitor's confidence is None there)."""
    import torch

    from training.caspo import step_groups
    from training.models import load_model_and_tokenizer
    from training.rollout import PolicyEngine

    model, tok = load_model_and_tokenizer("tiny", tokenizer_dir, seed=0)
    model.eval()
    contexts = [tok("2 + 3 =", add_special_tokens=False)["input_ids"],
                tok("Ava has 12 apples and buys 5 more, so", add_special_tokens=False)["input_ids"]]
    torch.manual_seed(0)
    real = PolicyEngine(model, tok)
    drawn = {}

    class Replay:  # the same sampled steps, with or without exact entropies
        def __init__(self, exact):
            self.exact_entropy, self.kind = exact, "replay"

        def sample_groups(self, prompts, n, params):
            key = (tuple(map(tuple, prompts)), n)
            if key not in drawn:
                drawn[key] = real.sample_groups(prompts, n, params)
            return drawn[key]

    exact = step_groups(Replay(True), model, tok, contexts, n=3, temperature=1.0, max_tokens=6)
    forward = step_groups(Replay(False), model, tok, contexts, n=3, temperature=1.0, max_tokens=6)
    for e, f in zip(exact, forward):
        assert [t for t, _, _ in e] == [t for t, _, _ in f] and [lp for _, lp, _ in e] == [lp for _, lp, _ in f]
        assert f[0][2] == pytest.approx(e[0][2], rel=1e-4) and 0 < f[0][2] <= 1
        assert [c for _, _, c in f[1:]] == [None, None]
