"""RL's periodic dev evaluation: accuracy, ECE of exp(mean logprob) and AUC-mean, from scripted samples."""

import math

import pytest

from cat_serve.search.types import Step
from training.config import RLArgs
from training.data import parse_example

DEV = [parse_example("q1", "1 * 24 = 24\n#### 24"), parse_example("q2", "6 * 6 = 36\n#### 36")]
SAMPLES = [  # (text, token logprobs) per question
    [("#### 24", (-0.1, -0.3)), ("#### 5", (-1.0,))],  # correct ranked above wrong: AUROC 1
    [("#### 36", (-2.0,)), ("#### 7", (-0.5,))],  # correct ranked below wrong: AUROC 0
]


class ScriptedEngine:  # a RolloutEngine (training/rollout.py) that returns fixed samples
    def sample_groups(self, prompts, n, params):
        assert len(prompts) == len(SAMPLES) and n == 2 and params.seed == 7
        return [[Step(token_ids=tuple(range(len(lp))), logprobs=lp, entropies=(0.0,) * len(lp), text=t)
                 for t, lp in group] for group in SAMPLES]


def test_dev_metrics_hand_computed(tokenizer_dir):
    from training.models import load_tokenizer
    from training.rl import dev_metrics

    out = dev_metrics(ScriptedEngine(), load_tokenizer(tokenizer_dir), DEV, RLArgs(eval_samples=2), seed=7)
    assert out["dev_accuracy"] == 0.5
    assert out["dev_auc_mean"] == pytest.approx(0.5)  # (1 + 0) / 2
    # confidences exp(-0.2), exp(-1), exp(-2), exp(-0.5) fall in four different bins of 15
    expected_ece = ((1 - math.exp(-0.2)) + math.exp(-1) + (1 - math.exp(-2)) + math.exp(-0.5)) / 4
    assert out["dev_ece"] == pytest.approx(expected_ece)
    assert out["dev_questions_with_both"] == 2
    assert out["dev_auc_all"] == pytest.approx(0.5)  # both questions have both outcomes: the same as AUC-mean
    assert out["dev_q_correct"] == [1, 1] and out["dev_q_auroc"] == [1.0, 0.0]
