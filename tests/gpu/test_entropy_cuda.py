"""The transformers engine on CUDA reports the same exact entropies as the CPU for the same tokens.

Skipped without CUDA. Both sides run the embedded SmolLM2-135M-Instruct in float32 (TF32 matmuls stay off,
PyTorch's default), so they differ only by the order of floating-point sums: 1e-3 nats is generous."""

from __future__ import annotations

import asyncio

import pytest
import torch

from cat_serve.engine.base import chat_prompt_ids
from cat_serve.search.types import GenParams

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have? Explain step by step."
TOL = 1e-3  # nats; float32 on both devices


@pytest.fixture(scope="module")
def engines():
    from cat_serve.engine.hf_engine import HFEngine
    from cat_serve.models import ensure_embedded_model

    path = str(ensure_embedded_model())
    return HFEngine.create(path, "m", device="cpu"), HFEngine.create(path, "m", device="cuda")


def exact_entropies(engine, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    """Full-vocabulary entropy (nats) at each generated position, teacher-forced, on the engine's device."""
    ids = torch.tensor([prompt + tokens], device=engine.device)
    with torch.inference_mode():
        logits = engine.model(ids).logits[0, len(prompt) - 1 : -1].float()
    logp = torch.log_softmax(logits, -1)
    return (-(logp.exp() * logp).sum(-1)).cpu()


def test_engines_sit_where_asked(engines):
    cpu, cuda = engines
    assert cpu.device == "cpu" and cuda.device.startswith("cuda")


@pytest.mark.parametrize("temperature,seed", [(0.0, None), (1.0, 7)])
def test_cuda_engine_entropy_matches_cpu_for_the_same_tokens(engines, temperature, seed):
    cpu, cuda = engines
    prompt = chat_prompt_ids(cuda.tokenizer, [{"role": "user", "content": QUESTION}])
    # two prompts in one call: left padding and the KV cache on the GPU are exercised as well
    short = chat_prompt_ids(cuda.tokenizer, [{"role": "user", "content": "2+2?"}])
    params = GenParams(max_tokens=40, temperature=temperature, seed=seed, top_logprobs=5)
    steps = asyncio.run(cuda.extend([prompt, short], 1, params))
    for p, (step,) in zip([prompt, short], steps):
        tokens = list(step.token_ids)
        assert len(tokens) > 5
        reference = exact_entropies(cpu, p, tokens)  # the CPU's exact entropy for the tokens CUDA chose
        reported = torch.tensor(step.entropies)
        assert torch.isfinite(reported).all()
        assert (reported - reference).abs().max().item() < TOL, (reported - reference).abs().max().item()
        # the same forward on both devices agrees as well (no engine code involved)
        assert (exact_entropies(cuda, p, tokens) - reference).abs().max().item() < TOL


def test_greedy_path_is_the_same_on_cpu_and_cuda(engines):
    cpu, cuda = engines
    prompt = chat_prompt_ids(cuda.tokenizer, [{"role": "user", "content": QUESTION}])
    params = GenParams(max_tokens=32, temperature=0.0, top_logprobs=0)
    (a,), = asyncio.run(cpu.extend([prompt], 1, params))
    (b,), = asyncio.run(cuda.extend([prompt], 1, params))
    # float32 on both sides: no near-tie in 32 greedy steps of this prompt flips (checked on the H100 run)
    assert a.token_ids == b.token_ids
    assert max(abs(x - y) for x, y in zip(a.entropies, b.entropies)) < TOL
