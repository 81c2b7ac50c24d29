"""End to end: `cat-eval run` / `cat-eval bench` as subprocesses against the real cat-serve
server (session fixture ``vllm_server`` from tests/conftest.py: ``.base_url``, ``.model``)."""

import itertools
import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROW_KEYS = {"id", "question", "gold", "output", "extracted", "correct", "confidence", "tokens",
            "latency_s", "search", "error", "strategy"}
SUMMARY_KEYS = {"n", "n_errors", "accuracy", "ece", "brier", "auroc", "ppl_auc", "maj@k", "mean@k",
                "tokens_per_query", "latency_p50_s", "latency_p95_s", "items_per_s",
                "n_requested", "n_resumed"}


def cat_eval(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    """Run ``python -m eval.cli`` (what the ``cat-eval`` script calls) and require success."""
    proc = subprocess.run([sys.executable, "-m", "eval.cli", *args, "--no-progress"], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"cat-eval {args[0]} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_valid_png(path: Path) -> None:
    import matplotlib.image  # noqa: PLC0415

    assert path.read_bytes()[:8] == PNG_MAGIC, path
    img = matplotlib.image.imread(path)  # decodes the whole file
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def assert_row_ok(row: dict, strategy: str) -> None:
    from eval.grading import grade  # noqa: PLC0415

    assert ROW_KEYS <= row.keys()
    assert row["error"] is None, row["error"]
    assert row["strategy"] == strategy
    assert isinstance(row["correct"], bool)
    assert row["correct"] == grade(row["output"], row["gold"])  # graded by the one grader
    assert row["confidence"] is not None and 0.0 <= row["confidence"] <= 1.0
    assert row["tokens"] > 0 and row["latency_s"] > 0
    if strategy == "none":
        assert row["search"] is None and row["perplexity"] >= 1.0
    else:
        assert row["search"]["strategy"] == strategy
        assert row["search"]["tokens_generated"] > 0


@pytest.fixture(scope="module")
def none_run(vllm_server, tmp_path_factory):
    """search=none on singleop: 2 items, then resumed to 4 (only 2 new requests)."""
    out = tmp_path_factory.mktemp("eval") / "none"
    common = ["run", "--dataset", "singleop", "--search", "none", "--base-url", vllm_server.base_url,
              "--max-tokens", "64", "--seed", "0", "--concurrency", "2", "--out", str(out)]
    cat_eval(*common, "--limit", "2")  # --model left out: taken from /v1/models
    first = json.loads((out / "summary.json").read_text())
    cat_eval(*common, "--limit", "4", "--model", vllm_server.model)
    return out, first


def test_run_none_rows_summary_and_plot(none_run, vllm_server):
    out, first = none_run
    rows = rows_of(out / "results.jsonl")
    assert len(rows) == 4 and len({r["id"] for r in rows}) == 4
    for row in rows:
        assert_row_ok(row, "none")
        assert row["tokens"] <= 64
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["model"] == first["model"] == vllm_server.model
    assert summary["n"] == 4 and summary["n_errors"] == 0
    assert summary["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / 4)
    assert 0.0 <= summary["ece"] <= 1.0 and 0.0 <= summary["brier"] <= 1.0
    assert summary["tokens_per_query"] == pytest.approx(sum(r["tokens"] for r in rows) / 4)
    assert summary["latency_p50_s"] <= summary["latency_p95_s"]
    assert_valid_png(out / "reliability.png")


def test_resume_requests_only_missing_items(none_run, tmp_path):
    out, first = none_run
    assert first["n"] == 2 and first["n_requested"] == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_requested"] == 2 and summary["n_resumed"] == 2  # limit 2 -> 4: 2 new
    before = (out / "results.jsonl").read_text()
    # a third run against a port where nothing listens: any request would leave an error row
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    cat_eval("run", "--dataset", "singleop", "--search", "none", "--base-url", dead,
             "--model", "whatever", "--max-tokens", "64", "--seed", "0", "--limit", "4",
             "--out", str(out))
    assert (out / "results.jsonl").read_text() == before  # no new rows, no duplicates
    # and the summary of the run that made them stays (model, wall time, throughput)
    assert json.loads((out / "summary.json").read_text()) == summary


def test_real_response_through_grade_row(vllm_server):
    """A real server response, graded by the runner's ``grade_row``: its own answer as gold is
    correct, an unrelated gold is wrong."""
    from openai import OpenAI  # noqa: PLC0415

    from eval.grading import grade_row  # noqa: PLC0415

    client = OpenAI(base_url=vllm_server.base_url, api_key="EMPTY")
    resp = client.chat.completions.create(
        model=vllm_server.model, max_tokens=64, temperature=0.0, logprobs=True,
        messages=[{"role": "user", "content": "What is 2 + 3? Put the answer in \\boxed{}."}])
    row = grade_row(resp.model_dump(), "-987654321")
    assert row["output"] and row["tokens"] > 0
    assert row["correct"] is False
    assert 0.0 < row["confidence"] <= 1.0 and math.isfinite(row["perplexity"])
    if row["extracted"] is not None:
        assert grade_row(resp.model_dump(), row["extracted"])["correct"] is True


def test_bench_same_items_table_and_plots(vllm_server, tmp_path):
    out = tmp_path / "bench"
    searches = ["none", "self_consistency", "cat"]
    proc = cat_eval("bench", "--dataset", "singleop", "--searches", ",".join(searches), "--k", "2",
                    "--limit", "3", "--max-tokens", "64", "--base-url", vllm_server.base_url,
                    "--model", vllm_server.model, "--concurrency", "3", "--out", str(out))

    md = (out / "bench.md").read_text()
    assert md in proc.stdout  # printed and written
    lines = md.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[first:]))  # the bench table
    assert "Paired on shared items" in md  # the paired table (eval.compare) follows it
    assert table[0].startswith("| strategy | n | acc | ECE | Brier | AUROC | tok/q | p50 s | p95 s |")
    assert "tok/SC" in table[0] and "p50/none" in table[0]
    assert [line.split("|")[1].strip() for line in table[2:]] == searches

    bench = json.loads((out / "bench.json").read_text())
    assert bench["k"] == 2 and bench["n_items"] == 3 and len(bench["item_ids"]) == 3
    by_name = {r["strategy"]: r for r in bench["table"]}
    assert by_name["self_consistency"]["tokens_vs_sc"] == pytest.approx(1.0)
    assert by_name["none"]["p50_vs_none"] == pytest.approx(1.0)
    for name in searches:
        rows = rows_of(out / name / "results.jsonl")
        assert sorted(r["id"] for r in rows) == sorted(bench["item_ids"])  # the SAME items
        for row in rows:
            assert_row_ok(row, name)
        summary = bench["summaries"][name]
        assert summary["n"] == 3 and summary["n_errors"] == 0 and summary["strategy"] == name
        assert_valid_png(out / name / "reliability.png")
    assert bench["summaries"]["self_consistency"]["search_params"] == {"n": 2, "return_candidates": True}
    assert bench["summaries"]["cat"]["search_params"] == {"branches": 2, "return_candidates": True}
    # candidates come back, so maj@k / mean@k are defined for the sampling strategy
    sc = bench["summaries"]["self_consistency"]
    assert 0.0 <= sc["maj@k"] <= 1.0 and 0.0 <= sc["mean@k"] <= 1.0
    for row in rows_of(out / "self_consistency" / "results.jsonl"):
        assert row["search"]["params"]["n"] == 2
    assert_valid_png(out / "precision_coverage.png")
