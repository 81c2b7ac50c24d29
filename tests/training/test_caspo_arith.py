"""CASPO on arith: on-policy contexts (Eq. 1) built from the model's own steps, judged by the exact critic."""

import pytest

from training.data import parse_example

EX = parse_example("Ava has 12 apples. Then Ava ends up with 3 times as many apples as before. Ava buys 5 more "
                   "apples. How many apples does Ava have now?", "12 * 3 = 36\n36 + 5 = 41\n#### 41")
# per call of sample_steps: (text, mean logprob, confidence); the first is s_j, the rest its competitors
SCRIPT = [
    [("12 * 3 = 35", -0.1, 0.9), ("12 * 3 = 36", -0.2, 0.8)],
    [("35 + 5 = 40", -0.1, 0.9), ("36 + 5 = 41", -0.3, 0.7)],
    [("#### 40", -0.1, 0.95), ("#### 41", -0.4, 0.6)],
]


@pytest.fixture
def scripted(monkeypatch):
    import training.caspo as caspo

    calls = []

    def fake_sample_steps(model, tokenizer, context_ids, *, n, temperature, max_tokens):
        calls.append(tokenizer.decode(context_ids))
        return SCRIPT[len(calls) - 1]

    monkeypatch.setattr(caspo, "sample_steps", fake_sample_steps)
    return calls


def test_on_policy_contexts_follow_the_models_own_steps(scripted, tokenizer_dir):
    from training.caspo import arith_step_samples
    from training.models import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    samples = arith_step_samples(None, tok, EX, n=2, temperature=1.0, max_tokens=8, on_policy=True)
    assert [s.candidate for s in samples] == ["12 * 3 = 35", "35 + 5 = 40", "#### 40"]
    assert scripted[1].endswith("12 * 3 = 35\n") and scripted[2].endswith("12 * 3 = 35\n35 + 5 = 40\n")
    # judged from the model's state: the wrong first step, then locally right steps on its value
    assert [s.correct for s in samples] == [False, True, True]
    assert [s.reference for s in samples] == ["12 * 3 = 36", "35 + 5 = 40", "#### 40"]
    assert [[c.correct for c in s.competitors] for s in samples] == [[True], [False], [False]]


def test_teacher_forced_contexts_use_the_reference_steps(scripted, tokenizer_dir):
    from training.caspo import arith_step_samples
    from training.models import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    samples = arith_step_samples(None, tok, EX, n=2, temperature=1.0, max_tokens=8, on_policy=False)
    assert scripted[1].endswith("12 * 3 = 36\n") and scripted[2].endswith("12 * 3 = 36\n36 + 5 = 41\n")
    assert [s.correct for s in samples] == [False, False, False]
    assert [[c.correct for c in s.competitors] for s in samples] == [[True], [True], [True]]


def test_on_policy_needs_the_arith_judge():
    from training.caspo import collect_pairs
    from training.config import CASPOArgs

    with pytest.raises(ValueError, match="on_policy"):
        collect_pairs(None, None, [EX], CASPOArgs(contexts="on_policy", judge="exact"), 1.0)
