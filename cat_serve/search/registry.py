"""Strategy name -> (params class, run function), parsing, and the shared abstention rule.

    params = parse_params("cat", {"branches": 3}, {"temperature": 0.6})   # SearchParamsError -> 400
    result, abstained = await run_search("cat", generator, prompt_ids, params, on_event=print)

With a calibration profile (``cat_serve/calibration.py``) the confidence is the profile's
P(correct) for the strategy, and ``min_confidence`` thresholds that calibrated value.

``abstained`` is True when the result carries text (an answer's path, or the best path of a search
that found no answer) whose confidence is below ``params.min_confidence``: the result is returned
untouched (the caller may still show it as a candidate), but the HTTP layer must not present its
text or answer as the answer. With the default ``min_confidence: 0`` nothing abstains.

The map a profile applies: ``maps[strategy]`` to an answer's score, ``maps["<strategy>:no_answer"]``
to the path score of a no-answer result (``selection == "no_answer:best_path_score"``); without that
map the confidence stays the raw path score and ``calibrated`` is false.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from cat_serve.search import cat, deepconf, perplexity, self_consistency
from cat_serve.search.formats import AnswerReader
from cat_serve.search.generator import OnEvent, StepGenerator
from cat_serve.search.params import (
    CaTParams,
    DeepConfParams,
    PerplexityParams,
    RPCParams,
    SearchParams,
    SearchParamsError,
    SelfConsistencyParams,
)
from cat_serve.search.types import SearchResult

if TYPE_CHECKING:  # the profile is built outside the search core (cat_serve/calibration.py)
    from cat_serve.calibration import CalibrationProfile

RunFn = Callable[..., Awaitable[SearchResult]]


class Strategy(NamedTuple):
    params_cls: type[SearchParams]
    run: RunFn


STRATEGIES: dict[str, Strategy] = {
    "cat": Strategy(CaTParams, cat.run),
    "self_consistency": Strategy(SelfConsistencyParams, self_consistency.run),
    "ppl_consistency": Strategy(PerplexityParams, perplexity.run),
    "rpc": Strategy(RPCParams, perplexity.run_rpc),
    "deepconf": Strategy(DeepConfParams, deepconf.run),
}


def available() -> list[str]:
    """Names of the registered strategies."""
    return list(STRATEGIES)


def get(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise SearchParamsError(
            f"search strategy not available: {name!r} (available: {', '.join(available())})", "search"
        )
    return STRATEGIES[name]


def parse_params(name: str, raw: dict | None, defaults: dict | None = None,
                 profile: CalibrationProfile | None = None) -> SearchParams:
    """Validated params of strategy ``name``; raises SearchParamsError (unknown name included).

    Precedence: ``raw`` (search_params) > ``defaults`` (request fields) > the calibration
    ``profile``'s values for the strategy (CaT's thresholds) > the dataclass defaults.
    """
    strategy = get(name)
    base = profile.defaults_for(name, raw if isinstance(raw, dict) else None) if profile else None
    return strategy.params_cls.from_dict(raw, defaults, base)


NO_ANSWER_MAP = "{}:no_answer"  # profile map of a strategy's no-answer path score


def search_width(params: SearchParams) -> int | None:
    """The width a profile's per-width maps are keyed by: n (voting strategies) or K (CaT's ``branches``)."""
    for attr in ("n", "branches"):
        value = getattr(params, attr, None)
        if isinstance(value, int):
            return value
    return None


def abstains(result: SearchResult, params: SearchParams) -> bool:
    """The shared abstention rule: returned text whose confidence is below ``min_confidence``."""
    has_text = result.answer is not None or bool(result.text)
    return has_text and result.confidence < params.min_confidence


async def run_search(name: str, generator: StepGenerator, prompt_ids: Sequence[int],
                     params: SearchParams | None = None, on_event: OnEvent | None = None,
                     profile: CalibrationProfile | None = None,
                     question: str | None = None) -> tuple[SearchResult, bool]:
    """Run strategy ``name``; returns ``(result, abstained)`` (see the module docstring).

    ``question``: the text whose cues ``answer_format: auto`` reads (does it ask for a number, list
    options, ask yes/no); the API passes the last user message (chat) or the prompt (completions).
    Default: the decoded prompt, chat template included.

    The result's confidence goes through the ``profile``'s map (identity without one;
    ``raw_confidence`` keeps the strategy's own score) before the abstention rule sees it.
    """
    strategy = get(name)
    if params is None:
        params = strategy.params_cls.from_dict(None)
    if not isinstance(params, strategy.params_cls):
        raise TypeError(f"strategy {name!r} needs {strategy.params_cls.__name__}, got {type(params).__name__}")
    reader = AnswerReader.for_search(params, generator.decode(prompt_ids), question)
    result = await strategy.run(generator, prompt_ids, params, on_event=on_event, reader=reader)
    if profile is not None:
        width = search_width(params)
        result = result.calibrated_by(profile.map_for(name, width), profile.map_for(NO_ANSWER_MAP.format(name), width))
    else:
        result = result.calibrated_by(None)
    return result, abstains(result, params)
