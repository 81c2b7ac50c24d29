"""The engine-output layer (cat_serve.engine.output) and the incremental stream segmenter."""

from __future__ import annotations

import math

import pytest

from cat_serve.engine.output import StepBuilder, group_rows, left_pad, sample_seed
from cat_serve.search.cat import _Segmenter
from cat_serve.search.types import ABORTED, STOP


def test_seed_rule_and_rows():
    assert [sample_seed(7, j) for j in range(3)] == [7, 8, 9]
    assert sample_seed(None, 2) is None
    assert group_rows(["a0", "a1", "b0", "b1", "c0", "c1"], 2) == [["a0", "a1"], ["b0", "b1"], ["c0", "c1"]]
    assert group_rows([], 3) == []


def test_left_pad():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_partial_steps_are_snapshots_and_final_is_tuples():
    b = StepBuilder()
    b.add(3, -0.5, 0.2, ((3, -0.5),))
    b.add(4, -1.0, 0.4)
    b.text = "ab"
    first = b.partial()
    b.add(5, -2.0, 0.6)
    assert len(first.token_ids) == 2 and list(first.token_ids) == [3, 4]  # later tokens do not show
    assert first.token_ids[-1] == 4 and first.token_ids[0:1] == (3,) and first.logprobs[-2:] == (-0.5, -1.0)
    assert first.num_tokens == 2 and first.sum_logprob == -1.5 and first.finish_reason is None
    assert first.token_ids == (3, 4) and first.token_ids + (9,) == (3, 4, 9)
    with pytest.raises(IndexError):
        first.token_ids[2]
    final = b.finish(STOP, stop="\n", text="ab\n")
    assert final.token_ids == (3, 4, 5) and type(final.token_ids) is tuple
    assert final.top_logprobs == (((3, -0.5),), (), ()) and final.stop == "\n" and final.text == "ab\n"
    assert b.finish(ABORTED, stop=123).stop is None  # vLLM reports stop token ids too: not a stop string
    assert math.isclose(final.sum_logprob, -3.5)


def _reference_steps(decode, ids, delimiters):
    """The definition: re-decode the current step after every token."""
    out, start = [], 0
    for end in range(1, len(ids) + 1):
        text = decode(ids[start:end])
        hit = min(((text.find(d), d) for d in delimiters if d in text), default=None)
        if hit is not None:
            out.append((start, end, text, hit[1]))
            start = end
    return out


@pytest.mark.slow
def test_incremental_segmenter_matches_full_decoding_on_the_real_tokenizer():
    from transformers import AutoTokenizer

    from cat_serve.models import ensure_embedded_model

    tok = AutoTokenizer.from_pretrained(ensure_embedded_model())
    text = ("Step 1: 12 × 3 = 36 apples 🍎.\n\nStep 2: naïve café — 36 / 4 = 9.\n\n"
            "Step 3: 東京 has 9+1 = 10\nso\n\n#### 10\n\n" * 3)
    ids = tok.encode(text, add_special_tokens=False)

    def decode(t):
        return tok.decode(list(t), skip_special_tokens=True)

    for delimiters in (("\n\n",), ("\n",), ("\n\n", ".")):
        expected = _reference_steps(decode, ids, delimiters)
        seg, got = _Segmenter(decode, delimiters), []
        for n in range(1, len(ids) + 1):  # one token at a time, as a stream delivers them
            got += seg.feed(ids[:n])
        assert got == expected and len(got) >= 9
        seg, burst = _Segmenter(decode, delimiters), []
        for n in range(3, len(ids) + 3, 3):  # several tokens per engine output
            burst += seg.feed(ids[:n])
        assert burst == expected
