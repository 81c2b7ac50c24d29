"""Grading of server responses: a thin layer over ``cat_serve.search.answers``.

``grade_row(response, gold)`` is THE code path that grades every result row of a run: it takes
the response as a plain dict (``ChatCompletion.model_dump()`` or ``Completion.model_dump()``),
reads the text, cat-serve's extra fields (choice ``confidence``, top-level ``search``) and the
logprobs, and grades the text with ``formats.grade`` (math-verify equivalence). The gold decides how
the text is read: a letter gold ("B") reads a multiple-choice letter (a stated option text or number
counts as its letter when the question lists the options), a word gold a short phrase, any other
gold a number (``formats.read_for_gold``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from cat_serve.search.confidence import mean_logprob, path_probability


def grade(text: str, gold: str, question: str = "") -> bool:
    from cat_serve.search import formats  # noqa: PLC0415  (math-verify loads on first use)

    return bool(formats.grade(text or "", gold, question))


def extract_answer(text: str, gold: str | None = None, question: str = "") -> str | None:
    """The completion's answer, read as ``gold`` is (a number without a gold)."""
    from cat_serve.search import answers, formats  # noqa: PLC0415

    if gold is None:
        return answers.extract_answer(text or "", fallback=True)
    return formats.read_for_gold(text or "", gold, question)[1]


def first_choice(response: dict) -> dict:
    choices = response.get("choices") or []
    return choices[0] if choices else {}


def response_text(response: dict) -> str:
    """Chat (``message.content``) or completions (``text``) output of the first choice."""
    choice = first_choice(response)
    message = choice.get("message")
    if message is not None:
        return message.get("content") or ""
    return choice.get("text") or ""


def token_logprobs(response: dict) -> list[float]:
    """Sampled-token logprobs of the first choice (chat or completions format); [] if absent."""
    lp = first_choice(response).get("logprobs") or {}
    if lp.get("content") is not None:  # chat: content = [{token, logprob, top_logprobs}]
        return [t["logprob"] for t in lp["content"] if t.get("logprob") is not None]
    values = lp.get("token_logprobs") or []  # completions
    return [v for v in values if v is not None]


def perplexity(logprobs: Sequence[float]) -> float | None:
    """exp(-mean token logprob); None without logprobs."""
    mean = mean_logprob(logprobs)
    return None if mean is None else math.exp(-mean)


def response_confidence(response: dict) -> float | None:
    """The server's choice ``confidence``; else exp(mean token logprob) (= 1/perplexity)."""
    value = first_choice(response).get("confidence")
    if value is not None:
        return float(value)
    return path_probability(token_logprobs(response))


def grade_candidate(candidate: dict, gold: str, question: str = "") -> dict:
    """One search candidate -> ``{"answer", "correct", "score"}`` (for maj@k / mean@k)."""
    text = candidate.get("text")
    answer = candidate.get("answer")
    if answer is None and text:
        answer = extract_answer(text, gold, question)
    if text:
        ok = grade(text, gold, question)
    elif answer is not None:
        ok = grade(f"\\boxed{{{answer}}}", gold)
    else:
        ok = False
    out = {"answer": answer, "correct": ok, "score": candidate.get("score")}
    if candidate.get("step_confidences") is not None:  # CaT: c of each step (cat-eval calibrate)
        out["step_confidences"] = list(candidate["step_confidences"])
    return out


def group_samples(samples: list[dict]) -> list[dict]:
    """Add ``group``: equivalent answers (``answers.cluster_answers``) share one index, so maj@k
    counts "14" and "14.0" as the same vote; a missing answer gets ``None``."""
    from cat_serve.search import answers  # noqa: PLC0415

    group_of = {i: g for g, members in enumerate(answers.cluster_answers([s["answer"] for s in samples]))
                for i in members}
    return [{**s, "group": group_of.get(i)} for i, s in enumerate(samples)]


def raw_confidence(response: dict) -> float | None:
    """The strategy's raw score: ``search.raw_confidence`` when the server calibrated the choice's
    confidence, else the choice's own confidence (no profile loaded, or a plain request)."""
    search = response.get("search") or {}
    if search.get("raw_confidence") is not None:
        return float(search["raw_confidence"])
    return response_confidence(response)


def grade_row(response: dict, gold: str, question: str = "") -> dict:
    """Everything a result row needs from one response, graded against ``gold`` (``question``: the
    item's question, whose options let a multiple-choice answer be stated by its text)."""
    text = response_text(response)
    search = response.get("search")
    usage = response.get("usage") or {}
    candidates = (search or {}).get("candidates") or []
    return {
        "output": text,
        "extracted": extract_answer(text, gold, question),
        "correct": grade(text, gold, question),
        "confidence": response_confidence(response),
        "raw_confidence": raw_confidence(response),
        "perplexity": perplexity(token_logprobs(response)),
        "tokens": usage.get("completion_tokens"),
        "finish_reason": first_choice(response).get("finish_reason"),
        "search": {k: v for k, v in search.items() if k != "candidates"} if search else None,
        "samples": group_samples([grade_candidate(c, gold, question) for c in candidates if isinstance(c, dict)]),
    }
