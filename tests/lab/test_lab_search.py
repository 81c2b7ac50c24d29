"""lab.search's table: Wilson intervals and ratios to SC@K, computed by hand."""

import pytest

from lab.recipe import recipe_hash
from lab.search import strategies, table_rows, wilson


def test_wilson_interval_hand_computed():
    # p = 0.5, n = 100, z = 1.96: centre 0.5, half-width 1.96 * sqrt(0.0025 + 3.8416 / 40000) / 1.038416 = 0.0962
    lo, hi = wilson(50, 100)
    assert (lo, hi) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert wilson(0, 10)[0] == pytest.approx(0.0, abs=1e-12) and wilson(0, 0) == (None, None)


def test_every_strategy_once_per_k():
    labels = [label for label, _, _ in strategies(8, {"tau": 0.5})]
    assert labels == ["greedy", "SC@8", "PC@8", "RPC@8", "DeepConf@8", "CaT-faithful@8", "CaT-adaptive@8",
                      "CaT-stream@8"]
    cat = dict((label, p) for label, _, p in strategies(8, {"tau": 0.5}))["CaT-stream@8"]
    assert cat["branches"] == 8 and cat["mode"] == "stream" and cat["tau"] == 0.5


def test_ratios_to_sc():
    rows = table_rows({"SC@4": {"n": 10, "accuracy": 0.5, "tokens_per_query": 400.0},
                       "CaT-stream@4": {"n": 10, "accuracy": 0.6, "tokens_per_query": 100.0}}, 4)
    cat = rows[1]
    assert cat["tokens_vs_sc"] == 0.25 and cat["acc_minus_sc"] == pytest.approx(0.1)


def test_sft_cache_key_ignores_the_step_count():
    base = {"lr": 1e-4, "max_steps": 45, "save_steps": 5}
    assert recipe_hash(base) == recipe_hash({**base, "max_steps": 90, "save_steps": 10})
    assert recipe_hash(base) != recipe_hash({**base, "lr": 2e-4})


def test_every_strategy_request_is_valid_for_the_server():
    """The server would answer 400 to params it rejects; parse them as it does."""
    from cat_serve.search.registry import parse_params

    for k in (4, 8):
        for label, name, params in strategies(k):
            if name != "none":
                parse_params(name, params)
