"""Calibration profiles: the map, its loading, the CaT defaults it supplies, and its use in search
(hand-computed values; no server)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from cat_serve.calibration import (
    IDENTITY,
    PROFILE_FILE,
    CalibrationProfile,
    ProfileError,
    ScoreMap,
    calibrate_result,
    resolve_profile,
    shipped_profile_path,
)
from cat_serve.search import registry
from cat_serve.search.params import SearchParamsError, SelfConsistencyParams
from cat_serve.search.types import SearchResult, SearchStats
from tests.fakes import FakeGenerator, cont
from tests.search.test_search_sampling import vote_script

ISO = {"kind": "isotonic", "x": [0.2, 0.6], "y": [0.1, 0.5]}


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def result(confidence: float, answer: str | None = "5") -> SearchResult:
    return SearchResult(text="t", token_ids=(), answer=answer, confidence=confidence,
                        stats=SearchStats(strategy="cat", params={}))


def test_isotonic_map_interpolates_and_holds_its_end_values():
    m = ScoreMap.from_dict(ISO)
    # between the knots: 0.1 + (0.4 - 0.2) / (0.6 - 0.2) * (0.5 - 0.1) = 0.3
    assert m(0.4) == pytest.approx(0.3)
    assert m(0.0) == pytest.approx(0.1) and m(1.0) == pytest.approx(0.5)
    grid = [i / 100 for i in range(101)]
    values = [m(x) for x in grid]
    assert all(b >= a for a, b in zip(values, values[1:]))  # monotone


def test_platt_map_and_clipping_to_unit_interval():
    m = ScoreMap.from_dict({"kind": "platt", "a": 2.0, "b": -1.0})
    assert m(0.5) == pytest.approx(0.5)  # sigmoid(2 * 0.5 - 1) = sigmoid(0)
    assert m(1.0) == pytest.approx(1 / (1 + math.exp(-1.0)))
    # the identity map clips a raw score that leaves [0, 1]
    assert IDENTITY(1.3) == 1.0 and IDENTITY(-0.2) == 0.0 and IDENTITY(0.42) == 0.42


@pytest.mark.parametrize("bad", [
    {"kind": "isotonic", "x": [0.2, 0.6], "y": [0.5, 0.1]},  # decreasing: not monotone
    {"kind": "isotonic", "x": [0.6, 0.2], "y": [0.1, 0.5]},  # x not increasing
    {"kind": "isotonic", "x": [0.2, 0.6], "y": [0.1, 1.5]},  # outside [0, 1]
    {"kind": "isotonic", "x": [0.2], "y": [0.1, 0.2]},
    {"kind": "platt", "a": -1.0, "b": 0.0},  # decreasing
    {"kind": "spline"},
])
def test_bad_maps_are_rejected(bad):
    with pytest.raises(ProfileError):
        CalibrationProfile.from_dict({"version": 1, "maps": {"cat": bad}})


def test_no_profile_is_the_identity():
    out = calibrate_result(result(0.37), None)
    assert out.confidence == 0.37 and out.raw_confidence == 0.37 and out.calibrated is False


def test_profile_maps_confidence_and_keeps_the_raw_score():
    profile = CalibrationProfile.from_dict({"version": 1, "maps": {"cat": ISO}})
    out = profile.calibrate("cat", result(0.4))
    assert out.confidence == pytest.approx(0.3) and out.raw_confidence == 0.4 and out.calibrated
    # a strategy without a map, and a result without an answer, are left alone
    assert profile.calibrate("rpc", result(0.4)).confidence == 0.4
    none = profile.calibrate("cat", result(0.0, answer=None))
    assert none.confidence == 0.0 and not none.calibrated


def test_load_round_trip_and_resolution_order(tmp_path):
    profile = CalibrationProfile.from_dict({"version": 1, "maps": {"cat": ISO},
                                            "search_defaults": {"cat": {"tau": 0.01}}})
    path = profile.save(tmp_path / "p.json")
    loaded = CalibrationProfile.load(path)
    assert loaded.maps == profile.maps and loaded.search_defaults == {"cat": {"tau": 0.01}}
    assert loaded.path == str(path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ProfileError):
        CalibrationProfile.load(tmp_path / "bad.json")

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    assert resolve_profile("auto", model_dir, "x", embedded=False) is None
    (model_dir / PROFILE_FILE).write_text(path.read_text())
    assert resolve_profile("auto", model_dir, "x", embedded=False) == model_dir / PROFILE_FILE
    assert resolve_profile(str(path), model_dir, "x", embedded=False) == path  # --calibration PATH wins
    assert resolve_profile("none", model_dir, "x", embedded=False) is None
    # the embedded model falls back to the shipped profile
    shipped = shipped_profile_path("SmolLM2-135M-Instruct")
    expect = shipped if shipped.is_file() else None
    assert resolve_profile("auto", tmp_path, "SmolLM2-135M-Instruct", embedded=True) == expect


def test_profile_supplies_cat_defaults_that_requests_override():
    profile = CalibrationProfile.from_dict({"version": 1, "maps": {}, "search_defaults": {
        "cat": {"confident_threshold": 0.31, "tau": 0.002, "aggregation": "entropy"}}})
    p = registry.parse_params("cat", None, None, profile)
    assert p.confident_threshold == 0.31 and p.tau == 0.002
    p = registry.parse_params("cat", {"tau": 0.1}, None, profile)
    assert p.tau == 0.1 and p.confident_threshold == 0.31
    # a tau fitted on entropy confidences does not carry over to another aggregation
    p = registry.parse_params("cat", {"aggregation": "mult"}, None, profile)
    assert p.tau == 0.0 and p.confident_threshold == 0.31
    p = registry.parse_params("cat", None, None, None)  # no profile: the dataclass defaults
    assert p.confident_threshold != 0.31
    bad = CalibrationProfile.from_dict({"version": 1, "maps": {}, "search_defaults": {"cat": {"tau": 3}}})
    with pytest.raises(SearchParamsError):
        registry.parse_params("cat", None, None, bad)


async def test_min_confidence_thresholds_the_calibrated_value():
    # vote_script: answer 5 with vote share 4/7 = 0.571 (raw). The map sends every score to 0.2.
    profile = CalibrationProfile.from_dict({"version": 1, "maps": {
        "self_consistency": {"kind": "platt", "a": 0.0, "b": logit(0.2)}}})
    gen, prompt = vote_script()
    params = SelfConsistencyParams.from_dict({"n": 7, "min_confidence": 0.5}, {"max_tokens": 50})
    out, abstained = await registry.run_search("self_consistency", gen, prompt, params, profile=profile)
    assert out.raw_confidence == pytest.approx(4 / 7) and out.confidence == pytest.approx(0.2)
    assert out.calibrated and abstained  # raw 0.571 >= 0.5 would not abstain
    gen, prompt = vote_script()
    out, abstained = await registry.run_search("self_consistency", gen, prompt, params)
    assert out.confidence == pytest.approx(4 / 7) and not out.calibrated and not abstained


def test_serving_needs_no_sklearn(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"version": 1, "maps": {"cat": ISO, "rpc": {"kind": "platt", "a": 1, "b": 0}}}))
    code = (
        "import sys, cat_serve.api.app, cat_serve.api.serving, cat_serve.search.registry\n"
        "from cat_serve.calibration import CalibrationProfile\n"
        f"p = CalibrationProfile.load({str(path)!r})\n"
        "assert abs(p.maps['cat'](0.4) - 0.3) < 1e-9 and p.maps['rpc'](0.0) == 0.5\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'sklearn'], 'sklearn imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


async def test_cat_candidates_carry_their_step_confidences():
    from cat_serve.search import cat
    from cat_serve.search.params import CaTParams

    gen = FakeGenerator()
    prompt = gen.encode("Q")
    # step 1: two tokens of entropy 0.5 -> c = exp(-0.5); step 2 (answer): entropy 1.0 -> exp(-1)
    [p1] = gen.script(prompt, cont("a", "\n\n", entropy=0.5, finish="stop"))
    gen.script(p1, cont("\\boxed{4}", entropy=1.0))
    params = CaTParams.from_dict({"mode": "faithful", "branches": 1, "return_candidates": True, "tau": 0.0})
    out = await cat.run(gen, prompt, params)
    [cand] = out.candidates
    assert cand.meta["step_confidences"] == pytest.approx([math.exp(-0.5), math.exp(-1.0)])
    assert out.confidence == pytest.approx(math.exp(-1.5))


# ---------------------------------------------------------------------- multi-feature maps (issue 20 item 4)
LOGISTIC = {"kind": "logistic", "features": ["raw", "vote_share"], "coef": [1.0, 2.0], "intercept": 0.5,
            "mean": [0.5, 0.5], "scale": [0.5, 0.25]}


def test_logistic_map_by_hand_and_round_trip():
    m = ScoreMap.from_dict(LOGISTIC)
    assert m.uses_features
    # z = 0.5 + 1 * (1.0 - 0.5) / 0.5 + 2 * (0.75 - 0.5) / 0.25 = 0.5 + 1 + 2 = 3.5
    assert m(1.0, {"vote_share": 0.75}) == pytest.approx(1 / (1 + math.exp(-3.5)))
    # not monotone in the raw score alone: a higher raw score with a lower vote share maps lower
    assert m(0.9, {"vote_share": 0.25}) < m(0.5, {"vote_share": 0.75})
    assert ScoreMap.from_dict(m.to_dict()) == m
    with pytest.raises(ValueError, match="vote_share"):
        m(1.0, {})


@pytest.mark.parametrize("bad", [
    {**LOGISTIC, "scale": [0.5, 0.0]},  # a zero scale divides by zero
    {**LOGISTIC, "coef": [1.0]},  # one coefficient per feature
    {**LOGISTIC, "features": ["raw", "raw"]},
    {**LOGISTIC, "intercept": "x"},
])
def test_bad_logistic_maps_are_rejected(bad):
    with pytest.raises(ProfileError):
        CalibrationProfile.from_dict({"version": 1, "maps": {"ppl_consistency": bad}})


async def test_vote_features_by_hand():
    from cat_serve.search import perplexity, self_consistency
    from cat_serve.search.params import PerplexityParams

    # vote_script: A A A A (answer 5, 4 distinct paths) and B B B' (answer 8, B' repeats B1: 2 distinct paths)
    gen, prompt = vote_script()
    sc = await self_consistency.run(gen, prompt, SelfConsistencyParams.from_dict({"n": 7}, {"max_tokens": 50}))
    assert sc.features == pytest.approx({"vote_share": 4 / 7, "distinct_answers": 2.0, "distinct_paths": 4.0})
    gen, prompt = vote_script()
    pc = await perplexity.run(gen, prompt, PerplexityParams.from_dict({"n": 7}, {}))
    # PC picks 8 (probability mass 1.0 against 0.8): one vote each, 3 of 7; behind it 2 distinct paths
    assert pc.answer == "8" and pc.confidence == pytest.approx(1 / 1.8)
    assert pc.features == pytest.approx({"vote_share": 3 / 7, "distinct_answers": 2.0, "distinct_paths": 2.0})


async def test_maps_per_width_and_the_logistic_map_through_run_search():
    # vote_script at n = 7: raw 4/7, vote_share 4/7. "@7" is a logistic map, the plain map serves other widths
    profile = CalibrationProfile.from_dict({"version": 1, "maps": {
        "self_consistency": {"kind": "platt", "a": 0.0, "b": logit(0.2)},
        "self_consistency@7": {"kind": "logistic", "features": ["raw", "vote_share", "distinct_paths"],
                               "coef": [0.0, 1.0, -1.0], "intercept": 0.0, "mean": [0.0, 0.0, 0.0],
                               "scale": [1.0, 1.0, 1.0]}}})
    assert profile.has_map("self_consistency") and not profile.has_map("self")
    assert profile.map_for("self_consistency", 4) is profile.maps["self_consistency"]
    gen, prompt = vote_script()
    params = SelfConsistencyParams.from_dict({"n": 7}, {"max_tokens": 50})
    out, _ = await registry.run_search("self_consistency", gen, prompt, params, profile=profile)
    # z = 4/7 - 4 = -3.428571
    assert out.calibrated and out.confidence == pytest.approx(1 / (1 + math.exp(4 - 4 / 7)))
    gen, prompt = vote_script()
    params = SelfConsistencyParams.from_dict({"n": 6}, {"max_tokens": 50})  # the first 6 paths: the plain map
    out, _ = await registry.run_search("self_consistency", gen, prompt, params, profile=profile)
    assert out.confidence == pytest.approx(0.2)
    assert profile.summary()["strategies"] == ["self_consistency"]
