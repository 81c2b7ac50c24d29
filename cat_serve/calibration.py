"""Calibration profiles: per strategy, a map raw score (and features) -> P(correct) (numpy only).

A profile is a JSON file written by ``cat-eval calibrate`` (which fits the maps with scikit-learn);
serving only evaluates the fitted maps, so nothing here imports scikit-learn::

    {"version": 1,
     "maps": {"cat": {"kind": "isotonic", "x": [...], "y": [...]},      # piecewise linear
              "self_consistency": {"kind": "platt", "a": 3.1, "b": -2.0},  # sigmoid(a*x + b)
              "ppl_consistency@8": {"kind": "logistic", "features": ["raw", "vote_share", ...],
                                    "coef": [...], "intercept": -0.4, "mean": [...], "scale": [...]}},
     "search_defaults": {"cat": {"confident_threshold": 0.31, "tau": 0.002}},
     "provenance": {...}, "evaluation": {...}}

* isotonic: ``np.interp`` over the knots (x strictly increasing, y non-decreasing, both in [0, 1]);
  outside the knots the end values hold. Platt: ``sigmoid(a*x + b)`` with ``a >= 0``. Both maps are
  non-decreasing, and the value is clipped to [0, 1].
* logistic: ``sigmoid(intercept + sum coef_i * (f_i - mean_i) / scale_i)`` over a fixed feature vector: ``raw``
  (the strategy's score) and the features the strategy reports (``SearchResult.features``; the voting
  strategies' ``voting.VOTE_FEATURES``). Not monotone in the raw score: that is its point (a PC score of 0.5-0.6
  can be right more often than one of 0.6-0.8 once the vote share is known).
* Maps per width: ``"<strategy>@<n>"`` serves a search with n (voting) or K (CaT) = n; a plain ``"<strategy>"``
  map serves every other width (``CalibrationProfile.map_for``).
* ``search_defaults`` are the profile's values of strategy parameters (CaT's step thresholds for
  this model); a request's ``search_params`` override them. A CaT ``tau`` holds only for the
  ``aggregation`` it was fitted with (``search_defaults.cat.aggregation``).
* A result without an answer keeps confidence 0 and is not mapped (``calibrated`` false).

Loading order of the server (``resolve_profile``): ``--calibration PATH`` (or ``none``), else
``<model dir>/cat_calibration.json``, else the profile shipped for the embedded model in
``cat_serve/profiles/``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cat_serve.search.types import SearchResult

PROFILE_FILE = "cat_calibration.json"  # inside a model directory: loaded automatically
PROFILES_DIR = Path(__file__).resolve().parent / "profiles"  # shipped profiles (embedded model)
VERSION = 1
KINDS = ("isotonic", "platt", "logistic", "identity")
RAW = "raw"  # the feature name of the strategy's own score in a logistic map


class ProfileError(ValueError):
    """A profile file that cannot be used (bad JSON, non-monotone map, unknown kind...)."""


@dataclass(frozen=True)
class ScoreMap:
    """One strategy's raw score (and features) -> P(correct) map (see the module docstring)."""

    kind: str
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    a: float = 1.0
    b: float = 0.0  # Platt's, and the logistic map's intercept
    features: tuple[str, ...] = ()  # logistic: the feature names, in coef's order
    coef: tuple[float, ...] = ()
    mean: tuple[float, ...] = ()
    scale: tuple[float, ...] = ()

    @property
    def uses_features(self) -> bool:
        return self.kind == "logistic"

    def __call__(self, raw: float, features: dict | None = None) -> float:
        if not math.isfinite(raw):
            raise ValueError(f"raw score must be finite, got {raw!r}")
        if self.kind == "logistic":
            values = {**(features or {}), RAW: raw}
            missing = [f for f in self.features if f not in values]
            if missing:
                raise ValueError(f"logistic map needs features {missing} (the strategy reported {sorted(values)})")
            z = self.b + sum(c * (float(values[f]) - m) / s
                             for f, c, m, s in zip(self.features, self.coef, self.mean, self.scale))
            value = float(1.0 / (1.0 + np.exp(-z)))
        elif self.kind == "isotonic":
            value = float(np.interp(raw, np.asarray(self.x), np.asarray(self.y)))
        elif self.kind == "platt":
            value = float(1.0 / (1.0 + np.exp(-(self.a * raw + self.b))))
        else:
            value = raw
        return min(1.0, max(0.0, value))

    def to_dict(self) -> dict:
        if self.kind == "isotonic":
            return {"kind": "isotonic", "x": list(self.x), "y": list(self.y)}
        if self.kind == "platt":
            return {"kind": "platt", "a": self.a, "b": self.b}
        if self.kind == "logistic":
            return {"kind": "logistic", "features": list(self.features), "coef": list(self.coef),
                    "intercept": self.b, "mean": list(self.mean), "scale": list(self.scale)}
        return {"kind": "identity"}

    @classmethod
    def from_dict(cls, d: dict, where: str = "map") -> ScoreMap:
        if not isinstance(d, dict) or d.get("kind") not in KINDS:
            raise ProfileError(f"{where}: kind must be one of {list(KINDS)}, got {d!r:.80}")
        kind = d["kind"]
        if kind == "isotonic":
            x, y = _floats(d.get("x"), f"{where}.x"), _floats(d.get("y"), f"{where}.y")
            if not x or len(x) != len(y):
                raise ProfileError(f"{where}: x and y must be non-empty and of equal length")
            if any(b <= a for a, b in zip(x, x[1:])):
                raise ProfileError(f"{where}: x must be strictly increasing")
            if any(b < a for a, b in zip(y, y[1:])):
                raise ProfileError(f"{where}: y must be non-decreasing (a monotone map)")
            if any(not 0.0 <= v <= 1.0 for v in y):
                raise ProfileError(f"{where}: y must lie in [0, 1]")
            return cls("isotonic", x=x, y=y)
        if kind == "platt":
            a, b = _floats([d.get("a"), d.get("b")], where)
            if a < 0:
                raise ProfileError(f"{where}: Platt slope a must be >= 0 (a monotone map), got {a}")
            return cls("platt", a=a, b=b)
        if kind == "logistic":
            names = d.get("features")
            if not isinstance(names, list) or not names or not all(isinstance(f, str) for f in names) \
                    or len(set(names)) != len(names):
                raise ProfileError(f"{where}: features must be a non-empty list of distinct names")
            coef, mean, scale = (_floats(d.get(k), f"{where}.{k}") for k in ("coef", "mean", "scale"))
            if not len(coef) == len(mean) == len(scale) == len(names):
                raise ProfileError(f"{where}: coef, mean and scale need one value per feature ({len(names)})")
            if any(v <= 0 for v in scale):
                raise ProfileError(f"{where}: scale values must be > 0")
            [b] = _floats([d.get("intercept")], f"{where}.intercept")
            return cls("logistic", b=b, features=tuple(names), coef=coef, mean=mean, scale=scale)
        return cls("identity")


IDENTITY = ScoreMap("identity")


def _floats(values: Any, where: str) -> tuple[float, ...]:
    if not isinstance(values, (list, tuple)):
        raise ProfileError(f"{where}: expected a list of numbers")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ProfileError(f"{where}: {v!r} is not a finite number")
        out.append(float(v))
    return tuple(out)


@dataclass(frozen=True)
class CalibrationProfile:
    maps: dict[str, ScoreMap]
    search_defaults: dict[str, dict] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    path: str | None = None

    # ------------------------------------------------------------------ use
    def has_map(self, strategy: str) -> bool:
        return any(k == strategy or k.startswith(strategy + "@") for k in self.maps)

    def map_for(self, name: str, width: int | None = None) -> ScoreMap | None:
        """``name``'s map at this width (n of a voting strategy, K of CaT): ``"<name>@<width>"`` if the
        profile has one, else ``"<name>"``; ``name`` may be a no-answer map's (``"<strategy>:no_answer"``)."""
        if width is not None and f"{name}@{width}" in self.maps:
            return self.maps[f"{name}@{width}"]
        return self.maps.get(name)

    def calibrate(self, strategy: str, result: SearchResult, width: int | None = None) -> SearchResult:
        """``result`` with ``confidence`` mapped, the raw score kept in ``raw_confidence``."""
        return calibrate_result(result, self.map_for(strategy, width))

    def defaults_for(self, strategy: str, search_params: dict | None) -> dict:
        """The profile's parameter values for ``strategy`` (the request's ``search_params`` win).

        CaT's ``tau`` is dropped when the request asks for another aggregation than the one it
        was fitted with; ``aggregation`` itself is provenance, never a default.
        """
        out = dict(self.search_defaults.get(strategy) or {})
        fitted = out.pop("aggregation", None)
        asked = (search_params or {}).get("aggregation")
        if strategy == "cat" and fitted is not None and asked is not None and asked != fitted:
            out.pop("tau", None)
        return {k: v for k, v in out.items() if k not in (search_params or {})}

    def summary(self) -> dict:
        """What ``/v1/models`` reports."""
        return {"loaded": True, "path": self.path, "strategies": sorted({k.split("@")[0] for k in self.maps}),
                "maps": sorted(self.maps),
                "search_defaults": self.search_defaults,
                "model_fingerprint": self.provenance.get("model_fingerprint")}

    # ------------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict:
        return {"version": VERSION, "maps": {k: m.to_dict() for k, m in self.maps.items()},
                "search_defaults": self.search_defaults, "provenance": self.provenance,
                "evaluation": self.evaluation}

    @classmethod
    def from_dict(cls, d: dict, path: str | None = None) -> CalibrationProfile:
        if not isinstance(d, dict) or d.get("version") != VERSION:
            raise ProfileError(f"{path or 'profile'}: expected a JSON object with version {VERSION}")
        maps = d.get("maps")
        if not isinstance(maps, dict):
            raise ProfileError(f"{path or 'profile'}: maps must be an object")
        defaults = d.get("search_defaults") or {}
        if not isinstance(defaults, dict) or not all(isinstance(v, dict) for v in defaults.values()):
            raise ProfileError(f"{path or 'profile'}: search_defaults must map strategy -> object")
        return cls(maps={k: ScoreMap.from_dict(v, f"maps.{k}") for k, v in maps.items()},
                   search_defaults=defaults, provenance=d.get("provenance") or {},
                   evaluation=d.get("evaluation") or {}, path=path)

    @classmethod
    def load(cls, path: str | Path) -> CalibrationProfile:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ProfileError(f"cannot read calibration profile {path}: {e}") from e
        return cls.from_dict(data, str(path))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)
        return path


def calibrate_result(result: SearchResult, score_map: ScoreMap | None) -> SearchResult:
    """Apply ``score_map`` to ``result`` (``SearchResult.calibrated_by``; None is the identity)."""
    return result.calibrated_by(score_map)


# ---------------------------------------------------------------------- which profile, which model
def shipped_profile_path(model_name: str) -> Path:
    return PROFILES_DIR / f"{model_name}.json"


def resolve_profile(option: str | None, model_path: str | Path | None, model_name: str,
                    embedded: bool) -> Path | None:
    """``--calibration`` value -> the profile file to load, or None.

    ``option``: a path, ``"none"`` (no profile) or None/``"auto"`` (look in the model directory,
    then, for the embedded model only, in ``cat_serve/profiles/``).
    """
    if option == "none":
        return None
    if option not in (None, "auto"):
        return Path(option)
    if model_path is not None and (Path(model_path) / PROFILE_FILE).is_file():
        return Path(model_path) / PROFILE_FILE
    if embedded and shipped_profile_path(model_name).is_file():
        return shipped_profile_path(model_name)
    return None


def model_fingerprint(model_path: str | Path) -> str | None:
    """sha256 over config.json and, per weight file, its name, size and first and last MiB.

    Cheap (a few MiB read even for large checkpoints) and changes whenever the weights are
    retrained; None when ``model_path`` is not a local directory (a hub id).
    """
    root = Path(model_path)
    if not root.is_dir():
        return None
    h = hashlib.sha256()
    config = root / "config.json"
    if config.is_file():
        h.update(config.read_bytes())
    chunk = 1 << 20
    for f in sorted(root.glob("*.safetensors")) + sorted(root.glob("*.bin")):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(chunk))
            if size > chunk:
                fh.seek(max(chunk, size - chunk))
                h.update(fh.read(chunk))
    return "sha256:" + h.hexdigest()
