"""Params validation, precedence, the registry and abstention."""

from __future__ import annotations

import pytest

from cat_serve.search import registry
from cat_serve.search.params import CaTParams, DeepConfParams, SearchParamsError
from tests.fakes import FakeGenerator, cont


def test_precedence_search_params_over_request_over_defaults():
    p = registry.parse_params("cat", {"temperature": 0.3}, {"temperature": 0.9, "max_tokens": 99, "seed": None})
    assert (p.temperature, p.max_tokens, p.seed, p.top_p) == (0.3, 99, None, 1.0)
    assert p.branches == 4 and p.mode == "stream" and p.step_delimiters == ("\n\n",)
    assert p.tau == 0.05  # entropy default
    assert registry.parse_params("cat", {"aggregation": "mult"}, {}).tau == 0.0
    assert registry.parse_params("cat", {"step_delimiters": ["\n"]}, {}).to_dict()["step_delimiters"] == ["\n"]


@pytest.mark.parametrize(("name", "raw", "field", "text"), [
    ("cat", {"beam_width": 3}, "beam_width", "unknown search_params field 'beam_width'"),
    ("cat", {"tau": 1.5}, "tau", "search_params.tau must be <= 1.0"),
    ("cat", {"branches": 0}, "branches", "search_params.branches must be >= 1"),
    ("cat", {"branches": "3"}, "branches", "must be an integer"),
    ("cat", {"branches": True}, "branches", "must be an integer"),
    ("cat", {"aggregation": "max"}, "aggregation", "must be one of ['entropy', 'mult']"),
    ("cat", {"step_delimiters": []}, "step_delimiters", "non-empty list"),
    ("cat", {"min_confidence": -0.1}, "min_confidence", "must be >= 0.0"),
    ("self_consistency", {"return_candidates": "yes"}, "return_candidates", "must be a boolean"),
    ("rpc", {"temperature": float("nan")}, "temperature", "finite number"),
    ("deepconf", {"mode": "online", "warmup": 9}, "warmup", "warmup (9) must be <= n (8)"),
    ("deepconf", {"eta": 0}, "eta", "must be > 0.0"),
])
def test_bad_values_name_the_field(name, raw, field, text):
    with pytest.raises(SearchParamsError) as err:
        registry.parse_params(name, raw, {})
    assert err.value.field == field and text in str(err.value)
    assert isinstance(err.value, ValueError)


def test_bad_request_default_and_unknown_strategy():
    with pytest.raises(SearchParamsError, match=r"request\.max_tokens must be >= 1"):
        registry.parse_params("self_consistency", None, {"max_tokens": 0})
    with pytest.raises(SearchParamsError, match="search strategy not available"):
        registry.parse_params("beam_search", {}, {})
    with pytest.raises(SearchParamsError, match="must be an object"):
        registry.parse_params("cat", [1], {})


def test_registry_lists_every_strategy_and_params_are_frozen():
    assert registry.available() == ["cat", "self_consistency", "ppl_consistency", "rpc", "deepconf"]
    for name in registry.available():
        params = registry.parse_params(name, None, {})
        assert type(params) is registry.STRATEGIES[name].params_cls and params.strategy == name
    with pytest.raises(AttributeError):
        CaTParams.from_dict(None, {}).tau = 0.5  # type: ignore[misc]
    assert DeepConfParams.from_dict(None, {}).mode == "offline"


async def test_run_search_abstains_below_min_confidence():
    # one path, entropy 0.5 -> confidence e^-0.5 = 0.607: kept at min 0.6, abstained at min 0.7
    for min_conf, abstained in ((0.6, False), (0.7, True)):
        gen = FakeGenerator()
        prompt = gen.encode("Q")
        gen.script(prompt, cont("\\boxed{2}", entropy=0.5))
        params = registry.parse_params("cat", {"branches": 1, "min_confidence": min_conf}, {})
        result, flag = await registry.run_search("cat", gen, prompt, params)
        assert result.answer == "2" and flag is abstained


async def test_run_search_rejects_params_of_another_strategy():
    with pytest.raises(TypeError):
        await registry.run_search("cat", FakeGenerator(), (0,), registry.parse_params("rpc", None, {}))
