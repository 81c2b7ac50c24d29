"""The lab's fixed recipes and one-command drivers (``make lab-sft``, ``make lab-search``).

    python -m lab.recipe sft       # train (or resume, or skip when cached) the SFT checkpoint
    python -m lab.recipe path      # print the cached SFT checkpoint's path (make serve MODEL=$(...))
    python -m lab.recipe search --split dev|test [--k 4 8] [--limit N]   # serve it, run lab.search

The SFT checkpoint lives in ``$CAT_SERVE_CACHE`` (default ``~/.cache/cat-serve``) under
``lab/sft-<hash of the recipe>``, so a changed recipe never reuses a stale checkpoint. Its training
runs through ``cat-train sft --resume``: an interrupted run continues from its last checkpoint
(every ``save_steps``). Wall and CPU seconds of every training segment are appended to
``lab/results/sft/segments.jsonl``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from cat_serve.calibration import PROFILE_FILE  # <model dir>/cat_calibration.json: served automatically
from cat_serve.process import ServerProcess

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("LAB_RESULTS", REPO / "lab" / "results"))  # tests and smoke runs point it elsewhere

# Training mixture: five difficulties interleaved, so the model sees every one from the first batch on.
# The evaluation difficulty (LAB_DIFFICULTY) is chosen afterwards on the dev split.
SFT_MIX = ("arith:ops=2,digits=1|arith:ops=2,digits=2,distractors=1|arith:ops=3,digits=1,distractors=1"
           "|arith:ops=3,digits=2|arith:ops=4,digits=2,distractors=1")
SFT_RECIPE = {
    "model": "embedded", "data_path": SFT_MIX, "limit": 4000, "max_steps": 45, "batch_size": 8, "gradient_accumulation_steps": 2,
    "learning_rate": 2e-4, "lr_scheduler_type": "constant_with_warmup", "warmup_steps": 10,
    "prompt_style": "both", "max_length": 256, "save_steps": 5, "seed": 0,
}
# chosen on dev (lab/results/sft/dev_difficulty.json); the test split is run once with it
LAB_DIFFICULTY = "ops=3,digits=1,distractors=1"


def record_segment(kind: str, t0: float, **extra) -> None:
    """Append this invocation's command, start and wall time (and ``extra``) to
    lab/results/<kind>/segments.jsonl, ``kind`` e.g. "search" or "rl/capo" (a resumed experiment appends a
    second segment; the report sums them)."""
    (RESULTS / kind).mkdir(parents=True, exist_ok=True)
    row = {"command": "python -m lab.recipe " + " ".join(sys.argv[1:]), "wall_s": round(time.time() - t0, 1),
           "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)), **extra}
    with open(RESULTS / kind / "segments.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def run_child(cmd: list[str], *, timeout: float = 120, **kw) -> None:
    """``subprocess.run(cmd, check=True)``, except that an interrupt of this process (SIGTERM arrives here as
    SystemExit, see ``main``) is passed on as SIGTERM, so the child (eval.cli, training.cli) stops its own
    server or saves its state; SIGKILL only after ``timeout`` s. subprocess.run would SIGKILL it at once and
    could orphan the vLLM server it started."""
    proc = subprocess.Popen(cmd, **kw)
    try:
        rc = proc.wait()
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    if rc:
        raise subprocess.CalledProcessError(rc, cmd)


def cache_root() -> Path:
    return Path(os.environ.get("CAT_SERVE_CACHE", Path.home() / ".cache" / "cat-serve")) / "lab"


def recipe_hash(recipe: dict) -> str:
    """Hash of everything but ``max_steps`` and ``save_steps``: with a constant learning rate after warm-up a
    shorter run is the exact prefix of a longer one, so raising ``max_steps`` resumes the cached run."""
    key = {k: v for k, v in recipe.items() if k not in ("max_steps", "save_steps")}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]


def sft_dir(recipe: dict = SFT_RECIPE) -> Path:
    return cache_root() / f"sft-{recipe_hash(recipe)}"


def sft_argv(recipe: dict, output_dir: Path) -> list[str]:
    from training.models import EMBEDDED

    model = recipe["model"]
    if model == EMBEDDED:
        from cat_serve.models import ensure_embedded_model  # noqa: PLC0415

        model = str(ensure_embedded_model())
    argv = ["sft", "--output-dir", str(output_dir), "--resume", "--model", model]
    for key, value in recipe.items():
        if key != "model":
            argv += ["--" + key.replace("_", "-"), str(value)]
    return argv


def trained_steps(path: Path) -> int:
    from training.checkpoint import is_checkpoint, read_state

    return read_state(path)["step"] if is_checkpoint(path) else 0


def train_sft(recipe: dict = SFT_RECIPE) -> Path:
    out = sft_dir(recipe)
    done = trained_steps(out)
    if done >= recipe["max_steps"]:
        print(f"cached: {out} (step {done})")
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "training.cli", *sft_argv(recipe, out)]
    print(" ".join(cmd), flush=True)
    t0, r0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    run_child(cmd, cwd=REPO)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    record_segment("sft", t0, recipe=recipe_hash(recipe), from_step=done, to_step=trained_steps(out),
                   cpu_s=round(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, 1), cpus=os.cpu_count())
    return out


# The lab model's calibration profile (issue #9 item 4): dev items 100.. (lab-search-dev uses dev items 0-99 of the
# same seeded order, lab-search the test split), every sampling strategy at n = 4 (the lab's K), CaT steps = lines
# (DeepConf on all 400 remaining dev items, 133 held out, missed the target too and was not adopted:
# lab/results/calibration/deepconf400/)
CALIBRATE_ARGS = ["--seed", "0", "--offset", "100", "--limit", "300", "--max-tokens", "160", "--concurrency", "16",
                  "--search-params", json.dumps({"cat": {"branches": 4, "step_delimiters": ["\n"]},
                                                 **{s: {"n": 4} for s in ("self_consistency", "ppl_consistency",
                                                                          "rpc", "deepconf")}})]


# The same collection on 1000 dev items of a larger dev set (n=1200: its first 500 are the dev split above, in
# another seeded order), 333 held out: the 300-item profile's verdict turned on the split (python -m
# lab.calib_check). Its profile is written beside the results, not into the checkpoint, so the served profile
# of the search experiments stays the one they ran with. Rows of runs/ whose items recur are reused (same
# collection settings).
LARGE_DATASET = f"arith:{LAB_DIFFICULTY},n=1200@dev"
LARGE_ARGS = [*CALIBRATE_ARGS[:2], "--offset", "0", "--limit", "1000", *CALIBRATE_ARGS[6:]]
# --fresh: the remaining 200 items of LARGE_DATASET, collected the same way into large/fresh/ and scored by the
# large profile's maps (python -m lab.calib_check --large): more held-out items for the same fixed maps
FRESH_ARGS = [*CALIBRATE_ARGS[:2], "--offset", "1000", "--limit", "200", *CALIBRATE_ARGS[6:]]


def calibrate_lab(model: Path | None = None, *, large: bool = False, strategies: str | None = None,
                  fresh: bool = False) -> Path:
    """``cat-eval calibrate`` of the SFT model (resumable runs under lab/results/calibration/runs); the
    profile goes to <model>/cat_calibration.json (served automatically) and lab/results/calibration/.
    ``large``: LARGE_DATASET, runs and profile under lab/results/calibration/large/. ``fresh``: FRESH_ARGS'
    items collected into large/fresh/ (the profile cat-eval fits on them is not a result and is removed)."""
    model = model or train_sft()
    out = RESULTS / "calibration"
    if fresh:
        runs, extra = out / "large" / "fresh", list(FRESH_ARGS)
        profile = runs / "partial-profile.json"
    elif large:
        runs, profile, extra = out / "large" / "runs", out / "large" / "profile.json", list(LARGE_ARGS)
        for old in (out / "runs").glob("*/results.jsonl"):
            dest = runs / old.parent.name / old.name
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(old, dest)
    else:
        runs, profile, extra = out / "runs", model / PROFILE_FILE, list(CALIBRATE_ARGS)
    if strategies:  # collect these only (two processes can split the strategies, one server each); the profile
        # is fitted by a run without --strategies, which finds every row collected and only fits
        extra += ["--strategies", strategies]
        profile = profile if fresh else runs.parent / f"partial-{strategies.replace(',', '+')}.json"
    extra += ["--profile", str(profile)]
    dataset = LARGE_DATASET if large or fresh else f"arith:{LAB_DIFFICULTY}@dev"
    cmd = [sys.executable, "-m", "eval.cli", "calibrate", "--serve-model", str(model), "--no-progress",
           "--dataset", dataset, *extra, "--out", str(runs)]
    print(" ".join(cmd), flush=True)
    env = {**os.environ, "CAT_SERVE_ARGS": os.environ.get("CAT_SERVE_ARGS", "--kv-cache-gib 2 --max-model-len 1024")}
    t0 = time.time()
    run_child(cmd, cwd=REPO, env=env)
    if strategies or fresh:
        profile.unlink(missing_ok=True)  # a partial profile (or one fitted on the fresh items) is not a result
    elif not large:
        (out / "sft_profile.json").write_text(profile.read_text())
    record_segment("calibration", t0, **({"large": True} if large else {}), **({"fresh": True} if fresh else {}),
                   **({"strategies": strategies} if strategies else {}))
    return profile


# RL (issue item 3b): the same seed, steps, group size, prompts and dev set for every objective.
# Measured here (2 cores, a vLLM server beside it): 2 prompts x 8 took 80 s per step and a dev evaluation
# (32 x 8 samples) 204 s, about 70 min per objective; one prompt x 8 per step and an evaluation every 10
# steps halve that. Arith solutions are ~35 tokens, so 64 new tokens cut nothing but runaway samples.
RL_RECIPE = {
    "group_size": 8, "prompts_per_step": 1, "max_steps": 40, "learning_rate": 1e-5, "temperature": 1.0,
    "max_new_tokens": 64, "seed": 0, "save_steps": 5, "limit": 2000,
    "eval_limit": 32, "eval_samples": 8, "eval_every": 10,
}
OBJECTIVES = ("grpo", "gspo", "capo", "c2gspg")


def rl_dir(objective: str, recipe: dict = RL_RECIPE) -> Path:
    return cache_root() / f"rl-{objective}-{recipe_hash({**recipe, 'sft': recipe_hash(SFT_RECIPE)})}"


def train_rl(objective: str, *, model: Path | None = None, overrides: dict | None = None,
             out: Path | None = None) -> Path:
    """``cat-train rl --resume`` from the SFT checkpoint on arith train (the lab difficulty), dev curves on
    ``eval_limit`` dev questions; per-step and dev rows copied to lab/results/rl/<objective>/metrics.jsonl."""
    from training.checkpoint import read_metrics

    recipe = {**RL_RECIPE, **(overrides or {})}
    out = out or rl_dir(objective, recipe)
    model = model or train_sft()
    argv = ["rl", "--objective", objective, "--model", str(model), "--output-dir", str(out), "--resume",
            "--data-path", f"arith:{LAB_DIFFICULTY}@train", "--eval-data-path", f"arith:{LAB_DIFFICULTY}@dev"]
    for key, value in recipe.items():
        argv += ["--" + key.replace("_", "-"), str(value)]
    t0 = time.time()
    run_child([sys.executable, "-m", "training.cli", *argv], cwd=REPO)
    dest = RESULTS / "rl" / objective
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / "metrics.jsonl", "w") as f:
        for row in read_metrics(out):
            f.write(json.dumps(row) + "\n")
    record_segment(f"rl/{objective}", t0, recipe=recipe, model=str(model))
    return out


RL_CURVES = (("reward", "train reward"), ("entropy", "token entropy"), ("dev_accuracy", "dev accuracy"),
             ("dev_ece", "dev ECE of exp(mean logprob)"), ("dev_auc_mean", "dev AUC-mean"))


def plot_rl(results: Path | None = None) -> list[Path]:
    """One PNG per metric with every objective that has results."""
    results = results or RESULTS / "rl"
    from eval.report import _pyplot

    plt = _pyplot()
    runs = {}
    for obj in OBJECTIVES:
        f = results / obj / "metrics.jsonl"
        if f.exists():
            runs[obj] = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    paths = []
    for key, title in RL_CURVES:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for obj, rows in runs.items():
            xs = [(r.get("step", r.get("eval_step")), r[key]) for r in rows if r.get(key) is not None]
            if xs:
                ax.plot(*zip(*xs), marker="o" if key.startswith("dev_") else None, ms=3, label=obj)
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = results / f"{key}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


# CASPO (issue item 3c): two rounds from SFT, on-policy contexts (Eq. 1), the exact arith critic as judge
CASPO_RECIPE = {"rounds": 2, "limit": 64, "max_steps": 20, "candidates_per_step": 4, "learning_rate": 1e-5,
                "max_step_tokens": 32, "seed": 0}


def caspo_dir(recipe: dict = CASPO_RECIPE) -> Path:
    return cache_root() / f"caspo-{recipe_hash({**recipe, 'sft': recipe_hash(SFT_RECIPE)})}"


def train_caspo(*, model: Path | None = None, overrides: dict | None = None, out: Path | None = None) -> Path:
    from training.checkpoint import is_checkpoint, read_state

    recipe = {**CASPO_RECIPE, **(overrides or {})}
    out = out or caspo_dir(recipe)
    if is_checkpoint(out) and read_state(out).get("round", 0) >= recipe["rounds"]:
        return out
    model = model or train_sft()
    argv = ["caspo", "--model", str(model), "--output-dir", str(out), "--resume", "--judge", "arith",
            "--contexts", "on_policy", "--data-path", f"arith:{LAB_DIFFICULTY}@train"]
    for key, value in recipe.items():
        argv += ["--" + key.replace("_", "-"), str(value)]
    run_child([sys.executable, "-m", "training.cli", *argv], cwd=REPO)
    return out


def caspo_experiment(split: str, *, limit: int = 64, model: Path | None = None, overrides: dict | None = None,
                     out: Path | None = None) -> dict:
    """Train CASPO (cached), then step-level calibration of SFT and CASPO on the same split."""
    t0 = time.time()
    sft = model or train_sft()
    caspo = train_caspo(model=sft, overrides=overrides, out=out)
    train = RESULTS / "caspo" / "train"  # the rounds' metrics and preference pairs, beside the results
    train.mkdir(parents=True, exist_ok=True)
    for f in (caspo / "metrics.jsonl", *sorted(caspo.glob("pairs_round*.jsonl"))):
        shutil.copyfile(f, train / f.name)
    spec = f"arith:{LAB_DIFFICULTY}@{split}"
    result = {}
    for name, ckpt in (("sft", sft), ("caspo", caspo)):
        dest = RESULTS / "caspo" / f"{name}_{split}"
        run_child([sys.executable, "-m", "lab.steps", "--model", str(ckpt), "--spec", spec, "--limit", str(limit),
                   "--out", str(dest)], cwd=REPO)
        result[name] = json.loads((dest / "summary.json").read_text())
    (RESULTS / "caspo" / f"compare_{split}.json").write_text(json.dumps(result, indent=2) + "\n")
    record_segment("caspo", t0)
    return result


# PC@K and CaT in the product's mode (stream, with the dev sweep's settings): ~20 min per model here. The
# faithful mode (~100 s an item) and adaptive would make it ~4 h for three models.
TRANSFER_STRATEGIES = ("PC", "CaT-stream")


TRANSFER_MODELS = ("sft", "caspo", "capo", "grpo")  # GRPO: the control, RL's accuracy without CAPO's calibration term


def transfer_compare(split: str, k: int) -> dict:
    """{model: {strategy: headline numbers}} from every model's finished table under lab/results/transfer/."""
    keys = ("accuracy", "acc_lo95", "acc_hi95", "tokens_per_query", "ece", "auroc")
    result = {}
    for name in TRANSFER_MODELS:
        table = RESULTS / "transfer" / name / f"{split}-k{k}" / "table.json"
        if table.exists():
            result[name] = {r["strategy"]: {key: r.get(key) for key in keys} for r in json.loads(table.read_text())}
    return result


def transfer(split: str, *, k: int = 4, limit: int = 300, only_models: tuple[str, ...] = TRANSFER_MODELS) -> dict:
    """Calibration -> search (issue item 3d): PC@K and CaT-stream on the SFT, CASPO and CAPO checkpoints (and
    GRPO's, as the control), same items; each model's runs under lab/results/transfer/<model>/, the side-by-side in compare_<split>.json."""
    from lab.search import run_search
    from training.checkpoint import is_checkpoint

    t0 = time.time()
    sft = train_sft()
    models = {"sft": sft, "caspo": caspo_dir(), "capo": rl_dir("capo"), "grpo": rl_dir("grpo")}
    models = {name: path for name, path in models.items() if name in only_models}
    # every model searches with the SFT profile's CaT settings and reports its raw confidence (no map), so
    # the three differ only in their weights
    profile = json.loads((sft / PROFILE_FILE).read_text())
    cat_params = {k: v for k, v in profile["search_defaults"].get("cat", {}).items() if k != "aggregation"}
    by_mode = chosen_by_mode()  # the dev sweep's stream settings, as in make lab-search
    for name, path in models.items():
        if not is_checkpoint(path):
            print(f"skip {name}: no checkpoint at {path} (run make lab-caspo / make lab-rl OBJECTIVE=capo)")
            continue
        out = RESULTS / "transfer" / name
        with served(path, log=out / f"server-{split}.log", extra=("--calibration", "none")) as base_url:
            run_search(base_url, split=split, k=k, limit=limit, out=out, difficulty=LAB_DIFFICULTY,
                       only=list(TRANSFER_STRATEGIES), cat_params=cat_params, by_mode=by_mode,
                       concurrency=SEARCH_CONCURRENCY)
    result = transfer_compare(split, k)  # with the models another `--models` run finished
    (RESULTS / "transfer").mkdir(parents=True, exist_ok=True)
    (RESULTS / "transfer" / f"compare_{split}.json").write_text(json.dumps(result, indent=2) + "\n")
    record_segment("transfer", t0)
    return result


RUN_LAST = ("CaT-faithful",)  # one engine call per step and branch: the slowest by far (~100 s an item at K=4)


def search_labels() -> list[str]:
    """Strategy labels without @K, cheapest first (lab.search.strategies' order)."""
    from lab.search import strategies

    return [label.split("@")[0] for label, _, _ in strategies(4)]


def search_plan(labels: list[str], ks: list[int]) -> list[tuple[int, list[str]]]:
    """(K, labels) in run order: every K's cheaper strategies first, then RUN_LAST's for every K, so an
    interrupted test run has the most strategies finished."""
    cheap, last = [x for x in labels if x not in RUN_LAST], [x for x in labels if x in RUN_LAST]
    return [(k, group) for group in (cheap, last) if group for k in ks]


SEARCH_CONCURRENCY = 8  # requests in flight: the same for every strategy, so latencies compare
# The dev sweep of CaT's settings (make lab-search-dev): confident_threshold at these quantiles of the profile's
# step confidences (the share of steps that branch), stream with its trunk sampled or greedy (trunk_temperature
# 0), and adaptive with beam 1 at the 10 % quantile. TOKEN_TARGET is the product's cost target (x SC@K's tokens).
SWEEP_RATES = (0.1, 0.25)
TOKEN_TARGET = 0.35


def sweep_variants(profile: dict) -> list[tuple[str, str, dict]]:
    """(name, mode, CaT params) of the dev sweep, from the profile's fitted step-confidence quantiles."""
    q = profile["provenance"]["cat_threshold_fit"]["cat"]["step_confidence_quantiles"]
    out = []
    for rate in SWEEP_RATES:
        thr = q[str(rate)]
        out.append((f"stream-b{rate}", "stream", {"confident_threshold": thr}))
        out.append((f"stream-t0-b{rate}", "stream", {"confident_threshold": thr, "trunk_temperature": 0.0}))
    # adaptive asks one request per step and branch: one setting only (2 cores)
    out.append(("adaptive1-b0.1", "adaptive", {"confident_threshold": q["0.1"], "beam": 1}))
    return out


def choose(variants: list[dict], target: float = TOKEN_TARGET) -> dict:
    """Per mode: the most accurate variant within ``target`` x SC's tokens (ties: fewer tokens); when none
    is within it, the cheapest. ``variants``: rows with mode, params, accuracy, tokens_vs_sc."""
    chosen = {}
    for mode in sorted({v["mode"] for v in variants}):
        mine = [v for v in variants if v["mode"] == mode and v.get("tokens_vs_sc") is not None]
        within = [v for v in mine if v["tokens_vs_sc"] <= target]
        best = (max(within, key=lambda v: (v["accuracy"], -v["tokens_vs_sc"])) if within
                else min(mine, key=lambda v: v["tokens_vs_sc"]))
        chosen[mode] = {"name": best["name"], "params": best["params"], "within_target": bool(within),
                        "accuracy": best["accuracy"], "tokens_vs_sc": best["tokens_vs_sc"]}
    return chosen


def dev_sweep(base_url: str, model: Path, *, k: int = 4, limit: int = 100) -> dict:
    """greedy and SC@K, then every sweep variant of CaT, on dev items 0..limit-1 (the calibration profile was
    fitted on dev items 100-399); writes search/dev-sweep/chosen.json, which make lab-search reads."""
    from lab.search import run_search

    profile = json.loads((model / PROFILE_FILE).read_text())
    out = RESULTS / "search" / "dev-sweep"
    base = {r["strategy"]: r for r in run_search(base_url, split="dev", k=k, limit=limit, out=out / "baselines",
                                                 only=["greedy", "SC"], concurrency=SEARCH_CONCURRENCY)}
    sc_tokens = base[f"SC@{k}"]["tokens_per_query"]
    variants = []
    for name, mode, params in sweep_variants(profile):
        [row] = run_search(base_url, split="dev", k=k, limit=limit, out=out / name, only=[f"CaT-{mode}"],
                           by_mode={mode: params}, concurrency=SEARCH_CONCURRENCY)
        variants.append({"name": name, "mode": mode, "params": params, "accuracy": row["accuracy"],
                         "tokens_per_query": row["tokens_per_query"], "tokens_vs_sc": row["tokens_per_query"] / sc_tokens,
                         "latency_p50_s": row["latency_p50_s"]})
    result = {"k": k, "limit": limit, "baselines": {s: {"accuracy": r["accuracy"], "tokens_per_query": r["tokens_per_query"],
                                                          "latency_p50_s": r["latency_p50_s"]} for s, r in base.items()},
              "variants": variants, "chosen": choose(variants), "rule": f"per mode: most accurate within "
              f"{TOKEN_TARGET}x SC@{k}'s tokens (ties: fewer tokens), else the cheapest"}
    (out / "chosen.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def chosen_by_mode() -> dict:
    """The dev sweep's per-mode CaT settings ({} before make lab-search-dev)."""
    f = RESULTS / "search" / "dev-sweep" / "chosen.json"
    return {m: c["params"] for m, c in json.loads(f.read_text())["chosen"].items()} if f.exists() else {}


@contextmanager
def served(model: Path, *, log: Path, timeout: float = 900, extra: tuple[str, ...] = ()):
    """A cat-serve (vLLM, 1 GiB KV cache) on ``model``; yields its /v1 base URL; its process group is stopped
    on exit, and by a failed or interrupted start (``cat_serve.process``)."""
    args = ["--model", str(model), "--engine", "vllm", "--kv-cache-gib", "1", "--max-model-len", "1024", *extra]
    with ServerProcess.cat_serve(args, log=log, cwd=REPO, stop_timeout=60).start(timeout) as server:
        yield server.base_url


# `make lab-all`: the whole lab in order (issue #10's "<= 4 h in total"), every step resuming; the settings the
# test split runs with are chosen by the dev sweep before it. lab-calibrate-large is issue #9's check, not here.
ALL_STEPS = (["sft"], ["calibrate"], ["search", "--split", "dev", "--k", "4", "--limit", "100"],
             ["search", "--split", "test", "--k", "4", "8", "--limit", "300"],
             *(["rl", "--objective", o] for o in OBJECTIVES), ["caspo", "--split", "dev"], ["caspo", "--split", "test"],
             ["transfer", "--split", "test", "--k", "4", "--limit", "300"])


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


def exit_on_sigterm() -> None:
    """SIGTERM as SystemExit: `served` stops its cat-serve, `run_child` passes it on, and an interrupted
    search records its segment."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


def main(argv=None) -> int:
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    r = sub.add_parser("rl")
    r.add_argument("--objective", choices=OBJECTIVES, required=True)
    r.add_argument("--model", default=None, help="default: the cached SFT checkpoint")
    r.add_argument("--set", default="{}", help="JSON overrides of RL_RECIPE (smoke tests)")
    r.add_argument("--out", default=None)
    sub.add_parser("rl-plot")
    t = sub.add_parser("transfer")
    t.add_argument("--split", choices=("dev", "test"), default="test")
    t.add_argument("--k", type=int, default=4)
    t.add_argument("--limit", type=int, default=300)
    t.add_argument("--models", default=",".join(TRANSFER_MODELS), help="a subset, e.g. capo (two processes can split them)")
    c = sub.add_parser("caspo")
    c.add_argument("--split", choices=("dev", "test"), default="dev")
    c.add_argument("--limit", type=int, default=64)
    c.add_argument("--model", default=None, help="default: the cached SFT checkpoint")
    c.add_argument("--set", default="{}", help="JSON overrides of CASPO_RECIPE (smoke tests)")
    c.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.cmd == "rl":
        print(train_rl(args.objective, model=Path(args.model) if args.model else None,
                       overrides=json.loads(args.set), out=Path(args.out) if args.out else None))
        plot_rl()
        return 0
    if args.cmd == "caspo":
        print(json.dumps(caspo_experiment(args.split, limit=args.limit, model=Path(args.model) if args.model else None,
                                          overrides=json.loads(args.set), out=Path(args.out) if args.out else None)))
        return 0
    if args.cmd == "transfer":
        print(json.dumps(transfer(args.split, k=args.k, limit=args.limit, only_models=tuple(args.models.split(","))),
                         indent=2))
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
    from lab.search import run_search

    t0 = time.time()
    model = Path(args.model) if args.model else train_sft()
    if not (model / PROFILE_FILE).exists():
        raise SystemExit(f"no calibration profile in {model}: run make lab-calibrate first")
    finished = False
    try:
        with served(model, log=RESULTS / "search" / f"server-{args.split}.log") as base_url:
            if args.split == "dev":  # choose CaT's settings (the test split never is)
                print(json.dumps(dev_sweep(base_url, model, k=args.k[0], limit=args.limit)["chosen"], indent=2))
            else:
                labels = args.only.split(",") if args.only else search_labels()
                for k, only in search_plan(labels, args.k):
                    run_search(base_url, split=args.split, k=k, limit=args.limit, out=RESULTS / "search",
                               difficulty=LAB_DIFFICULTY, only=only, cat_params=json.loads(args.cat_params),
                               concurrency=args.concurrency, by_mode=chosen_by_mode())
        finished = True
    finally:
        record_segment("search", t0, split=args.split, **({} if finished else {"interrupted": True}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
