"""lab.cat_temperature: the table from hand-written run folders (no server); expected values by hand."""

import json

from lab import cat_temperature


def write_rows(folder, rows):
    folder.mkdir(parents=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_summary_pairs_each_setting_with_greedy_and_chooses_per_k(tmp_path):
    ids = [f"i{j}" for j in range(50)]
    # greedy: right on the even items (25 of 50), 30 tokens each
    write_rows(tmp_path / "greedy" / "dev-k4" / "greedy",
               [{"id": i, "correct": j % 2 == 0, "tokens": 30, "latency_s": 1.0} for j, i in enumerate(ids)])
    # t0.3, K 4: right everywhere, 60 tokens -> Δacc +0.5 (25 discordant items, all for CaT: McNemar p = 2 * 0.5^25)
    write_rows(tmp_path / "t0.3" / "dev-k4" / "CaT-stream_k4",
               [{"id": i, "correct": True, "tokens": 60, "latency_s": 1.0} for i in ids])
    # t0.7, K 4: greedy's answers exactly, 45 tokens -> Δacc 0 [0, 0], not better; ≥ greedy held
    write_rows(tmp_path / "t0.7" / "dev-k4" / "CaT-stream_k4",
               [{"id": i, "correct": j % 2 == 0, "tokens": 45, "latency_s": 1.0} for j, i in enumerate(ids)])
    s = cat_temperature.summarise(tmp_path, temperatures=(0.3, 0.7), ks=(4, 8))
    assert s["greedy"] == {"n": 50, "accuracy": 0.5, "tokens_per_query": 30.0}
    rows = {r["setting"]: r for r in s["rows"]}
    assert set(rows) == {"t0.3-k4", "t0.7-k4"}  # K = 8 not run: no row
    a, b = rows["t0.3-k4"], rows["t0.7-k4"]
    assert a["accuracy"] == 1.0 and a["tokens_per_query"] == 60.0
    assert a["vs_greedy"]["accuracy"]["estimate"] == 0.5 and a["vs_greedy"]["tokens_ratio"]["estimate"] == 2.0
    assert a["vs_greedy"]["better"] == "held" and a["vs_greedy"]["holm_p"] < 1e-6
    assert b["vs_greedy"]["accuracy"]["estimate"] == 0.0 and b["vs_greedy"]["non_inferior"] == "held"
    assert b["vs_greedy"]["better"] != "held"
    assert s["chosen"] == {"4": {"setting": "t0.3-k4", "temperature": 0.3, "accuracy": 1.0, "tokens_per_query": 60.0}}
    cat_temperature.write(tmp_path, s)
    md = (tmp_path / "table.md").read_text()
    assert "| 0.3 | 4 | 50 | 1.000 | 60.0 | +0.500 [" in md and "| 2.00× |" in md
    # the verdict states its estimate, interval and Holm p (the interval comes from resampling items; the
    # estimate, +0.5, is the hand-computed part)
    assert "Better than greedy (Holm): t0.3-k4 Δacc +0.500 [" in md and "Holm p = " in md.split("Better than")[-1]
    assert json.loads((tmp_path / "table.json").read_text())["chosen"]["4"]["setting"] == "t0.3-k4"


def test_test_split_summary_reads_its_own_folders_and_chooses_nothing(tmp_path):
    ids = [f"i{j}" for j in range(10)]
    write_rows(tmp_path / "greedy" / "test-k4" / "greedy", [{"id": i, "correct": True, "tokens": 30} for i in ids])
    write_rows(tmp_path / "t0.7" / "test-k4" / "CaT-stream_k4", [{"id": i, "correct": True, "tokens": 40} for i in ids])
    s = cat_temperature.summarise(tmp_path, temperatures=(0.7,), ks=(4, 8), split="test")
    assert [r["setting"] for r in s["rows"]] == ["t0.7-k4"] and s["greedy"]["n"] == 10
    md = cat_temperature.render(s)
    assert md.startswith("CaT stream's branch temperature") and "test items" in md and "Chosen per K" not in md
    assert "| 0.7 | 4 | 10 | 1.000 | 40.0 | +0.000 [+0.000, +0.000], p = 1.000 | 1.33× |" in md
    assert md.rstrip().endswith("No branch temperature makes CaT stream better than greedy after Holm (closest: "
                                "t0.7-k4 Δacc +0.000 [+0.000, +0.000], p = 1.000, Holm p = 1.000).")
