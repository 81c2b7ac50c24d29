"""``cat-eval calibrate``: fit a calibration profile (``cat_serve/calibration.py``) for one model.

1. Collect labelled runs, one per strategy, through the server with calibration off (each row keeps
   the strategy's raw score); runs are ``eval.runner`` folders, so an interrupted collection resumes.
2. Split each strategy's items by position into a fit split and a held-out split (disjoint; the
   last third is held out). ``--strategy-limits cat=120`` gives a cheap strategy more items.
3. Per strategy, fit a map raw score -> P(correct) on the fit split: isotonic regression, Platt
   scaling, the constant base rate or, where the strategy reports features (``search.features``: the
   voting strategies' vote share, distinct answers and distinct paths behind the answer), a logistic
   regression over (raw score, features) (scikit-learn), whichever has the lowest cross-validated
   log-loss (stratified k-fold).
4. CaT's step thresholds for this model, from the fit split's CaT paths:
   ``confident_threshold`` = the step-confidence quantile at the target branching rate (stream and
   adaptive modes branch at a step whose c is below it), and ``tau`` = the largest value that prunes
   at most ``tau_prune`` (5 %) of the correct answer paths (a path is tested against tau only while it
   holds no answer, so its lowest tested C is the product of all its step confidences but the last).
   With fewer than 20 correct paths (5 % of them would be no path at all) every answer path counts.
5. Evaluate raw vs calibrated ECE / Brier / AUROC on the held-out split; write the profile JSON with
   its provenance (dataset, items, model fingerprint, command) and that evaluation.

Fitting needs scikit-learn; serving the profile does not (numpy only).
"""

from __future__ import annotations

import datetime
import json
import math
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cat_serve.calibration import PROFILE_FILE, RAW, CalibrationProfile, ScoreMap, shipped_profile_path
from cat_serve.process import ServerProcess, ServerStartError
from eval import metrics, runner
from eval.datasets import Item

STRATEGIES = ("cat", "self_consistency", "ppl_consistency", "rpc", "deepconf")
# CaT is collected in the served default mode with pruning off (tau is then fitted from the paths)
# and with its candidate paths, whose step confidences set the thresholds.
COLLECT_PARAMS = {"cat": {"mode": "stream", "confident_threshold": 0.25, "tau": 0.0, "return_candidates": True}}
# collection params that shape the search itself (not a threshold being fitted): a profile fitted with them
# serves them as defaults too, so served requests look like the fitted ones (e.g. one CaT step per line)
CARRIED_PARAMS = {"cat": ("step_delimiters",)}
EPS = 1e-3  # predictions are clipped to [EPS, 1 - EPS] when scoring log-loss


# ---------------------------------------------------------------------- fitting (pure)
def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _fit_one(kind: str, x: np.ndarray, y: np.ndarray, feats: np.ndarray | None = None,
             names: Sequence[str] = ()) -> ScoreMap | None:
    """One candidate map fitted on (x, y) (``feats``: the logistic map's design matrix, columns ``names``);
    None when it cannot be fitted (one class only; a Platt slope < 0, which would not be monotone)."""
    if kind == "constant":  # the base rate, smoothed (Laplace) so that it is never 0 or 1
        rate = (y.sum() + 0.5) / (len(y) + 1.0)
        return ScoreMap("platt", a=0.0, b=float(math.log(rate / (1 - rate))))
    if len(np.unique(y)) < 2:
        return None
    if kind == "isotonic":
        from sklearn.isotonic import IsotonicRegression  # noqa: PLC0415

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(x, y)
        xs, ys = np.asarray(iso.X_thresholds_, float), np.clip(np.asarray(iso.y_thresholds_, float), 0, 1)
        if len(xs) == 1:
            return ScoreMap("platt", a=0.0, b=float(math.log(max(ys[0], EPS) / max(1 - ys[0], EPS))))
        return ScoreMap("isotonic", x=tuple(map(float, xs)), y=tuple(map(float, np.maximum.accumulate(ys))))
    if kind == "platt":
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

        lr = LogisticRegression(C=100.0).fit(x.reshape(-1, 1), y)
        a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        return ScoreMap("platt", a=a, b=b) if a >= 0 else None
    if kind == "logistic":  # standardised columns, sklearn's default L2 (C = 1); served by ScoreMap with numpy
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

        mean, scale = feats.mean(axis=0), feats.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        lr = LogisticRegression(C=1.0).fit((feats - mean) / scale, y)
        return ScoreMap("logistic", b=float(lr.intercept_[0]), features=tuple(names),
                        coef=tuple(map(float, lr.coef_[0])), mean=tuple(map(float, mean)),
                        scale=tuple(map(float, scale)))
    raise ValueError(kind)


def _predict(m: ScoreMap, x: np.ndarray, feats: Sequence[dict] | None = None) -> np.ndarray:
    return np.array([m(float(v), feats[i] if feats is not None else None) for i, v in enumerate(x)])


def feature_names(features: Sequence[dict] | None) -> tuple[str, ...]:
    """The logistic map's columns: the raw score, then every feature all rows report (sorted); () when the
    rows report none (no logistic candidate)."""
    if not features or not all(features):
        return ()
    common = set(features[0]).intersection(*features[1:])
    return (RAW, *sorted(common)) if common else ()


def fit_map(scores: Sequence[float], correct: Sequence[bool], features: Sequence[dict] | None = None, *,
            folds: int = 5, seed: int = 0) -> tuple[ScoreMap, dict]:
    """The candidate (isotonic, platt, constant, and logistic where ``features`` are given, one dict per
    score) with the lowest cross-validated log-loss, refitted on all of (scores, correct); plus a report of
    every candidate's CV log-loss."""
    x, y = np.asarray(scores, float), np.asarray(correct, float)
    if len(x) == 0:
        raise ValueError("no labelled scores to fit")
    names = feature_names(features)
    feats = (np.array([[float(s) if f == RAW else float(d[f]) for f in names] for s, d in zip(x, features)])
             if names else None)
    kinds = ("isotonic", "platt", "constant") + (("logistic",) if names else ())
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    k = min(folds, n_pos, n_neg)
    cv: dict[str, float | None] = {}
    if k >= 2:
        from sklearn.model_selection import StratifiedKFold  # noqa: PLC0415

        for kind in kinds:
            losses = []
            for tr, te in StratifiedKFold(k, shuffle=True, random_state=seed).split(x.reshape(-1, 1), y):
                m = _fit_one(kind, x[tr], y[tr], None if feats is None else feats[tr], names)
                if m is None:
                    losses = None
                    break
                held = None if feats is None else [features[i] for i in te]
                losses.append(_log_loss(y[te], _predict(m, x[te], held)) * len(te))
            cv[kind] = None if losses is None else sum(losses) / len(x)
        best = min((v, kind) for kind, v in cv.items() if v is not None)[1]
    else:  # fewer than 2 examples of a class: no cross-validation is possible; the base rate
        best = "constant"
    chosen = _fit_one(best, x, y, feats, names) or _fit_one("constant", x, y)
    return chosen, {"chosen": best, "cv_log_loss": cv, "folds": k if k >= 2 else 0,
                    "n": len(x), "n_correct": n_pos, **({"features": list(names)} if names else {})}


def cat_thresholds(rows: Sequence[dict], *, branching_rate: float, tau_prune: float = 0.05,
                   min_correct: int = 20) -> dict:
    """CaT's ``confident_threshold`` and ``tau`` from graded CaT rows with candidates (see module doc)."""
    samples = [s for r in rows for s in (r.get("samples") or []) if s.get("step_confidences")]
    steps = np.array([c for s in samples for c in s["step_confidences"]], float)
    if steps.size == 0:
        raise ValueError("no CaT step confidences in the fit rows (collect with return_candidates)")
    # a step branches when c < threshold: the branching_rate quantile makes that fraction branch
    threshold = float(np.quantile(steps, branching_rate))

    def lowest_tested_c(s: dict) -> float:  # C before the answer step: the last C tested against tau
        return float(np.prod(s["step_confidences"][:-1])) if len(s["step_confidences"]) > 1 else 1.0

    values = sorted(lowest_tested_c(s) for s in samples if s.get("correct"))
    basis = "correct answer paths"
    if len(values) < min_correct:  # 5 % of fewer than 20 paths is no path: the minimum of a handful
        # of paths would be a guess, so the (lower, hence safer) C of every answer path stands in
        values = sorted(lowest_tested_c(s) for s in samples)
        basis = f"all answer paths (fewer than {min_correct} correct paths)"
    allowed = math.floor(tau_prune * len(values) + 1e-9)  # paths with C < values[allowed] are pruned
    tau = float(values[allowed])
    return {
        "confident_threshold": round(threshold, 6), "tau": round(tau, 8), "aggregation": "entropy",
        "fit": {"branching_rate": branching_rate, "n_steps": int(steps.size),
                "step_confidence_quantiles": {q: round(float(np.quantile(steps, q)), 4)
                                              for q in (0.05, 0.1, 0.25, 0.5, 0.75, 0.9)},
                "tau_prune": tau_prune, "tau_basis": basis, "tau_paths": len(values),
                "paths_pruned_at_tau": int(sum(v < tau for v in values))},
    }


def evaluate(score_map: ScoreMap, scores: Sequence[float], correct: Sequence[bool],
             features: Sequence[dict] | None = None) -> dict:
    """Raw vs calibrated metrics on a (held-out) split (``features``: one dict per score, for a logistic map)."""
    cal = list(_predict(score_map, np.asarray(scores, float), features)) if len(scores) else []
    out = {"n": len(scores), "accuracy": metrics.accuracy(correct)}
    for name, conf in (("raw", list(scores)), ("calibrated", cal)):
        out[name] = {"ece": metrics.ece(conf, correct), "brier": metrics.brier(conf, correct),
                     "auroc": metrics.auroc(conf, correct),
                     "mean_confidence": float(np.mean(conf)) if conf else None}
    raw, calib = out["raw"]["ece"], out["calibrated"]["ece"]
    out["meets_target"] = None if raw is None else bool(calib <= 0.5 * raw or calib <= 0.05)
    return out


def _answered(rows: Sequence[dict]) -> list[dict]:
    return [r for r in rows if not r.get("error") and r.get("raw_confidence") is not None
            and (r.get("search") or {}).get("answer") is not None]


def labelled(rows: Sequence[dict]) -> tuple[list[float], list[bool]]:
    """(raw score, correct) of rows with an answer; rows without one are not mapped (confidence 0)."""
    kept = _answered(rows)
    return [float(r["raw_confidence"]) for r in kept], [bool(r["correct"]) for r in kept]


def labelled_features(rows: Sequence[dict]) -> list[dict] | None:
    """The ``search.features`` of ``labelled``'s rows, in its order; None unless every one reports some."""
    feats = [(r.get("search") or {}).get("features") or {} for r in _answered(rows)]
    return feats if feats and all(feats) else None


# ---------------------------------------------------------------------- orchestration
@dataclass(frozen=True)
class CalibrateConfig:
    base: runner.RunConfig  # base_url, out_dir, max_tokens, concurrency... (search filled per strategy)
    strategies: tuple[str, ...] = STRATEGIES
    holdout: float = 1 / 3  # the last third of the items is held out
    branching_rate: float = 0.1
    tau_prune: float = 0.05
    folds: int = 5
    command: str = ""
    dataset_spec: dict | None = None
    strategy_limits: dict | None = None  # strategy -> number of items (default: all items)
    search_params: dict | None = None  # strategy -> collection params over COLLECT_PARAMS (--search-params)

    def collect_params(self, strategy: str) -> dict:
        return {**COLLECT_PARAMS.get(strategy, {}), **((self.search_params or {}).get(strategy) or {})}


def split(items: Sequence[Item], holdout: float) -> tuple[list[Item], list[Item]]:
    n_hold = int(round(len(items) * holdout))
    return list(items[: len(items) - n_hold]), list(items[len(items) - n_hold:])


def strategy_items(cfg: CalibrateConfig, items: Sequence[Item], strategy: str) -> list[Item]:
    """The first ``strategy_limits[strategy]`` items (all by default): a cheap strategy can have more."""
    limit = (cfg.strategy_limits or {}).get(strategy)
    return list(items if limit is None else items[:limit])


def collect(cfg: CalibrateConfig, items: Sequence[Item]) -> dict[str, list[dict]]:
    """One resumable run per strategy over its items; rows in item order."""
    out = {}
    for strategy in cfg.strategies:
        mine = strategy_items(cfg, items, strategy)
        rc = replace(cfg.base, search=strategy, out_dir=Path(cfg.base.out_dir) / strategy,
                     search_params=cfg.collect_params(strategy))
        runner.run(rc, mine)
        latest = runner.latest_by_id(runner.read_rows(rc.out_dir / runner.RESULTS))
        out[strategy] = [latest[it.id] for it in mine if it.id in latest]
    return out


def build_profile(cfg: CalibrateConfig, rows: dict[str, list[dict]], model: dict) -> CalibrationProfile:
    """Per strategy: its rows (in item order) split by position into fit and held-out (``split``)."""
    maps, fits, evaluation, defaults = {}, {}, {}, {}
    for strategy, srows in rows.items():
        fit_rows, hold_rows = split(srows, cfg.holdout)
        score_map, report = fit_map(*labelled(fit_rows), labelled_features(fit_rows), folds=cfg.folds)
        maps[strategy], fits[strategy] = score_map, report
        evaluation[strategy] = evaluate(score_map, *labelled(hold_rows), labelled_features(hold_rows))
        if strategy == "cat":
            defaults["cat"] = cat_thresholds(fit_rows, branching_rate=cfg.branching_rate,
                                             tau_prune=cfg.tau_prune)
        collected = cfg.collect_params(strategy)
        carried = {p: collected[p] for p in CARRIED_PARAMS.get(strategy, ()) if p in collected}
        if carried:
            defaults.setdefault(strategy, {}).update(carried)
    fitted_defaults = {k: {p: v for p, v in d.items() if p != "fit"} for k, d in defaults.items()}
    threshold_fits = {k: d["fit"] for k, d in defaults.items() if "fit" in d}
    provenance = {
        "dataset": cfg.base.dataset, "split": cfg.dataset_spec,
        "items": {s: {"fit": len(split(r, cfg.holdout)[0]), "held_out": len(split(r, cfg.holdout)[1])}
                  for s, r in rows.items()},
        "model": model.get("id"), "model_fingerprint": model.get("fingerprint"),
        "command": cfg.command, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "collection": {"temperature": runner.effective_temperature(replace(cfg.base, search="cat")),
                       "max_tokens": cfg.base.max_tokens, "params": {s: cfg.collect_params(s) for s in rows},
                       "runs": str(cfg.base.out_dir)},
        "fits": fits, "cat_threshold_fit": threshold_fits,
    }
    return CalibrationProfile(maps=maps, search_defaults=fitted_defaults, provenance=provenance,
                              evaluation=evaluation)


def model_info(base_url: str, api_key: str = "EMPTY") -> dict:
    import httpx  # noqa: PLC0415

    r = httpx.get(f"{base_url.rstrip('/')}/models", headers={"Authorization": f"Bearer {api_key}"}, timeout=30)
    r.raise_for_status()
    return r.json()["data"][0]


def calibrate(cfg: CalibrateConfig, items: Sequence[Item], profile_path: Path) -> CalibrationProfile:
    model = model_info(cfg.base.base_url, cfg.base.api_key)
    if (model.get("calibration") or {}).get("loaded"):
        raise SystemExit("the server has a calibration profile loaded: start it with --calibration none")
    rows = collect(cfg, items)
    profile = build_profile(cfg, rows, model)
    profile.save(profile_path)
    return profile


def default_profile_path(model: str) -> Path:
    """Embedded model: the profile shipped in cat_serve/profiles/; a checkpoint dir: inside it."""
    from cat_serve.models import EMBEDDED, EMBEDDED_NAME  # noqa: PLC0415

    if model in (EMBEDDED, EMBEDDED_NAME):
        return shipped_profile_path(EMBEDDED_NAME)
    if Path(model).is_dir():
        return Path(model) / PROFILE_FILE
    raise SystemExit(f"--profile is required for model {model!r} (not the embedded model or a directory)")


# ---------------------------------------------------------------------- a server of our own
def own_server(model: str, log_path: Path, extra: Sequence[str] = ()) -> ServerProcess:
    """``python -m cat_serve --model M --calibration none`` on a free port, for ``--serve-model`` (not yet
    started: ``start_own_server``)."""
    return ServerProcess.cat_serve(["--model", model, "--calibration", "none", *extra], log=log_path)


def start_own_server(server: ServerProcess, timeout: float = 900) -> ServerProcess:
    """Start it; a failed start stops its process group and ends cat-eval with the log's tail."""
    try:
        return server.start(timeout)
    except ServerStartError as e:
        raise SystemExit(str(e)) from None


def print_evaluation(profile: CalibrationProfile) -> None:
    print("| strategy | held-out n | acc | raw ECE | calibrated ECE | raw Brier | cal. Brier | map | target met |")
    print("|---|---|---|---|---|---|---|---|---|")
    for s, e in profile.evaluation.items():
        f = profile.provenance["fits"][s]
        fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"| {s} | {e['n']} | {fmt(e['accuracy'])} | {fmt(e['raw']['ece'])} | {fmt(e['calibrated']['ece'])} "
              f"| {fmt(e['raw']['brier'])} | {fmt(e['calibrated']['brier'])} | {f['chosen']} | {e['meets_target']} |")
    if "cat" in profile.search_defaults:
        print("cat defaults:", json.dumps(profile.search_defaults["cat"]))


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["cat-eval", *sys.argv[1:]])
