"""One frozen, validated parameter dataclass per strategy.

Build them with ``Params.from_dict(search_params, defaults)``: values in ``search_params`` win over
request-level ``defaults`` (the OpenAI fields the user set: ``temperature``, ``top_p``,
``max_tokens``, ``seed``), which win over the dataclass defaults. Unknown keys, wrong types and
out-of-range values raise :class:`SearchParamsError` naming the field (the HTTP layer answers 400).

Every field carries its help text, range and choices in ``field(metadata=...)``: one place.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cat_serve.search.confidence import AGGREGATIONS, ENTROPY, MULT
from cat_serve.search.formats import ANSWER_FORMATS
from cat_serve.search.types import GenParams

REQUEST_DEFAULT_KEYS = ("temperature", "top_p", "max_tokens", "seed")


class SearchParamsError(ValueError):
    """A bad ``search``/``search_params`` value; ``field`` names the offending key (if any)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def _f(default: Any, help: str, *, lo: float | None = None, hi: float | None = None,
       lo_open: bool = False, choices: tuple | None = None) -> Any:
    meta = {"help": help, "lo": lo, "hi": hi, "lo_open": lo_open, "choices": choices}
    if isinstance(default, (list, tuple)):
        return field(default=tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


def _check_type(name: str, value: Any, annotation: Any, where: str) -> Any:
    """Coerce ``value`` to the field's type (int -> float, list -> tuple) or raise."""
    if isinstance(annotation, types.UnionType):  # ``int | None``
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        annotation = next(a for a in args if a is not type(None))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise SearchParamsError(f"{where}.{name} must be a boolean, got {value!r}", name)
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise SearchParamsError(f"{where}.{name} must be an integer, got {value!r}", name)
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise SearchParamsError(f"{where}.{name} must be a finite number, got {value!r}", name)
    if annotation is str:
        if isinstance(value, str):
            return value
        raise SearchParamsError(f"{where}.{name} must be a string, got {value!r}", name)
    if typing.get_origin(annotation) is tuple:  # tuple[str, ...]
        items = (value,) if isinstance(value, str) else value
        if isinstance(items, (list, tuple)) and items and all(isinstance(s, str) and s for s in items):
            return tuple(items)
        raise SearchParamsError(
            f"{where}.{name} must be a non-empty list of non-empty strings, got {value!r}", name
        )
    raise TypeError(f"unsupported parameter type {annotation!r}")  # a programming error


def _check_range(name: str, value: Any, meta: dict, where: str) -> None:
    if meta["choices"] is not None and value not in meta["choices"]:
        raise SearchParamsError(f"{where}.{name} must be one of {list(meta['choices'])}, got {value!r}", name)
    if value is None or isinstance(value, (str, tuple, bool)):
        return
    lo, hi = meta["lo"], meta["hi"]
    if lo is not None and (value <= lo if meta["lo_open"] else value < lo):
        bound = f"> {lo}" if meta["lo_open"] else f">= {lo}"
        raise SearchParamsError(f"{where}.{name} must be {bound}, got {value!r}", name)
    if hi is not None and value > hi:
        raise SearchParamsError(f"{where}.{name} must be <= {hi}, got {value!r}", name)


@dataclass(frozen=True)
class SearchParams:
    """Fields common to every strategy."""

    strategy: ClassVar[str] = ""

    min_confidence: float = _f(0.0, "abstain when the answer's confidence is below this", lo=0.0, hi=1.0)
    return_candidates: bool = _f(False, "return every candidate path, not only the chosen one")
    temperature: float = _f(0.7, "sampling temperature (search needs diverse samples)", lo=0.0, hi=2.0)
    top_p: float = _f(1.0, "nucleus sampling mass", lo=0.0, hi=1.0, lo_open=True)
    seed: int | None = _f(None, "base seed; sample j uses seed + j", lo=0)
    max_tokens: int = _f(1024, "total token budget of one path (completion tokens)", lo=1, hi=1 << 17)
    # how answers are read and compared (cat_serve/search/formats.py documents each format and how
    # `auto` decides); a calibration profile may set it per strategy in its search_defaults
    answer_format: str = _f("auto", "how final answers are read: auto (explicit markers, letters, yes/no, short "
                            "phrases; numbers only when the question asks for one or the path ends in one), number, "
                            "choice (A-J), text (short phrase), none (no answers: the best path by path score)",
                            choices=ANSWER_FORMATS)
    reasoning_start: str = _f("<think>", "opening marker of a reasoning block (answers are read after it ends)")
    reasoning_end: str = _f("</think>", "closing marker of a reasoning block; \"\" = no reasoning blocks")

    @classmethod
    def from_dict(cls, raw: dict | None, defaults: dict | None = None,
                  profile: dict | None = None) -> SearchParams:
        """Validate ``raw`` (search_params) over request ``defaults`` over ``profile`` (a calibration
        profile's values for this strategy) over the dataclass defaults."""
        if raw is not None and not isinstance(raw, dict):
            raise SearchParamsError(f"search_params must be an object, got {type(raw).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        merged: dict[str, Any] = {}
        for key, value in (profile or {}).items():
            if key not in fields:
                raise SearchParamsError(f"calibration profile sets unknown field {key!r} of {cls.strategy!r}", key)
            merged[key] = (value, "profile")
        for key, value in (defaults or {}).items():
            if key not in REQUEST_DEFAULT_KEYS:
                raise SearchParamsError(f"unknown request default {key!r}", key)
            if value is not None:
                merged[key] = (value, "request")
        for key, value in (raw or {}).items():
            if key not in fields:
                known = ", ".join(sorted(fields))
                raise SearchParamsError(
                    f"unknown search_params field {key!r} for strategy {cls.strategy!r} (known: {known})", key
                )
            merged[key] = (value, "search_params")
        values = {}
        for key, (value, where) in merged.items():
            values[key] = _check_type(key, value, hints[key], where)
            _check_range(key, values[key], fields[key].metadata, where)
        return cls._finish(values)

    @classmethod
    def _finish(cls, values: dict) -> SearchParams:
        """Cross-field defaults and checks; subclasses extend."""
        return cls(**values)

    def to_dict(self) -> dict:
        """JSON-able view (tuples as lists), reported in ``SearchStats.params``."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def gen_params(self, max_tokens: int, *, stop: tuple[str, ...] = (), seed_offset: int = 0,
                   top_logprobs: int = 20) -> GenParams:
        """Engine parameters of one call; continuation j of the call uses ``seed + seed_offset + j``."""
        return GenParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=stop,
            seed=None if self.seed is None else self.seed + seed_offset,
            top_logprobs=top_logprobs,
        )


# tau defaults per aggregation: exp(-3) ~ 0.05 lets a path's step entropies average 0.3 nats over
# ~10 steps (a typical GSM8K solution of a small model) before it is pruned; under "mult" C is the
# path probability itself, which shrinks with length, so no absolute floor is applied by default.
DEFAULT_TAU = {ENTROPY: 0.05, MULT: 0.0}


@dataclass(frozen=True)
class CaTParams(SearchParams):
    """CaT (arXiv 2605.07353, Algorithm 2), with an adaptive (cheaper) mode."""

    strategy: ClassVar[str] = "cat"

    tau: float | None = _f(None, "prune paths whose cumulative confidence C < tau (C == tau survives); "
                           "default 0.05 for entropy, 0.0 for mult", lo=0.0, hi=1.0)
    branches: int = _f(4, "K: candidates per active branch and width of the active set", lo=1, hi=64)
    max_steps: int = _f(16, "T: maximum search depth (steps)", lo=1, hi=1024)
    step_delimiters: tuple[str, ...] = _f(("\n\n",), "strings that end a reasoning step")
    aggregation: str = _f(ENTROPY, "token -> step confidence", choices=AGGREGATIONS)
    max_step_tokens: int = _f(256, "token limit of one step", lo=1, hi=1 << 17)
    # stream is the default: the only mode whose cost stays below SC@K's (README, "Benchmarks")
    mode: str = _f("stream", "'faithful' = Algorithm 2 exactly; 'adaptive' = cheaper search; 'stream' = "
                   "follow one path in a single streaming request, branching only at uncertain steps",
                   choices=("adaptive", "faithful", "stream"))
    # a model's calibration profile supplies its own value (cat-eval calibrate: the step-confidence
    # quantile at a 10 % branching rate); 0.8 is far above any small model's typical step confidence
    confident_threshold: float = _f(0.8, "adaptive/stream: a step with confidence >= this is not branched",
                                    lo=0.0, hi=1.0)
    consensus: int = _f(2, "adaptive: stop once this many completed answers agree (0 = never)", lo=0, hi=1024)
    trunk_temperature: float | None = _f(None, "stream: temperature of the followed path's own request (default: "
                                         "the request's; 0 follows the most likely continuation); the K-1 "
                                         "alternatives at an uncertain step always use the request's", lo=0.0, hi=2.0)
    beam: int | None = _f(None, "adaptive: width of the active set (default K); 1 follows the most "
                          "confident path and branches only at uncertain steps", lo=1, hi=64)
    dedup: bool = _f(False, "faithful/adaptive: identical step texts among one node's K children are expanded "
                     "once and carry their multiplicity (a deviation from Algorithm 2 that saves its repeated "
                     "generations)")

    @classmethod
    def _finish(cls, values: dict) -> CaTParams:
        if values.get("tau") is None:
            values["tau"] = DEFAULT_TAU[values.get("aggregation", ENTROPY)]
        return cls(**values)


@dataclass(frozen=True)
class SelfConsistencyParams(SearchParams):
    """Self-consistency (Wang et al. 2022): majority vote over N sampled paths."""

    strategy: ClassVar[str] = "self_consistency"

    n: int = _f(4, "number of sampled paths", lo=1, hi=256)


@dataclass(frozen=True)
class PerplexityParams(SearchParams):
    """Perplexity consistency (arXiv 2502.00511): probability-weighted vote over distinct paths."""

    strategy: ClassVar[str] = "ppl_consistency"

    n: int = _f(4, "number of sampled paths", lo=1, hi=256)


@dataclass(frozen=True)
class RPCParams(SearchParams):
    """RPC (arXiv 2502.00511): Weibull-mixture reasoning pruning, then perplexity consistency."""

    strategy: ClassVar[str] = "rpc"

    n: int = _f(8, "number of sampled paths (pruning needs >= 4)", lo=1, hi=256)


@dataclass(frozen=True)
class DeepConfParams(SearchParams):
    """DeepConf (arXiv 2508.15260): confidence-filtered, confidence-weighted voting."""

    strategy: ClassVar[str] = "deepconf"

    n: int = _f(8, "total number of traces", lo=1, hi=512)
    window: int | None = _f(None, "sliding window (tokens) of group confidence; default: a quarter of the sampled "
                            "traces' median length, at least 64 and at most the paper's 2,048", lo=1, hi=1 << 17)
    eta: float = _f(90.0, "keep the top eta percent of traces by confidence", lo=0.0, hi=100.0, lo_open=True)
    mode: str = _f("offline", "'offline' filters after sampling; 'online' stops traces early",
                   choices=("offline", "online"))
    warmup: int = _f(4, "online: traces sampled first to set the stopping threshold", lo=1, hi=512)
    consensus: float = _f(0.95, "online: stop sampling once the leading answer's confidence-weighted "
                          "vote share is >= this (beta)", lo=0.0, hi=1.0, lo_open=True)
    batch: int = _f(2, "online: traces sampled per round after the warmup; consensus is checked "
                    "after each round (1 = after every trace, as in the paper)", lo=1, hi=512)

    @classmethod
    def _finish(cls, values: dict) -> DeepConfParams:
        params = cls(**values)
        if params.mode == "online" and params.warmup > params.n:
            raise SearchParamsError(
                f"search_params.warmup ({params.warmup}) must be <= n ({params.n})", "warmup"
            )
        return params
