"""One evaluation run: items -> requests (bounded concurrency) -> graded JSONL rows -> summary.

Output of a run in ``out_dir``:
  ``results.jsonl``   one row per item, appended and flushed as each request finishes;
  ``summary.json``    all metrics (``eval.metrics.summarize``) plus the run's settings;
  ``reliability.png`` reliability diagram of the run's confidences.

Resuming: rows already in ``results.jsonl`` without an ``error`` are kept and their items are
not requested again; errored items are retried, and the latest row of an id wins.

Row schema: id, question, gold, output, extracted, correct, confidence, perplexity, tokens,
latency_s, finish_reason, search (the response's ``search`` object without candidates),
samples ([{answer, correct, score}] from ``search.candidates``), strategy, error.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cat_serve.files import read_jsonl
from cat_serve.prompts import EVAL_SUFFIX
from eval import metrics
from eval.datasets import Item
from eval.grading import grade_row

RESULTS = "results.jsonl"
SUMMARY = "summary.json"
RELIABILITY = "reliability.png"

SAMPLING_TEMPERATURE = 0.7  # default for every strategy but greedy `none`


@dataclass(frozen=True)
class RunConfig:
    base_url: str
    out_dir: Path
    search: str = "none"
    search_params: dict = field(default_factory=dict)
    model: str | None = None  # None: the first id of /v1/models
    api_key: str = "EMPTY"
    concurrency: int = 8
    max_tokens: int = 512
    temperature: float | None = None  # None: 0.0 for `none`, SAMPLING_TEMPERATURE otherwise
    top_p: float | None = None  # None: not sent (the server's default, 1)
    endpoint: str = "chat"  # "chat" | "completions"
    logprobs: bool | None = None  # None: only for `none` (its confidence/perplexity need them)
    timeout_s: float = 600.0
    progress: bool = True
    dataset: str = ""  # recorded in the summary only


def effective_temperature(cfg: RunConfig) -> float:
    if cfg.temperature is not None:
        return cfg.temperature
    return 0.0 if cfg.search == "none" else SAMPLING_TEMPERATURE


def wants_logprobs(cfg: RunConfig) -> bool:
    return cfg.search == "none" if cfg.logprobs is None else cfg.logprobs


def request_kwargs(cfg: RunConfig, model: str, question: str) -> dict:
    """Keyword arguments of ``client.chat.completions.create`` / ``client.completions.create``."""
    prompt = question + EVAL_SUFFIX
    extra = {"search": cfg.search}
    if cfg.search_params:
        extra["search_params"] = cfg.search_params
    kw = {"model": model, "max_tokens": cfg.max_tokens,
          "temperature": effective_temperature(cfg), "extra_body": extra}
    if cfg.top_p is not None:
        kw["top_p"] = cfg.top_p
    if cfg.endpoint == "chat":
        kw["messages"] = [{"role": "user", "content": prompt}]
        if wants_logprobs(cfg):
            kw["logprobs"] = True
    else:
        kw["prompt"] = prompt
        if wants_logprobs(cfg):
            kw["logprobs"] = 1
    return kw


def base_row(item: Item, strategy: str) -> dict:
    return {"id": item.id, "question": item.question, "gold": item.gold, "strategy": strategy}


async def query_item(client, cfg: RunConfig, model: str, item: Item) -> dict:
    """Request one item and grade it; any exception becomes the row's ``error``."""
    row = base_row(item, cfg.search)
    kw = request_kwargs(cfg, model, item.question)
    start = time.perf_counter()
    try:
        api = client.chat.completions if cfg.endpoint == "chat" else client.completions
        response = await api.create(**kw)
        row["latency_s"] = time.perf_counter() - start
        row.update(grade_row(response.model_dump(), item.gold, item.question))
        row["error"] = None
    except Exception as e:  # noqa: BLE001  (recorded in the row; the run goes on)
        row.update({"latency_s": time.perf_counter() - start, "correct": False,
                    "confidence": None, "error": f"{type(e).__name__}: {e}"})
    return row


def read_rows(path: Path) -> list[dict]:
    """Rows of a results file; a truncated last line (interrupted write) is ignored."""
    return read_jsonl(path, skip_invalid=True) if path.exists() else []


def latest_by_id(rows: Sequence[dict]) -> dict[str, dict]:
    return {r["id"]: r for r in rows}


def done_ids(rows: Sequence[dict]) -> set[str]:
    return {i for i, r in latest_by_id(rows).items() if not r.get("error")}


async def resolve_model(client, model: str | None) -> str:
    if model:
        return model
    page = await client.models.list()
    return page.data[0].id


def append_row(f, row: dict) -> None:
    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    f.flush()


def make_client(cfg: RunConfig):
    from openai import AsyncOpenAI  # noqa: PLC0415

    return AsyncOpenAI(base_url=cfg.base_url, api_key=cfg.api_key,
                       timeout=cfg.timeout_s, max_retries=1)


def progress_bar(cfg: RunConfig, total: int):
    from tqdm.auto import tqdm  # noqa: PLC0415

    return tqdm(total=total, desc=cfg.search, unit="item", disable=not cfg.progress or total == 0)


async def request_pending(cfg: RunConfig, pending: Sequence[Item], results_path: Path) -> tuple[list[dict], str | None]:
    """Query every pending item with at most ``cfg.concurrency`` in flight; rows are appended."""
    if not pending:
        return [], cfg.model
    client = make_client(cfg)
    try:
        model = await resolve_model(client, cfg.model)
        sem = asyncio.Semaphore(max(cfg.concurrency, 1))

        async def bounded(item: Item) -> dict:
            async with sem:
                return await query_item(client, cfg, model, item)

        new_rows: list[dict] = []
        bar = progress_bar(cfg, len(pending))
        with open(results_path, "a", encoding="utf-8") as f:
            for next_done in asyncio.as_completed([bounded(it) for it in pending]):
                row = await next_done
                append_row(f, row)
                new_rows.append(row)
                bar.update(1)
                n_ok = sum(bool(r.get("correct")) for r in new_rows)
                bar.set_postfix(acc=f"{n_ok / len(new_rows):.3f}",
                                err=sum(1 for r in new_rows if r.get("error")), refresh=False)
        bar.close()
        return new_rows, model
    finally:
        await client.close()


def run_summary(cfg: RunConfig, model: str | None, rows: Sequence[dict], new_rows: Sequence[dict],
                wall_time_s: float) -> dict:
    ok_new = [r for r in new_rows if not r.get("error")]
    # throughput of THIS invocation (resumed rows were produced by an earlier one)
    rate = metrics.throughput(len(ok_new), sum(r.get("tokens") or 0 for r in ok_new), wall_time_s)
    if not new_rows:
        rate = {"items_per_s": None, "tokens_per_s": None}
    return {
        "dataset": cfg.dataset, "strategy": cfg.search, "search_params": cfg.search_params,
        "model": model, "temperature": effective_temperature(cfg), "max_tokens": cfg.max_tokens,
        **({"top_p": cfg.top_p} if cfg.top_p is not None else {}),
        "n_requested": len(new_rows), "n_resumed": len(rows) - len(new_rows),
        **metrics.summarize(rows),
        "wall_time_s": wall_time_s,
        **rate,
    }


async def run_async(cfg: RunConfig, items: Sequence[Item]) -> dict:
    """Run (or resume) ``items``; returns the summary, also written to ``out_dir``."""
    from eval import report  # noqa: PLC0415  (matplotlib only when a run finishes)

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / RESULTS
    done = done_ids(read_rows(results_path))
    pending = [it for it in items if it.id not in done]

    start = time.perf_counter()
    new_rows, model = await request_pending(cfg, pending, results_path)
    wall = time.perf_counter() - start

    latest = latest_by_id(read_rows(results_path))
    rows = [latest[it.id] for it in items if it.id in latest]  # this run's items only
    summary = run_summary(cfg, model, rows, new_rows, wall)
    stored = read_summary(out)
    if not new_rows and stored and stored.get("n") == summary.get("n"):
        # nothing was run: the stored summary (the model, wall time and throughput of the invocation
        # that ran these rows) stays; the return value describes this invocation
        return summary
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    report.reliability_diagram_from_rows(rows, out / RELIABILITY, title=f"{cfg.dataset} / {cfg.search}")
    return summary


def read_summary(out: Path) -> dict | None:
    try:
        return json.loads((out / SUMMARY).read_text())
    except (OSError, ValueError):
        return None


def run(cfg: RunConfig, items: Sequence[Item]) -> dict:
    return asyncio.run(run_async(cfg, items))
