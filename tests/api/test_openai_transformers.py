"""The same basic call on the transformers engine."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow]


def test_basic_chat_on_transformers(hf_server):
    client = hf_server.client()
    assert hf_server.health()["engine"] == "transformers"
    r = client.chat.completions.create(model=hf_server.model, max_tokens=16, temperature=0, logprobs=True,
                                       messages=[{"role": "user", "content": "What is 2+3?"}])
    c = r.choices[0]
    assert c.message.content and c.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens == len(c.logprobs.content)
    chunks = list(client.chat.completions.create(model=hf_server.model, max_tokens=16, temperature=0, stream=True,
                                                 messages=[{"role": "user", "content": "What is 2+3?"}]))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == c.message.content
