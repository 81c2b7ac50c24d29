"""CASPO's step judges: the exact GSM8K judge (hand-checked cases) and the critic over a real endpoint."""

from __future__ import annotations

import pytest

from training.judge import CriticJudge, judge_step, parse_verdict

REF = "Natalia sold 48/2 = <<48/2=24>>24 clips in May."


def test_exact_judge_uses_the_calculator_note():
    assert judge_step("In May she sold 48/2 = 24 clips.", REF)
    assert judge_step("Half of 48 is 24.", REF)
    assert not judge_step("In May she sold 48/2 = 25 clips.", REF)  # wrong result
    assert not judge_step("She sold 2 * 12 = 25, so 24 clips.", REF)  # states 24 but bad arithmetic
    assert not judge_step("She sold 96 clips.", REF)


def test_exact_judge_uses_the_gold_answer_for_the_last_step():
    last = "Natalia sold 48+24 = <<48+24=72>>72 clips altogether."
    assert judge_step("So the total is 72.", last, gold="72")
    assert judge_step("Altogether 1,000 clips.", "x <<500*2=1000>>1000", gold="1000")
    assert not judge_step("So the total is 71.", last, gold="72")
    assert not judge_step("48 + 24 = 73, so 72.", last, gold="72")  # arithmetic is wrong


@pytest.mark.parametrize("text,verdict", [
    ("Yes.", True), ("no, the result is 25", False), ("  YES", True), ("Correct", True),
    ("Incorrect.", False), ("maybe", None), ("", None), (None, None), ("The answer is yes", None),
])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) is verdict


def test_critic_that_cannot_be_reached_falls_back_to_the_exact_judgement():
    critic = CriticJudge("http://127.0.0.1:9/v1", "none", timeout=2.0)  # port 9: nothing listens
    kwargs = dict(question="q", prefix="", candidate="c", reference="r")
    assert critic(**kwargs, exact=True) is True and critic(**kwargs, exact=False) is False
    assert (critic.calls, critic.fallbacks) == (2, 2)


@pytest.mark.slow
@pytest.mark.vllm
def test_critic_over_a_real_openai_endpoint(vllm_server):
    """The served SmolLM2 as critic: each call reaches the server and yields a verdict or a counted fallback."""
    critic = CriticJudge(vllm_server.base_url, vllm_server.model)
    verdicts = [critic(question="Natalia sold 48 clips in April and half as many in May. How many in May?",
                       prefix="", candidate=c, reference="Natalia sold 48/2 = 24 clips in May.", exact=e)
                for c, e in [("She sold 24 clips in May.", True), ("She sold 30 clips in May.", False)]]
    assert all(isinstance(v, bool) for v in verdicts)
    assert critic.calls == 2 and 0 <= critic.fallbacks <= 2


@pytest.mark.slow
@pytest.mark.vllm
def test_caspo_round_judged_by_the_critic(vllm_server, tmp_path, tokenizer_dir, tiny_examples):
    """``--judge critic``: every sampled step (s_j and its competitors) is judged by the endpoint."""
    import json

    from training.caspo import train_caspo
    from training.checkpoint import METRICS_FILE
    from training.config import CASPOArgs

    args = CASPOArgs(model="tiny", tokenizer=tokenizer_dir, output_dir=str(tmp_path / "ckpt"), rounds=1,
                     candidates_per_step=2, max_step_tokens=4, max_steps=1, batch_size=2, judge="critic",
                     critic_base_url=vllm_server.base_url, critic_model=vllm_server.model)
    path = train_caspo(args, examples=tiny_examples[1:])  # Weng: 2 reference steps
    row = json.loads((path / METRICS_FILE).read_text().splitlines()[0])
    assert row["critic_calls"] == row["steps"] * 2 == 4  # 2 reference steps x 2 candidates
    assert 0 <= row["critic_fallbacks"] <= row["critic_calls"]
