"""A calibration profile in responses, through the official openai SDK against the real vLLM server.

The server loads a hand-written profile (``--calibration PATH``): self-consistency maps every raw
vote share to 0.25 (Platt with a = 0), CaT maps C through an isotonic line from (0, 0.1) to (1, 0.9),
and CaT's defaults are confident_threshold 0.123 and tau 0.0042.
"""

from __future__ import annotations

import json
import math

import httpx
import pytest

from cat_serve.api.serving import ABSTAIN_TEXT
from tests.conftest import start_server, stop_server

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

Q = [{"role": "user", "content": "Tom has 3 apples and buys 4 more. How many apples does he have? "
                                 "End with: The answer is <number>."}]
PROFILE = {
    "version": 1,
    "maps": {"self_consistency": {"kind": "platt", "a": 0.0, "b": math.log(0.25 / 0.75)},
             "cat": {"kind": "isotonic", "x": [0.0, 1.0], "y": [0.1, 0.9]}},
    "search_defaults": {"cat": {"confident_threshold": 0.123, "tau": 0.0042, "aggregation": "entropy"}},
    "provenance": {"dataset": "hand-written for this test"},
}


@pytest.fixture(scope="module")
def calibrated_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("calibrated")
    path = d / "profile.json"
    path.write_text(json.dumps(PROFILE))
    server = start_server("vllm", d, "--dtype", "float32", "--calibration", str(path), "--kv-cache-gib", "1")
    server.profile_path = str(path)
    yield server
    stop_server(server)


def test_models_says_a_profile_is_loaded(calibrated_server):
    [model] = calibrated_server.client().models.list().data
    cal = model.model_extra["calibration"]
    assert cal["loaded"] and cal["path"] == calibrated_server.profile_path
    assert cal["strategies"] == ["cat", "self_consistency"]
    assert model.model_extra["fingerprint"].startswith("sha256:")


def test_confidence_is_calibrated_and_raw_score_kept(calibrated_server):
    r = calibrated_server.client().chat.completions.create(
        model=calibrated_server.model, messages=Q, max_tokens=48,
        extra_body={"search": "self_consistency", "search_params": {"n": 2, "seed": 5}})
    search, choice = r.model_extra["search"], r.choices[0]
    assert search["answer"] is not None  # seeded: both paths answer
    assert search["calibrated"] is True
    assert search["raw_confidence"] in (0.5, 1.0)  # a vote share of 2 paths
    assert choice.model_extra["confidence"] == pytest.approx(0.25)


def test_min_confidence_thresholds_the_calibrated_value(calibrated_server):
    # raw vote share >= 0.5 would pass min_confidence 0.3; the calibrated 0.25 does not
    r = calibrated_server.client().chat.completions.create(
        model=calibrated_server.model, messages=Q, max_tokens=48,
        extra_body={"search": "self_consistency", "search_params": {"n": 2, "seed": 5, "min_confidence": 0.3}})
    search = r.model_extra["search"]
    assert search["raw_confidence"] >= 0.5 and search["abstained"]
    assert r.choices[0].message.content == ABSTAIN_TEXT


def test_cat_defaults_come_from_the_profile_unless_overridden(calibrated_server):
    small = {"branches": 2, "max_steps": 3, "max_step_tokens": 24, "max_tokens": 72, "seed": 1}
    client = calibrated_server.client()
    r = client.chat.completions.create(model=calibrated_server.model, messages=Q,
                                       extra_body={"search": "cat", "search_params": small})
    search = r.model_extra["search"]
    assert search["params"]["confident_threshold"] == 0.123 and search["params"]["tau"] == 0.0042
    assert search["params"]["mode"] == "stream"
    if search["answer"] is not None:  # isotonic line: 0.1 + 0.8 * C
        assert r.choices[0].model_extra["confidence"] == pytest.approx(0.1 + 0.8 * search["raw_confidence"])
        assert search["calibrated"]
    r = client.chat.completions.create(model=calibrated_server.model, messages=Q,
                                       extra_body={"search": "cat", "search_params": {**small, "tau": 0.01}})
    assert r.model_extra["search"]["params"]["tau"] == 0.01
    assert r.model_extra["search"]["params"]["confident_threshold"] == 0.123


def test_strategy_without_a_map_is_reported_uncalibrated(calibrated_server):
    r = calibrated_server.client().chat.completions.create(
        model=calibrated_server.model, messages=Q, max_tokens=48,
        extra_body={"search": "ppl_consistency", "search_params": {"n": 2, "seed": 5}})
    search = r.model_extra["search"]
    assert search["calibrated"] is False
    assert r.choices[0].model_extra["confidence"] == search["raw_confidence"]


def test_empty_search_params_with_search_none_is_accepted(calibrated_server):
    body = {"model": calibrated_server.model, "messages": Q, "max_tokens": 2, "search": "none"}
    ok = httpx.post(f"{calibrated_server.base_url}/chat/completions", json={**body, "search_params": {}}, timeout=120)
    assert ok.status_code == 200, ok.text
    bad = httpx.post(f"{calibrated_server.base_url}/chat/completions", json={**body, "search_params": {"n": 2}},
                     timeout=120)
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
