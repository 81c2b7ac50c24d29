"""cat_serve.files: the one JSONL reader/writer and data folder of eval, training and tools."""

from __future__ import annotations

import json

import pytest

from cat_serve import files as F


def test_jsonl_round_trip_skips_blank_lines(tmp_path):
    path = tmp_path / "rows.jsonl"
    F.write_jsonl(path, [{"a": 1}, {"b": "é"}])
    assert path.read_text(encoding="utf-8") == '{"a": 1}\n{"b": "é"}\n'
    path.write_text('{"a": 1}\n\n  \n{"b": 2}')  # blank lines, no final newline
    assert F.read_jsonl(path) == [{"a": 1}, {"b": 2}]


def test_jsonl_invalid_line_raises_unless_skipped(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"a": 1}\n{"b": 2')  # a last write that was cut off
    with pytest.raises(json.JSONDecodeError):
        F.read_jsonl(path)
    assert F.read_jsonl(path, skip_invalid=True) == [{"a": 1}]
