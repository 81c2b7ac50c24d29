"""Report output (markdown, PNGs) and the runner's offline behaviour: request errors are
recorded and the run goes on; finished items are never requested again. No fake server: an
unused local port stands in for a server that is down."""

import json
import socket

import pytest

from eval import bench, report, runner
from eval.cli import main
from eval.datasets import Item

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def dead_base_url() -> str:
    with socket.socket() as s:  # a port that was just free: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def write_items(tmp_path, n=3):
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {i}+1?", "answer": i + 1}) + "\n"
                            for i in range(n)))
    return path


def test_reliability_and_coverage_pngs(tmp_path):
    rows = [{"correct": True, "confidence": 0.9}, {"correct": False, "confidence": 0.3},
            {"correct": True, "confidence": None}, {"correct": False, "error": "x"}]
    p = report.reliability_diagram_from_rows(rows, tmp_path / "r.png", title="t")
    assert p.read_bytes()[:8] == PNG_MAGIC
    p = report.reliability_diagram([], [], tmp_path / "empty.png")  # no confidences: still a PNG
    assert p.read_bytes()[:8] == PNG_MAGIC
    p = report.precision_coverage_plot({"a": rows, "b": []}, tmp_path / "pc.png")
    assert p.read_bytes()[:8] == PNG_MAGIC


def test_bench_table_ratios():
    summaries = {
        "none": {"n": 3, "accuracy": 0.5, "tokens_per_query": 100.0, "latency_p50_s": 1.0},
        "self_consistency": {"n": 3, "accuracy": 0.6, "tokens_per_query": 400.0, "latency_p50_s": 2.0},
        "cat": {"n": 3, "accuracy": 0.7, "ece": 0.1, "tokens_per_query": 200.0, "latency_p50_s": 3.0},
    }
    rows = report.bench_rows(summaries)
    cat = rows[2]
    assert cat["tokens_vs_sc"] == 0.5 and cat["tokens_vs_none"] == 2.0  # 200/400, 200/100
    assert cat["p50_vs_sc"] == 1.5 and cat["p50_vs_none"] == 3.0  # 3/2, 3/1
    md = report.markdown_table(rows)
    lines = md.strip().splitlines()
    assert lines[0].startswith("| strategy | n | acc | ECE | Brier | AUROC |")
    assert len(lines) == 2 + 3
    assert lines[4].startswith("| cat | 3 | 0.700 | 0.100 | – |")
    assert "| 0.50 | 1.50 | 2.00 | 3.00 |" in lines[4]


def test_search_params_for_k():
    assert bench.strategy_params("self_consistency", 3, {}) == {"n": 3, "return_candidates": True}
    assert bench.strategy_params("cat", 3, {"cat": {"tau": 0.5}}) == {"branches": 3, "return_candidates": True, "tau": 0.5}
    assert bench.strategy_params("none", 3, {}) == {}


def test_request_kwargs():
    cfg = runner.RunConfig(base_url="u", out_dir=".", search="none")
    kw = runner.request_kwargs(cfg, "m", "Q?")
    assert kw["temperature"] == 0.0 and kw["logprobs"] is True
    assert kw["extra_body"] == {"search": "none"}
    assert kw["messages"][0]["content"].startswith("Q?") and "\\boxed{}" in kw["messages"][0]["content"]
    cfg = runner.RunConfig(base_url="u", out_dir=".", search="cat", search_params={"branches": 2},
                           endpoint="completions")
    kw = runner.request_kwargs(cfg, "m", "Q?")
    assert "logprobs" not in kw and kw["temperature"] == runner.SAMPLING_TEMPERATURE
    assert kw["extra_body"] == {"search": "cat", "search_params": {"branches": 2}}
    assert kw["prompt"].startswith("Q?")
    assert "top_p" not in kw  # not sent unless set: the server's default
    kw = runner.request_kwargs(runner.RunConfig(base_url="u", out_dir=".", search="rpc", temperature=0.3, top_p=0.95),
                               "m", "Q?")
    assert kw["temperature"] == 0.3 and kw["top_p"] == 0.95


def test_read_rows_ignores_truncated_line_and_latest_wins(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"id": "a", "error": "boom"}\n{"id": "b", "correct": true}\n'
                    '{"id": "a", "correct": false, "error": null}\n{"id": "c", "corr')
    rows = runner.read_rows(path)
    assert [r["id"] for r in rows] == ["a", "b", "a"]
    assert runner.done_ids(rows) == {"a", "b"}
    assert runner.latest_by_id(rows)["a"]["error"] is None


def test_request_errors_are_recorded_and_retried(tmp_path, capsys):
    data = write_items(tmp_path)
    out = tmp_path / "run"
    args = ["run", "--dataset", str(data), "--search", "none", "--base-url", dead_base_url(),
            "--model", "m", "--out", str(out), "--no-progress", "--concurrency", "2"]
    assert main(args) == 0
    rows = runner.read_rows(out / runner.RESULTS)
    assert sorted(r["id"] for r in rows) == ["items-0", "items-1", "items-2"]
    assert all(r["error"] and r["correct"] is False for r in rows)
    summary = json.loads((out / runner.SUMMARY).read_text())
    assert summary["n"] == 3 and summary["n_errors"] == 3 and summary["accuracy"] == 0.0
    assert summary["n_requested"] == 3
    assert (out / runner.RELIABILITY).read_bytes()[:8] == PNG_MAGIC
    # errored items are retried on the next run (the latest row of an id wins)
    assert main(args) == 0
    assert json.loads((out / runner.SUMMARY).read_text())["n_requested"] == 3


def test_finished_items_are_not_requested(tmp_path):
    data = write_items(tmp_path, n=2)
    out = tmp_path / "run"
    out.mkdir()
    done = [{"id": f"items-{i}", "question": "q", "gold": str(i + 1), "correct": i == 0,
             "confidence": 0.5, "tokens": 5, "latency_s": 0.1, "error": None} for i in range(2)]
    (out / runner.RESULTS).write_text("".join(json.dumps(r) + "\n" for r in done))
    # without --model a pending item would need /v1/models: a dead server proves none is made
    assert main(["run", "--dataset", str(data), "--base-url", dead_base_url(), "--out", str(out),
                 "--no-progress"]) == 0
    assert len(runner.read_rows(out / runner.RESULTS)) == 2
    summary = json.loads((out / runner.SUMMARY).read_text())
    assert summary["n_requested"] == 0 and summary["n_resumed"] == 2
    # a second resume with nothing to run keeps the summary of the run that made the rows (its model and
    # wall time; seen: re-running a finished lab search wrote wall_time_s 4e-06 and model null over them)
    (out / runner.SUMMARY).write_text(json.dumps({**summary, "model": "m", "wall_time_s": 12.5}))
    assert main(["run", "--dataset", str(data), "--base-url", dead_base_url(), "--out", str(out),
                 "--no-progress"]) == 0
    kept = json.loads((out / runner.SUMMARY).read_text())
    assert (kept["model"], kept["wall_time_s"]) == ("m", 12.5)
    assert summary["accuracy"] == 0.5 and summary["n_errors"] == 0


def test_bad_search_params_rejected(tmp_path):
    with pytest.raises(SystemExit):
        main(["bench", "--dataset", str(write_items(tmp_path)), "--base-url", "u",
              "--out", str(tmp_path), "--search-params", '{"cat": 3}'])
