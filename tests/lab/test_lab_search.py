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
    assert labels == ["greedy", "SC@8", "CaT-stream@8", "CaT-adaptive@8", "PC@8", "RPC@8", "DeepConf@8",
                      "CaT-faithful@8"]
    cat = dict((label, p) for label, _, p in strategies(8, {"tau": 0.5}))["CaT-stream@8"]
    assert cat["branches"] == 8 and cat["mode"] == "stream" and cat["tau"] == 0.5
    # per-mode settings (the dev sweep's choice) go over the shared ones, for their mode only
    by = dict((label, p) for label, _, p in strategies(4, {"tau": 0.5, "confident_threshold": 0.3},
                                                         {"adaptive": {"beam": 1, "confident_threshold": 0.6}}))
    assert by["CaT-adaptive@4"]["beam"] == 1 and by["CaT-adaptive@4"]["confident_threshold"] == 0.6
    assert "beam" not in by["CaT-stream@4"] and by["CaT-stream@4"]["confident_threshold"] == 0.3


def test_dev_sweep_choice_rule():
    from lab.recipe.search import choose, sweep_variants

    rows = [{"name": "s1", "mode": "stream", "params": {"a": 1}, "accuracy": 0.60, "tokens_vs_sc": 0.30},
            {"name": "s2", "mode": "stream", "params": {"a": 2}, "accuracy": 0.70, "tokens_vs_sc": 0.34},
            {"name": "s3", "mode": "stream", "params": {"a": 3}, "accuracy": 0.80, "tokens_vs_sc": 0.50},
            {"name": "a1", "mode": "adaptive", "params": {"b": 1}, "accuracy": 0.70, "tokens_vs_sc": 0.60},
            {"name": "a2", "mode": "adaptive", "params": {"b": 2}, "accuracy": 0.75, "tokens_vs_sc": 0.90}]
    chosen = choose(rows)
    # stream: s3 is more accurate but over 0.35x SC's tokens; s2 is the most accurate within it
    assert chosen["stream"]["name"] == "s2" and chosen["stream"]["within_target"] is True
    # adaptive: nothing within the target -> the cheapest
    assert chosen["adaptive"]["name"] == "a1" and chosen["adaptive"]["within_target"] is False
    q = {"0.05": 0.1, "0.1": 0.2, "0.25": 0.3, "0.5": 0.4, "0.75": 0.5, "0.9": 0.6}
    variants = sweep_variants({"provenance": {"cat_threshold_fit": {"cat": {"step_confidence_quantiles": q}}}})
    assert ("stream-b0.25", "stream", {"confident_threshold": 0.3}) in variants
    assert ("adaptive1-b0.1", "adaptive", {"confident_threshold": 0.2, "beam": 1}) in variants
    assert ("stream-t0-b0.1", "stream", {"confident_threshold": 0.2, "trunk_temperature": 0.0}) in variants


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


def test_search_plan_runs_faithful_last_for_every_k():
    from lab.recipe.search import search_labels, search_plan

    labels = search_labels()
    assert labels[0] == "greedy" and labels[-1] == "CaT-faithful"
    cheap = labels[:-1]
    assert search_plan(labels, [4, 8]) == [(4, cheap), (8, cheap), (4, ["CaT-faithful"]), (8, ["CaT-faithful"])]
    assert search_plan(["SC"], [8]) == [(8, ["SC"])]  # --only without a costly strategy: no empty run


def test_transfer_compare_reads_every_finished_model(tmp_path, monkeypatch):
    import json

    from lab.recipe.transfer import transfer_compare

    monkeypatch.setenv("LAB_RESULTS", str(tmp_path))
    row = {"strategy": "PC@4", "accuracy": 0.5, "acc_lo95": 0.4, "acc_hi95": 0.6, "tokens_per_query": 120.0,
           "ece": 0.1, "auroc": 0.7, "latency_p50_s": 9.0}
    for name in ("sft", "capo"):  # caspo not finished (another process, or not trained)
        (tmp_path / "transfer" / name / "test-k4").mkdir(parents=True)
        (tmp_path / "transfer" / name / "test-k4" / "table.json").write_text(json.dumps([row]))
    got = transfer_compare("test", 4)
    assert list(got) == ["sft", "capo"]
    assert got["capo"] == {"PC@4": {k: row[k] for k in ("accuracy", "acc_lo95", "acc_hi95", "tokens_per_query",
                                                          "ece", "auroc")}}


def test_chosen_settings_read_from_the_dev_runs(tmp_path):
    """make lab-search --chosen: each sampled selector at its own dev choice per K, every CaT mode at the branch
    temperature the CaT-temperature run chose (greedy trunk for stream), faithful with dedup."""
    import json

    from lab.recipe.search import chosen_settings

    for sub in ("sampling-sweep", "cat-temperature", "dev-sweep"):
        (tmp_path / sub).mkdir()
    pick = lambda t, p: {"temperature": t, "top_p": p, "accuracy": 0.5}  # noqa: E731
    (tmp_path / "sampling-sweep" / "chosen.json").write_text(json.dumps(
        {"chosen": {"SC": {"4": pick(0.3, 1.0), "8": pick(0.7, 1.0)}, "RPC": {"4": pick(0.7, 0.95), "8": pick(0.5, 1.0)}}}))
    (tmp_path / "cat-temperature" / "table.json").write_text(json.dumps(
        {"chosen": {"4": {"temperature": 0.7}, "8": {"temperature": 0.5}},
         "stream_params": {"trunk_temperature": 0.0, "confident_threshold": 0.82}}))
    (tmp_path / "dev-sweep" / "chosen.json").write_text(json.dumps(
        {"chosen": {"adaptive": {"params": {"beam": 1, "confident_threshold": 0.82}},
                    "stream": {"params": {"confident_threshold": 0.82}}}}))
    plan = chosen_settings(tmp_path, [4, 8])
    assert plan[4]["sampling"]["SC"] == {"temperature": 0.3, "top_p": 1.0}
    assert plan[4]["sampling"]["RPC"] == {"temperature": 0.7, "top_p": 0.95}
    assert plan[8]["sampling"]["SC"] == {"temperature": 0.7, "top_p": 1.0}
    assert {plan[8]["sampling"][f"CaT-{m}"]["temperature"] for m in ("stream", "adaptive", "faithful")} == {0.5}
    assert plan[4]["by_mode"]["stream"] == {"confident_threshold": 0.82, "trunk_temperature": 0.0}
    assert plan[4]["by_mode"]["faithful"] == {"dedup": True} and plan[8]["by_mode"]["adaptive"]["beam"] == 1
    (tmp_path / "cat-temperature" / "table.json").unlink()
    with pytest.raises(SystemExit, match="cat-temperature"):
        chosen_settings(tmp_path, [4])
