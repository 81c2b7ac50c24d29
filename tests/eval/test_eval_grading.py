"""Known-answer fixture: server-style responses graded through ``grade_row``, the exact code
path the runner uses for every result row."""

import math

import pytest

from eval.grading import grade_row, perplexity, response_confidence, response_text


def chat_response(content: str, *, confidence=None, logprobs=None, search=None, tokens=17) -> dict:
    """The shape of ``ChatCompletion.model_dump()`` from cat-serve (extras included)."""
    choice = {"index": 0, "finish_reason": "stop",
              "message": {"role": "assistant", "content": content}}
    if confidence is not None:
        choice["confidence"] = confidence
    if logprobs is not None:
        choice["logprobs"] = {"content": [{"token": "x", "logprob": lp, "top_logprobs": []}
                                          for lp in logprobs]}
    out = {"id": "chatcmpl-1", "object": "chat.completion", "model": "m", "choices": [choice],
           "usage": {"prompt_tokens": 30, "completion_tokens": tokens, "total_tokens": 30 + tokens}}
    if search is not None:
        out["search"] = search
    return out


SEARCH = {"strategy": "cat", "params": {"branches": 2}, "steps": 3, "expanded": 6, "pruned": 2,
          "tokens_generated": 40, "engine_calls": 3, "wall_time_s": 0.5, "abstained": False,
          "answer": "14",
          "candidates": [{"text": "7 + 7 = 14. \\boxed{14}", "answer": "14", "score": 0.9},
                         {"text": "7 + 7 = 15. \\boxed{15}", "answer": "15", "score": 0.4},
                         {"text": "so \\boxed{14}", "answer": "14", "score": 0.7}]}


def test_known_correct_response_grades_true():
    row = grade_row(chat_response("7 + 7 = 14.\nThe answer is \\boxed{14}.", confidence=0.83,
                                  search=SEARCH, tokens=40), "14")
    assert row["correct"] is True
    assert row["extracted"] == "14"
    assert row["confidence"] == pytest.approx(0.83)
    assert row["tokens"] == 40
    assert row["search"]["strategy"] == "cat" and "candidates" not in row["search"]
    assert [s["correct"] for s in row["samples"]] == [True, False, True]
    assert [s["group"] for s in row["samples"]] == [0, 1, 0]


def test_equivalent_candidate_answers_share_a_vote():
    from eval.metrics import summarize

    search = {**SEARCH, "candidates": [{"text": "\\boxed{15}"}, {"text": "\\boxed{14}"},
                                       {"text": "\\boxed{14.0}"}, {"text": "\\boxed{0.5}"}]}
    row = grade_row(chat_response("\\boxed{14}", confidence=0.5, search=search), "14")
    # groups: 15 -> 0, 14 and 14.0 -> 1, 0.5 -> 2; votes 1/2/1 -> majority "14" is correct
    assert [s["group"] for s in row["samples"]] == [0, 1, 1, 2]
    s = summarize([row])
    assert s["maj@k"] == 1.0 and s["mean@k"] == 0.5  # 2 of 4 candidates correct


def test_known_wrong_response_grades_false():
    row = grade_row(chat_response("7 + 7 = 15.\nThe answer is \\boxed{15}.", confidence=0.6), "14")
    assert row["correct"] is False
    assert row["extracted"] == "15"
    assert row["samples"] == [] and row["search"] is None


def test_equivalent_forms_and_gsm8k_gold():
    assert grade_row(chat_response("\\boxed{14.0}"), "14")["correct"] is True
    assert grade_row(chat_response("\\boxed{\\frac{1}{2}}"), "0.5")["correct"] is True
    assert grade_row(chat_response("no answer here"), "14")["correct"] is False
    assert grade_row(chat_response(""), "14")["correct"] is False


def test_completions_response_and_logprob_confidence():
    # completions format, no server confidence: conf = exp(mean logprob) = exp(-0.5)
    resp = {"choices": [{"index": 0, "text": "\\boxed{9}", "finish_reason": "stop",
                         "logprobs": {"token_logprobs": [-0.2, -0.8, None]}}],
            "usage": {"completion_tokens": 3}}
    assert response_text(resp) == "\\boxed{9}"
    row = grade_row(resp, "9")
    assert row["correct"] is True
    assert row["confidence"] == pytest.approx(math.exp(-0.5))
    assert row["perplexity"] == pytest.approx(math.exp(0.5))


def test_confidence_absent_is_none():
    assert response_confidence(chat_response("\\boxed{1}")) is None
    assert perplexity([]) is None
    # a chat response with logprobs and no confidence field (search=none)
    assert response_confidence(chat_response("x", logprobs=[-1.0, -1.0])) == pytest.approx(math.exp(-1))
