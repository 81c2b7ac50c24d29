"""The server on CUDA, transformers engine: the search integration tests of tests/api/test_search_vllm.py
(every strategy, streaming, abstention, 400s, disconnect abort) through the openai SDK, on a server
started with ``--engine transformers --device cuda``. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

from tests.api.test_search_vllm import (  # noqa: F401  (collected here, run against the fixture below)
    Q,
    test_bad_search_params_are_400,
    test_completions_endpoint_search_with_candidates,
    test_disconnect_during_blocking_cat_aborts_within_1s,
    test_disconnect_during_streaming_cat_aborts_within_1s,
    test_every_strategy_is_tested,
    test_min_confidence_abstains,
    test_search_response_contract,
    test_streaming_search_is_parseable_by_sdk,
)

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture
def server(hf_cuda_server):
    return hf_cuda_server


def test_transformers_engine_serves_from_the_gpu(hf_cuda_server):
    health = hf_cuda_server.health()
    assert health["engine"] == "transformers" and health["device"].startswith("cuda"), health
    client = hf_cuda_server.client()
    r = client.chat.completions.create(model=hf_cuda_server.model, messages=Q, max_tokens=24, temperature=0,
                                       logprobs=True)
    c = r.choices[0]
    assert c.message.content and r.usage.completion_tokens == len(c.logprobs.content)
    chunks = list(client.chat.completions.create(model=hf_cuda_server.model, messages=Q, max_tokens=24,
                                                 temperature=0, stream=True))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == c.message.content
