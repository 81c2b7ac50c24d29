"""Step-level calibration metrics of lab.steps, computed by hand."""

import math

import pytest

from lab.steps import step_metrics, step_stats


def test_step_stats():
    s = step_stats([-0.1, -0.3], [0.2, 0.4], [-0.1, -0.2])
    assert s["mean_entropy"] == pytest.approx(0.3)
    assert s["confidence"] == pytest.approx(math.exp(-0.3))
    assert s["max_prob"] == pytest.approx((math.exp(-0.1) + math.exp(-0.2)) / 2)
    assert s["perplexity"] == pytest.approx(math.exp(0.2))


def row(correct, entropy, max_prob, ppl):
    return {"correct": correct, "mean_entropy": entropy, "confidence": math.exp(-entropy), "max_prob": max_prob,
            "perplexity": ppl}


def test_step_metrics_hand_computed():
    rows = [row(True, 0.1, 0.9, 1.1), row(True, 0.3, 0.6, 1.5), row(False, 0.5, 0.7, 1.0), row(False, 0.2, 0.4, 2.0)]
    m = step_metrics(rows)
    assert m["step_accuracy"] == 0.5
    assert (m["entropy_correct"], m["entropy_incorrect"]) == pytest.approx((0.2, 0.35))
    assert m["entropy_gap"] == pytest.approx(0.15)
    # correct vs wrong pairs ranked right: -entropy 3 of 4, max prob 3 of 4, -perplexity 2 of 4
    assert (m["auroc_entropy"], m["auroc_max_prob"], m["auroc_perplexity"]) == pytest.approx((0.75, 0.75, 0.5))
    c = [math.exp(-0.1), math.exp(-0.3), math.exp(-0.5), math.exp(-0.2)]  # four different bins of 15
    assert m["ece"] == pytest.approx(((1 - c[0]) + (1 - c[1]) + c[2] + c[3]) / 4)
    assert m["brier"] == pytest.approx(((1 - c[0]) ** 2 + (1 - c[1]) ** 2 + c[2] ** 2 + c[3] ** 2) / 4)
    assert step_metrics([row(True, 0.1, 0.9, 1.1)])["entropy_gap"] is None


def test_collect_runs_on_policy_steps_through_the_policy_engine(tokenizer_dir):
    """lab.steps.collect end to end on the 2-layer tiny model: one row per sampled step, judged by the critic
    (random weights write wrong steps; the point is that the engine, prompt and critic seams still fit)."""
    from lab.steps import collect, step_metrics

    rows = collect("tiny", "arith:ops=2,digits=1,distractors=0@dev", limit=1, max_step_tokens=4,
                   tokenizer=str(tokenizer_dir))
    assert 1 <= len(rows) <= 2 + 2  # ops + 2 steps at most
    assert [r["j"] for r in rows] == list(range(len(rows)))
    assert all(isinstance(r["correct"], bool) and r["perplexity"] >= 1.0 for r in rows)
    assert step_metrics(rows)["steps"] == len(rows)


def test_batched_collection_equals_one_problem_at_a_time(tokenizer_dir):
    """collect_steps with the j-th steps of 3 problems in one call gives the rows of one problem at a time, for an
    engine whose step depends only on its context (a problem's own earlier steps, never its batch neighbours').
    The fake engine writes "s:<context length mod 2>" lines, then "#### 0" once problem i has 1 + i % 2 of them."""
    from transformers import AutoTokenizer

    from cat_serve.search.types import GenParams, Step
    from eval.arith import parse_spec
    from lab.steps import collect_steps

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    problems = parse_spec("arith:ops=2,digits=1,distractors=0@dev").problems()[:3]
    calls = []

    class Engine:
        def sample_groups(self, prompts, n, params):
            calls.append(len(prompts))
            out = []
            for ids in prompts:
                text = tok.decode(ids)
                qi = next(i for i, p in enumerate(problems) if p.question in text)
                lines = [ln for ln in text.split(problems[qi].question, 1)[1].splitlines() if ln.startswith("s:")]
                step = "#### 0" if len(lines) >= 1 + qi % 2 else f"s:{len(ids) % 2}"
                out.append([Step(token_ids=(1, 2), logprobs=(-0.1, -0.3), entropies=(0.2, 0.4), text=step + "\n")])
            return out

    params = GenParams(max_tokens=4, temperature=1.0, stop=("\n",), top_logprobs=1)
    one = collect_steps(Engine(), tok, problems, params, batch=1)
    assert max(calls) == 1
    calls.clear()
    three = collect_steps(Engine(), tok, problems, params, batch=3)
    assert calls == [3, 3, 1]  # j = 0 and 1 for all three; j = 2 for problem 1 alone
    assert one == three
    assert [(r["question"], r["j"]) for r in three] == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1)]
    assert [r["step"] for r in three if r["step"].startswith("####")] == ["#### 0"] * 3
    assert all(r["confidence"] == pytest.approx(math.exp(-0.3)) for r in three)  # exp(-mean entropy)
