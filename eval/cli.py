"""``cat-eval``: evaluate and benchmark cat-serve's search strategies over its OpenAI API.

  cat-eval run   --dataset singleop --search cat --search-params '{"branches": 4}' \\
                 --base-url http://127.0.0.1:8000/v1 --limit 100 --out runs/singleop-cat
  cat-eval bench --dataset gsm8k --searches none,self_consistency,cat --k 4 \\
                 --base-url http://127.0.0.1:8000/v1 --limit 200 --out runs/bench-gsm8k
  cat-eval report --out runs/singleop-cat     (recompute summary.json / plots from results.jsonl)
  cat-eval compare runs/bench-gsm8k/cat runs/bench-gsm8k/self_consistency
                 (paired accuracy difference, McNemar p, token / latency / ECE ratios; see eval/compare.py)
  cat-eval calibrate --dataset singleop --offset 100 --limit 90 --serve-model embedded --out runs/calibrate
                 (fit a calibration profile; see eval/calibrate.py)
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from cat_serve.files import DATA_ENV
from eval import bench, calibrate, datasets, runner


def add_common(p: argparse.ArgumentParser, *, base_url_required: bool = True) -> None:
    d = p.add_argument_group("dataset")
    d.add_argument("--dataset", required=True,
                   help="built-in name (" + ", ".join(datasets.builtin_specs())
                   + "), a JSONL path, or hf:NAME[:CONFIG][@SPLIT]")
    d.add_argument("--data-dir", default=None,
                   help=f"folder of the built-in JSONL files (default ${DATA_ENV} "
                        "or <repo>/../shared/data)")
    d.add_argument("--question-field", default=None)
    d.add_argument("--answer-field", default=None)
    d.add_argument("--id-field", default=None, help="default: <file stem>-<line index>")
    d.add_argument("--limit", type=int, default=None, help="evaluate a seeded subset of this size")
    d.add_argument("--seed", type=int, default=0, help="subset shuffle seed")
    d.add_argument("--offset", type=int, default=0,
                   help="skip the first OFFSET items of the seeded order (e.g. those a profile was fitted on)")

    s = p.add_argument_group("server")
    s.add_argument("--base-url", required=base_url_required, help="e.g. http://127.0.0.1:8000/v1")
    s.add_argument("--model", default=None, help="default: the first id of /v1/models")
    s.add_argument("--api-key", default="EMPTY")
    s.add_argument("--endpoint", choices=("chat", "completions"), default="chat")
    s.add_argument("--concurrency", type=int, default=8, help="requests in flight at most")
    s.add_argument("--max-tokens", type=int, default=512)
    s.add_argument("--temperature", type=float, default=None,
                   help=f"default: 0 for `none`, {runner.SAMPLING_TEMPERATURE} for other strategies")
    s.add_argument("--logprobs", action=argparse.BooleanOptionalAction, default=None,
                   help="request logprobs (default: only for search=none)")
    s.add_argument("--timeout", type=float, default=600.0, help="per-request timeout in seconds")
    p.add_argument("--out", required=True, type=Path, help="output folder (resumable)")
    p.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cat-eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    run_p = sub.add_parser("run", help="evaluate one strategy")
    add_common(run_p)
    run_p.add_argument("--search", default="none", help="one of " + ", ".join(bench.ALL_SEARCHES))
    run_p.add_argument("--search-params", type=json.loads, default={},
                       help='JSON object, e.g. \'{"n": 8}\'')

    bench_p = sub.add_parser("bench", help="compare strategies on the same items")
    add_common(bench_p)
    bench_p.add_argument("--searches", default=",".join(bench.ALL_SEARCHES))
    bench_p.add_argument("--k", type=int, default=4,
                         help="paths for sampling strategies (n), branches for cat")
    bench_p.add_argument("--search-params", type=json.loads, default={},
                         help='per-strategy overrides, e.g. \'{"cat": {"tau": 0.8}}\'')

    cal_p = sub.add_parser("calibrate", help="fit a calibration profile (raw score -> P(correct), CaT thresholds)")
    add_common(cal_p, base_url_required=False)
    cal_p.add_argument("--strategies", default=",".join(calibrate.STRATEGIES))
    cal_p.add_argument("--holdout", type=float, default=1 / 3, help="fraction of the items held out (the last ones)")
    cal_p.add_argument("--branching-rate", type=float, default=0.1,
                       help="CaT: fraction of steps whose confidence falls below confident_threshold")
    cal_p.add_argument("--tau-prune", type=float, default=0.05, help="CaT: largest share of correct paths tau may prune")
    cal_p.add_argument("--folds", type=int, default=5)
    cal_p.add_argument("--strategy-limits", default="",
                       help="per-strategy item counts, e.g. cat=120 (a cheap strategy gets more items; others --limit)")
    cal_p.add_argument("--profile", type=Path, default=None,
                       help="output JSON (default: the shipped profile for the embedded model, "
                            "<dir>/cat_calibration.json for a checkpoint dir)")
    cal_p.add_argument("--serve-model", default=None,
                       help="start `cat-serve --model M --calibration none` for the collection (then "
                            "--base-url is ignored); extra server flags via $CAT_SERVE_ARGS")
    cal_p.add_argument("--search-params", type=json.loads, default={},
                       help='collection params per strategy over the built-in ones, e.g. '
                            '\'{"cat": {"step_delimiters": ["\\n"]}, "rpc": {"n": 4}}\'; CaT\'s step_delimiters '
                            'are also written to the profile as a serving default')
    cal_p.add_argument("--evaluate-only", action="store_true",
                       help="print the held-out table of an existing --profile")

    cmp_p = sub.add_parser("compare", help="paired statistics of run A against run B on their shared items")
    cmp_p.add_argument("run_a", type=Path, help="a run folder (results.jsonl)")
    cmp_p.add_argument("run_b", type=Path)
    cmp_p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples by item (>= 2000)")
    cmp_p.add_argument("--seed", type=int, default=0)
    cmp_p.add_argument("--json", type=Path, default=None, help="also write the numbers here")

    report_p = sub.add_parser("report", help="recompute summary.json and plots of a run folder")
    report_p.add_argument("--out", required=True, type=Path)
    return parser


def load_items(args: argparse.Namespace) -> list[datasets.Item]:
    """``--limit`` items of the seeded order after the first ``--offset``."""
    offset = getattr(args, "offset", 0) or 0
    if offset and args.limit is None:
        raise SystemExit("--offset needs --limit")
    items = datasets.load_dataset(
        args.dataset, limit=None if args.limit is None else args.limit + offset, seed=args.seed,
        data_dir=args.data_dir, question_field=args.question_field, answer_field=args.answer_field,
        id_field=args.id_field,
    )
    return items[offset:]


def run_config(args: argparse.Namespace, *, search: str, search_params: dict) -> runner.RunConfig:
    return runner.RunConfig(
        base_url=args.base_url, out_dir=args.out, search=search, search_params=search_params,
        model=args.model, api_key=args.api_key, concurrency=args.concurrency,
        max_tokens=args.max_tokens, temperature=args.temperature, endpoint=args.endpoint,
        logprobs=args.logprobs, timeout_s=args.timeout, progress=not args.no_progress,
        dataset=args.dataset,
    )


def print_summary(summary: dict) -> None:
    keys = ("strategy", "n", "n_errors", "accuracy", "ece", "raw_ece", "brier", "auroc", "ppl_auc",
            "tokens_per_query", "latency_p50_s", "latency_p95_s", "n_requested", "n_resumed")
    print(json.dumps({k: summary.get(k) for k in keys}, indent=2))


def cmd_run(args: argparse.Namespace) -> int:
    if not isinstance(args.search_params, dict):
        raise SystemExit("--search-params must be a JSON object")
    items = load_items(args)
    summary = runner.run(run_config(args, search=args.search, search_params=args.search_params),
                         items)
    print_summary(summary)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    searches = [s.strip() for s in args.searches.split(",") if s.strip()]
    overrides = args.search_params
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
        raise SystemExit("--search-params for bench must map strategy -> JSON object")
    items = load_items(args)
    result = bench.bench(run_config(args, search="none", search_params={}), items, searches,
                         k=args.k, overrides=overrides)
    print(result["markdown"])
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    import os  # noqa: PLC0415
    import shlex  # noqa: PLC0415

    if not args.serve_model and not args.base_url and not args.evaluate_only:
        raise SystemExit("calibrate needs --base-url or --serve-model")
    profile_path = args.profile or calibrate.default_profile_path(args.serve_model or "")
    if args.evaluate_only:
        from cat_serve.calibration import CalibrationProfile  # noqa: PLC0415

        calibrate.print_evaluation(CalibrationProfile.load(profile_path))
        return 0
    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
    if not isinstance(args.search_params, dict) or not all(isinstance(v, dict) for v in args.search_params.values()):
        raise SystemExit("--search-params for calibrate must map strategy -> JSON object")
    asked = {k: int(v) for k, v in (kv.split("=") for kv in args.strategy_limits.split(",") if kv)}
    limits = {s: asked.get(s, args.limit) for s in strategies}  # None: all items
    if args.limit is not None and asked:
        args.limit = max([args.limit, *asked.values()])
    items = load_items(args)
    server = None
    if args.serve_model:
        server = calibrate.own_server(args.serve_model, args.out / "server.log",
                                      shlex.split(os.environ.get("CAT_SERVE_ARGS", "")))
        print(f"starting cat-serve --model {args.serve_model} (log {args.out / 'server.log'})", flush=True)
        calibrate.start_own_server(server)
        args.base_url = server.base_url
    try:
        cfg = calibrate.CalibrateConfig(
            base=run_config(args, search="none", search_params={}),
            strategies=strategies, strategy_limits=limits,
            holdout=args.holdout, branching_rate=args.branching_rate, tau_prune=args.tau_prune,
            folds=args.folds, command=calibrate.command_line(), search_params=args.search_params,
            dataset_spec={"dataset": args.dataset, "seed": args.seed, "offset": args.offset,
                          "limit": args.limit, "strategy_limits": limits, "holdout": args.holdout},
        )
        profile = calibrate.calibrate(cfg, items, profile_path)
    finally:
        if server is not None:
            server.stop()
    print(f"wrote {profile_path}")
    calibrate.print_evaluation(profile)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from eval import metrics, report  # noqa: PLC0415

    rows = list(runner.latest_by_id(runner.read_rows(args.out / runner.RESULTS)).values())
    summary_path = args.out / runner.SUMMARY
    old = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary = {**old, **metrics.summarize(rows)}
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    report.reliability_diagram_from_rows(rows, args.out / runner.RELIABILITY,
                                         title=str(old.get("strategy", "")))
    print_summary(summary)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from eval import compare  # noqa: PLC0415

    for d in (args.run_a, args.run_b):
        if not (d / runner.RESULTS).exists():
            raise SystemExit(f"{d} has no {runner.RESULTS}")
    c = compare.compare_runs(args.run_a, args.run_b, resamples=args.resamples, seed=args.seed)
    print(compare.render(str(args.run_a), str(args.run_b), c, resamples=args.resamples, seed=args.seed))
    if args.json:
        args.json.write_text(json.dumps(compare.as_json(c), indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    # SIGTERM as SystemExit, so `calibrate --serve-model` stops the server it started (its own process
    # group) instead of leaving vLLM running; finished rows are already on disk
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    args = build_parser().parse_args(argv)
    commands = {"run": cmd_run, "bench": cmd_bench, "calibrate": cmd_calibrate, "report": cmd_report,
                "compare": cmd_compare}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
