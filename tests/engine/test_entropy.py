"""The top-k entropy estimate: hand-computed bounds, and vLLM's estimate vs transformers' exact entropy."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from cat_serve.engine.entropy import ALPHA, ERROR_BOUND_FRACTION, entropy_bounds, estimate_entropy


def test_bounds_by_hand():
    # V = 4, true distribution (0.5, 0.3, 0.1, 0.1); we see the top-2: tail r = 0.2 over 2 tokens
    lps = [math.log(0.5), math.log(0.3)]
    h_top = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3))  # 0.34657 + 0.36119 = 0.70776
    lo, hi = entropy_bounds(lps, vocab_size=4)
    assert lo == pytest.approx(h_top + 0.2 * -math.log(0.3))  # tail at p_k = 0.3: + 0.24079
    assert hi == pytest.approx(h_top + 0.2 * math.log(2 / 0.2))  # uniform tail: + 0.46052
    exact = h_top + 2 * (-0.1 * math.log(0.1))  # 0.70776 + 0.46052 = 1.16828 (the uniform case)
    assert lo <= exact <= hi + 1e-12  # the uniform tail attains the upper bound
    assert estimate_entropy(lps, 4) == pytest.approx(lo + ALPHA * (hi - lo))
    assert abs(estimate_entropy(lps, 4) - exact) <= ERROR_BOUND_FRACTION * (hi - lo) + 1e-12


def test_full_mass_is_exact_and_empty_is_nan():
    lps = [math.log(0.5), math.log(0.25), math.log(0.25)]
    assert estimate_entropy(lps, 10) == pytest.approx(1.5 * math.log(2))
    assert math.isnan(estimate_entropy([], 10))


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_estimate_within_bound_of_exact(vllm_server):
    """Same model, same tokens: vLLM's top-20 estimate vs transformers' full-vocabulary entropy."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cat_serve.engine.base import chat_prompt_ids
    from cat_serve.models import ensure_embedded_model

    data = Path(os.environ.get("CAT_SERVE_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
    question = json.loads((data / "gsm8k_test.jsonl").read_text().splitlines()[0])["question"]
    path = ensure_embedded_model()
    tok = AutoTokenizer.from_pretrained(path)
    prompt = chat_prompt_ids(tok, [{"role": "user", "content": question}])

    r = vllm_server.client().completions.create(
        model=vllm_server.model, prompt=prompt, max_tokens=48, temperature=1.0, seed=0, logprobs=20,
        extra_body={"return_tokens_as_token_ids": True})
    lp = r.choices[0].logprobs
    generated = [int(t.removeprefix("token_id:")) for t in lp.tokens]
    assert len(generated) == r.usage.completion_tokens > 10

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.inference_mode():
        logits = model(torch.tensor([prompt + generated])).logits[0, len(prompt) - 1 : -1].float()
    logp = torch.log_softmax(logits, -1)  # [T, V]
    exact = -(logp.exp() * logp).sum(-1)  # [T]

    tol = 0.02  # float32 CPU kernels of vLLM vs transformers
    errors = []
    for t, tid in enumerate(generated):
        assert lp.token_logprobs[t] == pytest.approx(float(logp[t, tid]), abs=tol)
        top = list(lp.top_logprobs[t].values())
        assert len(top) == 20
        lo, hi = entropy_bounds(top, model.config.vocab_size)
        est = estimate_entropy(top, model.config.vocab_size)
        h = float(exact[t])
        assert lo - tol <= h <= hi + tol, (t, lo, h, hi)
        assert abs(est - h) <= ERROR_BOUND_FRACTION * (hi - lo) + tol, (t, est, h, lo, hi)
        errors.append(abs(est - h))
    assert sum(errors) / len(errors) < 0.1  # typical error is far below the worst-case bound
