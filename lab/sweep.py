"""Issue 20 item 2: the sampling at which search helps, on dev. Sample once, score every selector from the same paths.

    python -m lab.recipe sweep [--limit 200] [--model DIR] [--out DIR] [--recordings DIR]    # make lab-sweep

**record**: an in-process vLLM engine (``VLLMEngine``, the settings ``lab.recipe.runs.served`` gives the lab's
server) draws K = 8 samples per dev item once per setting, with seeds ``seed + j`` (the ``StepGenerator``
contract), for temperature 0.3, 0.5, 0.7, 1.0 at top_p 1, then top_p 0.95 at the temperature whose SC@8 is the
most accurate (ties: fewer tokens, then the lower temperature), and greedy (temperature 0, one path). The prompt
and the generation parameters are exactly those of the lab's search requests (``eval.runner.request_kwargs``:
the question + ``EVAL_SUFFIX`` as one user message through the chat template; max_tokens 160), so the samples are
the ones the server would draw for a seeded SC/PC/RPC/DeepConf request. Every recorded ``Step`` (token ids,
logprobs, entropies, top-20 logprobs, text, finish) is appended to ``<recordings>/<setting>.jsonl`` as its item
finishes; a restart skips the items already there.

**score**: ``ReplayGenerator`` hands the recorded samples back through the ``StepGenerator`` protocol (continuation
j of a call seeded ``s`` is the sample recorded with seed ``s + j``; n = 4 takes the first 4, so K = 4 is a subset
of K = 8), and the real strategies run on it through ``cat_serve.search.registry.run_search`` with the params the
server would parse (``registry.parse_params`` over the checkpoint's calibration profile): selection is exactly
the server's. Graded with ``eval.grading.grade`` (the runner's grader); ``scored.jsonl`` keeps every item's
grades (per sample, and per K and selector the returned answer), from which the tables follow without the
recordings. Per setting and K: mean@K, pass@K, each
selector's accuracy, its gap to pass@K, tokens per query, and the paired comparison with greedy
(``eval.compare.compare_rows``) with the verdicts of lab/README's rules ("≥ greedy": 2-point non-inferiority;
"better than greedy": Holm across the whole table, ``lab.report.better_family``).

Sampled tokens do not depend on how many top logprobs are asked for, so one recording at k = 20 (DeepConf's)
serves SC/PC/RPC too; the replay hands them no top logprobs when they ask for none, as the engine would.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cat_serve.files import read_jsonl
from cat_serve.prompts import EVAL_SUFFIX
from cat_serve.search import registry
from cat_serve.search.deepconf import TOP_K
from cat_serve.search.types import GenParams, Step
from eval import compare
from eval.datasets import Item, load_dataset

from lab.recipe import LAB_DIFFICULTY

# (label, search name) of every selector scored: the sampling strategies of lab.search, DeepConf offline
SELECTORS = (("SC", "self_consistency"), ("PC", "ppl_consistency"), ("RPC", "rpc"), ("DeepConf", "deepconf"))
TEMPERATURES = (0.3, 0.5, 0.7, 1.0)
TOP_P_ALT = 0.95  # recorded at the best temperature (SC@K_MAX) only
KS = (4, 8)
K_MAX = max(KS)
MAX_TOKENS = 160  # lab.search.run_search's
GREEDY = "greedy"
ABSTAIN_TEXT = "I am not confident enough to answer this."  # cat_serve.api.serving's (not imported: no API stack here)
CHOICE_RULE = ("best = the most accurate setting on these dev items per selector and K (ties: fewer tokens per "
               "query, then the lower temperature, then top_p 1)")


@dataclass(frozen=True)
class Setting:
    temperature: float
    top_p: float = 1.0

    @property
    def name(self) -> str:
        return GREEDY if self.temperature == 0 else f"t{self.temperature}-p{self.top_p}"

    @classmethod
    def parse(cls, name: str) -> Setting:
        if name == GREEDY:
            return cls(0.0)
        t, p = name.split("-")
        return cls(float(t[1:]), float(p[1:]))


# ---------------------------------------------------------------- recorded steps (JSON <-> Step)


def step_to_dict(s: Step) -> dict:
    """Every field of a Step the strategies read; floats as JSON reprs, so the replay is bit-identical."""
    return {"ids": list(s.token_ids), "lp": list(s.logprobs), "ent": list(s.entropies),
            "top": [[list(pair) for pair in t] for t in s.top_logprobs], "text": s.text,
            "finish": s.finish_reason, "stop": s.stop}


def step_from_dict(d: dict) -> Step:
    return Step(token_ids=tuple(d["ids"]), logprobs=tuple(d["lp"]), entropies=tuple(d["ent"]),
                top_logprobs=tuple(tuple((int(i), float(lp)) for i, lp in t) for t in d["top"]),
                text=d["text"], finish_reason=d["finish"], stop=d.get("stop"))


@dataclass(frozen=True)
class Recording:
    """One item's recorded samples at one setting (``samples[j]`` drawn with seed ``seed + j``)."""

    id: str
    prompt_ids: tuple[int, ...]
    prompt_text: str  # the engine's decode of the prompt (the strategies' answer reader reads its cues)
    setting: Setting
    seed: int | None
    max_tokens: int
    samples: tuple[Step, ...]

    def to_dict(self) -> dict:
        return {"id": self.id, "prompt_ids": list(self.prompt_ids), "prompt_text": self.prompt_text,
                "temperature": self.setting.temperature, "top_p": self.setting.top_p, "seed": self.seed,
                "max_tokens": self.max_tokens, "samples": [step_to_dict(s) for s in self.samples]}

    @classmethod
    def from_dict(cls, d: dict) -> Recording:
        return cls(d["id"], tuple(d["prompt_ids"]), d["prompt_text"], Setting(d["temperature"], d["top_p"]),
                   d["seed"], d["max_tokens"], tuple(step_from_dict(s) for s in d["samples"]))


def read_recordings(path: Path) -> dict[str, Recording]:
    """id -> recording of one setting's JSONL (a truncated last line, from an interrupted write, is ignored)."""
    if not path.exists():
        return {}
    return {d["id"]: Recording.from_dict(d) for d in read_jsonl(path, skip_invalid=True)}


# ---------------------------------------------------------------- replay


class ReplayGenerator:
    """A StepGenerator that hands back one item's recorded samples instead of sampling.

    ``extend([prompt], n, params)`` returns samples ``params.seed - seed + j`` for j < n: what the engine
    returned for continuation j of a call seeded ``params.seed``. Anything the recording cannot answer
    exactly (another prompt, temperature, top_p or max_tokens, an unseeded call, more samples than recorded,
    an early-stop callback) raises, so a strategy can never be scored on samples it would not have drawn."""

    def __init__(self, rec: Recording):
        self.rec = rec
        self.calls = 0
        self._texts = {s.token_ids: s.text for s in rec.samples}

    async def extend(self, prefixes: Sequence[Sequence[int]], n: int, params: GenParams, *,
                     early_stop=None) -> list[list[Step]]:
        rec = self.rec
        if early_stop is not None:
            raise ValueError("a replay cannot stop a recorded sample early (DeepConf online needs new generation)")
        if any(tuple(p) != rec.prompt_ids for p in prefixes):
            raise ValueError(f"item {rec.id}: the replay only holds continuations of the recorded prompt")
        if (params.temperature, params.top_p, params.max_tokens) != (rec.setting.temperature, rec.setting.top_p,
                                                                     rec.max_tokens):
            raise ValueError(f"item {rec.id}: asked temperature {params.temperature}, top_p {params.top_p}, max_tokens "
                             f"{params.max_tokens}; recorded {rec.setting}, max_tokens {rec.max_tokens}")
        if params.stop:
            raise ValueError("the samples were recorded without stop strings")
        if params.seed is None or rec.seed is None:
            raise ValueError("only seeded calls replay (sample j of a call is the one seeded seed + j)")
        first = params.seed - rec.seed
        if first < 0 or first + n > len(rec.samples):
            raise ValueError(f"item {rec.id}: samples {first}..{first + n - 1} asked, {len(rec.samples)} recorded")
        self.calls += 1
        k = params.top_logprobs
        rows = [replace(s, top_logprobs=tuple(t[:k] for t in s.top_logprobs) if k else ())
                for s in rec.samples[first:first + n]]
        return [list(rows) for _ in prefixes]

    def decode(self, token_ids: Sequence[int]) -> str:
        ids = tuple(token_ids)
        if ids == self.rec.prompt_ids:
            return self.rec.prompt_text
        if ids in self._texts:
            return self._texts[ids]
        if not ids:
            return ""
        raise KeyError(f"item {self.rec.id}: no recorded text for these token ids")


# ---------------------------------------------------------------- scoring


def user_message(item: Item) -> str:
    """What the lab's search request sends as its one user message (``eval.runner.request_kwargs``)."""
    return item.question + EVAL_SUFFIX


def search_params(name: str, k: int, rec: Recording, profile=None):
    """The params the server parses for the lab's request: search_params {n: K, return_candidates} (lab.search),
    the request's temperature/top_p/max_tokens/seed, the calibration profile's defaults beneath them."""
    defaults = {"temperature": rec.setting.temperature, "top_p": rec.setting.top_p, "max_tokens": rec.max_tokens,
                "seed": rec.seed}
    params = registry.parse_params(name, {"n": k, "return_candidates": True}, defaults, profile)
    if name == "deepconf" and params.mode != "offline":
        raise ValueError("the sweep scores DeepConf offline only")
    return params


class Grader:
    """``eval.grading.grade`` of one item, once per distinct text (a selector returns one of the samples)."""

    def __init__(self, item: Item):
        self.item, self._memo = item, {}

    def __call__(self, text: str) -> bool:
        from eval.grading import grade

        if text not in self._memo:
            self._memo[text] = grade(text, self.item.gold, self.item.question)
        return self._memo[text]


async def score_item(item: Item, rec: Recording, ks: Sequence[int] = KS, profile=None,
                     selectors: Sequence[tuple[str, str]] = SELECTORS) -> dict:
    """One item at one setting: per sample correct/tokens, and per K and selector the returned path's grade.

    Returns ``{"id", "samples": [{"correct", "tokens"}], "k": {K: {label: {"correct", "tokens", "answer", "raw",
    "features"}}}}`` (``raw``: the strategy's own score, ``features``: what a multi-feature calibration map reads)."""
    grade = Grader(item)
    out = {"id": item.id, "samples": [{"correct": grade(s.text), "tokens": s.num_tokens} for s in rec.samples],
           "k": {}}
    for k in ks:
        out["k"][k] = {}
        for label, name in selectors:
            gen = ReplayGenerator(rec)
            result, abstained = await registry.run_search(name, gen, rec.prompt_ids, search_params(name, k, rec, profile),
                                                          profile=profile, question=user_message(item))
            text = ABSTAIN_TEXT if abstained else result.text
            out["k"][k][label] = {"correct": grade(text), "tokens": result.stats.tokens_generated,
                                  "answer": result.answer, "raw": result.raw_confidence,
                                  "features": dict(result.features)}
    return out


async def score_setting(items: Sequence[Item], recs: dict[str, Recording], ks: Sequence[int] = KS, profile=None,
                        selectors: Sequence[tuple[str, str]] = SELECTORS) -> list[dict]:
    """``score_item`` of every item that has a recording, in ``items``' order."""
    return [await score_item(it, recs[it.id], ks, profile, selectors) for it in items if it.id in recs]


def setting_summary(scored: Sequence[dict], k: int) -> dict:
    """mean@K (one sample's accuracy, averaged over the first K samples and the items), pass@K (any of the
    first K right), and per selector accuracy, gap to pass@K, tokens per query, and its result rows."""
    n = len(scored)
    mean_k = sum(sum(s["correct"] for s in r["samples"][:k]) / k for r in scored) / n
    pass_k = sum(any(s["correct"] for s in r["samples"][:k]) for r in scored) / n
    out = {"n": n, "mean_at_k": mean_k, "pass_at_k": pass_k, "selectors": {}}
    for label in scored[0]["k"][k]:
        rows = [{"id": r["id"], "correct": r["k"][k][label]["correct"], "tokens": r["k"][k][label]["tokens"]}
                for r in scored]
        acc = sum(x["correct"] for x in rows) / n
        out["selectors"][label] = {"accuracy": acc, "gap_to_pass": pass_k - acc,
                                   "tokens_per_query": sum(x["tokens"] for x in rows) / n, "rows": rows}
    return out


def greedy_rows(items: Sequence[Item], recs: dict[str, Recording]) -> list[dict]:
    """Greedy's result rows: its one path graded as the runner grades a plain response."""
    rows = []
    for it in items:
        if it.id in recs:
            [s] = recs[it.id].samples
            rows.append({"id": it.id, "correct": Grader(it)(s.text), "tokens": s.num_tokens})
    return rows


def best_temperature(summaries: dict[str, dict], k: int = K_MAX, label: str = "SC") -> float | None:
    """The top_p-1 temperature whose ``label``@K is the most accurate (ties: fewer tokens, lower temperature)."""
    cands = [(Setting.parse(name), s[k]["selectors"][label]) for name, s in summaries.items()
             if name != GREEDY and Setting.parse(name).top_p == 1.0 and k in s]
    if not cands:
        return None
    return min(cands, key=lambda c: (-c[1]["accuracy"], c[1]["tokens_per_query"], c[0].temperature))[0].temperature


def vs_greedy(summaries: dict[str, dict], greedy: list[dict]) -> dict[tuple[str, int, str], dict]:
    """Paired comparison (``eval.compare.compare_rows``) of every (setting, K, selector) with greedy, and the
    verdicts "≥ greedy" and "better than greedy" (Holm across all of them: one table)."""
    from lab.report import better_family

    comps = {(name, k, label): compare.compare_rows(sel["rows"], greedy)
             for name, by_k in summaries.items() for k, s in by_k.items() for label, sel in s["selectors"].items()}
    keyed = {f"{n}|{k}|{label}": c for (n, k, label), c in comps.items()}
    better = better_family(keyed)
    out = {}
    for key, c in comps.items():
        acc = c.get("accuracy")
        verdict, holm_p = better.get(f"{key[0]}|{key[1]}|{key[2]}", (compare.INCONCLUSIVE, None))
        out[key] = {"n": c["n"], "accuracy": acc, "tokens_ratio": c.get("tokens_ratio"), "holm_p": holm_p,
                    "non_inferior": compare.non_inferior(acc.lo, acc.hi) if acc else compare.INCONCLUSIVE,
                    "better": verdict}
    return out


def choose(summaries: dict[str, dict]) -> dict:
    """Per selector and K, the best setting on dev (``CHOICE_RULE``)."""
    out: dict = {}
    for name, by_k in summaries.items():
        for k, s in by_k.items():
            for label, sel in s["selectors"].items():
                out.setdefault(label, {}).setdefault(str(k), []).append((Setting.parse(name), sel))
    chosen = {}
    for label, by_k in out.items():
        chosen[label] = {}
        for k, cands in by_k.items():
            setting, sel = min(cands, key=lambda c: (-c[1]["accuracy"], c[1]["tokens_per_query"], c[0].temperature,
                                                     -c[0].top_p))
            chosen[label][k] = {"setting": setting.name, "temperature": setting.temperature, "top_p": setting.top_p,
                                "accuracy": sel["accuracy"], "tokens_per_query": sel["tokens_per_query"]}
    return chosen


def _f(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def render(summaries: dict[str, dict], greedy: list[dict], info: dict) -> tuple[str, dict, dict]:
    """(table.md, table.json, chosen.json) of the scored settings."""
    paired = vs_greedy(summaries, greedy)
    g_acc = sum(r["correct"] for r in greedy) / len(greedy)
    g_tok = sum(r["tokens"] for r in greedy) / len(greedy)
    chosen = choose(summaries)
    title = ("Dev sampling sweep" if info.get("split", "dev") == "dev" else
             f"Sampling on the {info['split']} split at the settings chosen on dev")
    lines = [f"{title} (`python -m lab.recipe sweep`, issue 20 item 2): `{info['dataset']}`, "
             f"{info['n']} items, every selector scored from the same {info['samples']} seeded samples per item and setting "
             f"(a smaller K takes the first K of them); model `{info['model']}`. Greedy: accuracy {g_acc:.3f}, "
             f"{g_tok:.1f} tokens per query.", "",
             f"Choice: {CHOICE_RULE}; {top_p_note(info)}. mean@K: one sample's accuracy (averaged over the "
             "first K samples); pass@K: any of them right, the ceiling of every selector; gap = pass@K − accuracy. "
             f"vs greedy: `eval.compare` on the {info['n']} paired items (bootstrap by item, {compare.RESAMPLES} "
             "resamples, 95 % interval, exact McNemar p); \"≥ greedy\": lower bound > −0.02; \"better than "
             f"greedy\": Holm across all {len(paired)} comparisons of this table (lab/README's rules).", "",
             "| setting | K | mean@K | pass@K | selector | accuracy | gap to pass@K | tokens/query | "
             "Δacc vs greedy [95% CI], p | Holm p | ≥ greedy | better than greedy |", "|---" * 12 + "|"]
    rows_json = []
    for name, by_k in summaries.items():
        for k, s in by_k.items():
            for label, sel in s["selectors"].items():
                c = paired[(name, k, label)]
                lines.append(f"| {name} | {k} | {s['mean_at_k']:.3f} | {s['pass_at_k']:.3f} | {label} | "
                             f"{sel['accuracy']:.3f} | {sel['gap_to_pass']:.3f} | {sel['tokens_per_query']:.1f} | "
                             f"{compare.fmt_stat(c['accuracy'], sign=True)} | "
                             f"{compare.fmt_p(c['holm_p']) if c['holm_p'] is not None else '–'} | "
                             f"{c['non_inferior']} | {c['better']} |")
                rows_json.append({"setting": name, **{f: getattr(Setting.parse(name), f) for f in ("temperature", "top_p")},
                                  "k": k, "n": s["n"], "mean_at_k": s["mean_at_k"], "pass_at_k": s["pass_at_k"],
                                  "selector": label, "accuracy": sel["accuracy"], "gap_to_pass": sel["gap_to_pass"],
                                  "tokens_per_query": sel["tokens_per_query"],
                                  "vs_greedy": {"accuracy": c["accuracy"].as_dict() if c["accuracy"] else None,
                                                "tokens_ratio": c["tokens_ratio"].as_dict() if c["tokens_ratio"] else None,
                                                "holm_p": c["holm_p"], "non_inferior": c["non_inferior"],
                                                "better": c["better"]}})
    if info.get("split", "dev") == "dev":  # a choice is made on dev only (the test split is run at dev's choice)
        lines += ["", "Best setting per selector (dev):", "", "| selector | K | setting | accuracy | tokens/query |",
                  "|---|---|---|---|---|"]
        lines += [f"| {label} | {k} | {c['setting']} | {c['accuracy']:.3f} | {c['tokens_per_query']:.1f} |"
                  for label, by_k in chosen.items() for k, c in by_k.items()]
    lines += ["", conclusion(summaries, paired, g_acc), ""]
    table = {"info": info, "greedy": {"accuracy": g_acc, "tokens_per_query": g_tok, "n": len(greedy)},
             "rule": CHOICE_RULE, "rows": rows_json}
    return "\n".join(lines), table, {"rule": CHOICE_RULE, "dataset": info["dataset"], "n": info["n"],
                                    "model": info["model"], "chosen": chosen}


def at_dev_choice(summaries: dict[str, dict], greedy: list[dict], dev_chosen: dict) -> tuple[list[str], list[dict]]:
    """Each selector and K at the setting the dev sweep chose (``dev_chosen``: its chosen.json), paired with greedy
    on these items; "better than greedy" with Holm across these comparisons (one table). The last line is the
    conclusion."""
    from lab.report import better_family

    picked = {}
    for label, by_k in dev_chosen["chosen"].items():
        for k, c in by_k.items():
            s = summaries.get(c["setting"], {}).get(int(k))
            if s is not None and label in s["selectors"]:
                sel = s["selectors"][label]
                picked[f"{label}@{k}"] = (c["setting"], sel, compare.compare_rows(sel["rows"], greedy))
    family = better_family({n: c for n, (_, _, c) in picked.items()})
    lines = ["", f"At the settings chosen on dev ({dev_chosen.get('dataset')}, {dev_chosen.get('n')} items): each selector "
             f"paired with greedy on these items; \"better than greedy\": Holm across these {len(picked)} comparisons.", "",
             "| selector@K | dev-chosen setting | accuracy | tokens/query | Δacc vs greedy [95% CI], p | tokens vs greedy "
             "[95% CI] | Holm p | ≥ greedy | better than greedy |", "|---" * 9 + "|"]
    rows, held, non_inf = [], [], []
    for name, (setting, sel, c) in picked.items():
        acc, tok = c.get("accuracy"), c.get("tokens_ratio")
        verdict, holm_p = family.get(name, (compare.INCONCLUSIVE, None))
        ni = compare.non_inferior(acc.lo, acc.hi) if acc else compare.INCONCLUSIVE
        lines.append(f"| {name} | {setting} | {sel['accuracy']:.3f} | {sel['tokens_per_query']:.1f} | "
                     f"{compare.fmt_stat(acc, sign=True) if acc else '–'} | {compare.fmt_stat(tok) if tok else '–'} | "
                     f"{compare.fmt_p(holm_p) if holm_p is not None else '–'} | {ni} | {verdict} |")
        rows.append({"strategy": name, "setting": setting, "accuracy": sel["accuracy"],
                     "tokens_per_query": sel["tokens_per_query"], "accuracy_vs_greedy": acc.as_dict() if acc else None,
                     "tokens_vs_greedy": tok.as_dict() if tok else None, "holm_p": holm_p, "non_inferior": ni,
                     "better": verdict})
        (held if verdict == compare.HELD else []).append(name)
        (non_inf if ni == compare.HELD else []).append(name)
    g = sum(r["correct"] for r in greedy) / len(greedy)
    stated = {r["strategy"]: (f"{r['strategy']} Δacc {compare.fmt_stat(picked[r['strategy']][2]['accuracy'], sign=True)}, "
                              f"Holm p = {compare.fmt_p(r['holm_p'])}") for r in rows if r["holm_p"] is not None}
    best = max((r for r in rows if r["accuracy_vs_greedy"]), key=lambda r: r["accuracy_vs_greedy"]["estimate"],
               default=None)
    lines += ["", ("Better than greedy at the dev-chosen settings (Holm): " + "; ".join(stated[n] for n in held) + "."
                   if held else
                   f"No selector at its dev-chosen setting is better than greedy ({g:.3f}) after Holm"
                   + (f" (closest: {stated[best['strategy']]})" if best else "") + "; "
                   f"≥ greedy (2-point margin) held for: {', '.join(non_inf) if non_inf else 'none'}.")]
    return lines, rows


def top_p_note(info: dict) -> str:
    p = info.get("top_p_alt", TOP_P_ALT)
    if p is None or p >= 1.0:
        return "every setting has top_p 1"
    if info.get("top_p_temperature_fixed"):
        return f"top_p {p} was recorded at t = {info.get('best_temperature')}, the temperature the dev sweep chose"
    return (f"top_p {p} was recorded at the temperature with the most accurate SC@{info['samples']} "
            f"(t = {info.get('best_temperature')})")


def conclusion(summaries: dict[str, dict], paired: dict, greedy_acc: float) -> str:
    """One sentence: which settings beat greedy, or that none does and why (mean@K and pass@K)."""
    held = [f"{label}@{k} at {name}" for (name, k, label), c in paired.items() if c["better"] == compare.HELD]
    if held:
        return "Better than greedy (Holm): " + ", ".join(held) + "."
    best_mean = max((s["mean_at_k"], name) for name, by_k in summaries.items() for s in by_k.values())
    best_pass = max((s["pass_at_k"], name, k) for name, by_k in summaries.items() for k, s in by_k.items())
    return (f"No selector at any setting is better than greedy ({greedy_acc:.3f}) after Holm. One sample is right "
            f"at most {best_mean[0]:.3f} of the time ({best_mean[1]}, mean@K) and some sample at most "
            f"{best_pass[0]:.3f} ({best_pass[1]}, pass@{best_pass[2]}). A selector returns one of the samples: it is "
            "right at most pass@K of the time, and a vote favours the answer most samples give, so where mean@K is "
            "below greedy's accuracy the right answer is often a minority among the samples.")


# ---------------------------------------------------------------- recording (vLLM)


def load_items(limit: int, seed: int = 0, difficulty: str = LAB_DIFFICULTY, split: str = "dev") -> tuple[str, list[Item]]:
    """The lab's items (``lab.search.run_search``'s dataset and order)."""
    dataset = f"arith:{difficulty}@{split}"
    return dataset, load_dataset(dataset, limit=limit, seed=seed)


def prompt_ids(engine, item: Item) -> list[int]:
    """The token ids the server builds for the lab's request (``Serving.chat``)."""
    from cat_serve.engine.base import chat_prompt_ids

    return chat_prompt_ids(engine.tokenizer, [{"role": "user", "content": user_message(item)}])


def gen_params(setting: Setting, n_samples: int, seed: int, max_tokens: int = MAX_TOKENS) -> GenParams:
    """The engine call the strategies make (``voting.sample_paths``); greedy: a plain temperature-0 request."""
    if setting.name == GREEDY:  # Protocol.gen_params of a chat request with logprobs and no top_logprobs
        return GenParams(max_tokens=max_tokens, temperature=0.0, top_p=1.0, top_logprobs=0, include_stop_str=False)
    params = registry.parse_params("self_consistency", {"n": n_samples},
                                   {"temperature": setting.temperature, "top_p": setting.top_p,
                                    "max_tokens": max_tokens, "seed": seed})
    return params.gen_params(params.max_tokens, top_logprobs=TOP_K)


async def record_setting(engine, items: Sequence[Item], setting: Setting, path: Path, *, n_samples: int = K_MAX,
                         seed: int = 0, max_tokens: int = MAX_TOKENS, concurrency: int = 8) -> dict:
    """Record every item of ``items`` not yet in ``path`` (appended and flushed as each finishes)."""
    done = read_recordings(path)
    pending = [it for it in items if it.id not in done]
    n = 1 if setting.name == GREEDY else n_samples
    params = gen_params(setting, n, seed, max_tokens)
    sem, t0, tokens = asyncio.Semaphore(concurrency), time.time(), 0
    path.parent.mkdir(parents=True, exist_ok=True)
    drop_partial_line(path)
    with open(path, "a") as f:
        async def one(it: Item) -> None:
            nonlocal tokens
            async with sem:
                ids = prompt_ids(engine, it)
                [row] = await engine.extend([ids], n, params)
                rec = Recording(it.id, tuple(ids), engine.decode(ids), setting, None if setting.name == GREEDY else seed,
                                max_tokens, tuple(row))
                f.write(json.dumps(rec.to_dict()) + "\n")
                f.flush()
                tokens += sum(s.num_tokens for s in row)

        await asyncio.gather(*(one(it) for it in pending))
    wall = time.time() - t0
    stats = {"setting": setting.name, "recorded": len(pending), "skipped": len(done), "tokens": tokens,
             "wall_s": round(wall, 1), "tokens_per_s": round(tokens / wall, 1) if pending and wall else None}
    print(json.dumps(stats), flush=True)
    return stats


def drop_partial_line(path: Path) -> None:
    """Cut an interrupted write (a last line without its newline), so the next append starts a line of its own."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[:data.rfind(b"\n") + 1])


def check_meta(recordings: Path, meta: dict) -> None:
    """Refuse to mix recordings of another model, dataset, seed or length into a resumed sweep."""
    f = recordings / "meta.json"
    if f.exists():
        old = json.loads(f.read_text())
        if old != meta:
            raise SystemExit(f"{recordings} holds a sweep with other settings ({old} != {meta}): pass another "
                             "--recordings folder")
    recordings.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(meta, indent=2) + "\n")


def sweep(model: Path, *, limit: int, out: Path, recordings: Path, temperatures: Sequence[float] = TEMPERATURES,
          ks: Sequence[int] = KS, seed: int = 0, max_tokens: int = MAX_TOKENS, concurrency: int = 8,
          top_p_alt: float | None = TOP_P_ALT, split: str = "dev", top_p_temperature: float | None = None,
          dev_chosen: dict | None = None) -> dict:
    """Record what is missing, then score and write ``out``/{table.md, table.json, chosen.json, record.json}."""
    from cat_serve.calibration import PROFILE_FILE, CalibrationProfile

    dataset, items = load_items(limit, seed, split=split)
    n_samples = max(ks)
    check_meta(recordings, {"model": str(model), "dataset": dataset, "seed": seed, "max_tokens": max_tokens,
                            "samples": n_samples})
    profile = CalibrationProfile.load(model / PROFILE_FILE) if (model / PROFILE_FILE).is_file() else None
    settings = [Setting(0.0)] + [Setting(t) for t in temperatures]
    engine, stats = None, []

    async def record(todo: list[Setting]) -> None:
        nonlocal engine
        for s in todo:
            path = recordings / f"{s.name}.jsonl"
            if engine is None and len(read_recordings(path)) < len(items):
                engine = make_engine(model)
            if engine is not None:
                stats.append(await record_setting(engine, items, s, path, n_samples=n_samples, seed=seed,
                                                  max_tokens=max_tokens, concurrency=concurrency))

    per_setting: dict[str, list[dict]] = {}

    async def scored(s: Setting) -> dict:
        recs = read_recordings(recordings / f"{s.name}.jsonl")
        per_setting[s.name] = await score_setting(items, recs, ks, profile)
        return {k: setting_summary(per_setting[s.name], k) for k in ks}

    async def main() -> dict:
        try:
            await record(settings)
            summaries = {s.name: await scored(s) for s in settings[1:]}
            best_t = best_temperature(summaries, n_samples) if top_p_temperature is None else top_p_temperature
            if top_p_alt is not None and top_p_alt < 1.0 and best_t is not None:  # 1.0: no top_p setting
                alt = Setting(best_t, top_p_alt)
                await record([alt])
                summaries[alt.name] = await scored(alt)
        finally:  # an interrupt too: the engine's core process goes with it (what is recorded stays)
            if engine is not None:
                await engine.close()
        return {"summaries": summaries, "best_temperature": best_t}

    t0 = time.time()
    res = asyncio.run(main())
    greedy = greedy_rows(items, read_recordings(recordings / f"{GREEDY}.jsonl"))
    info = {"split": split, "dataset": dataset, "n": len(items), "model": model.name, "seed": seed, "max_tokens": max_tokens,
            "samples": n_samples, "profile": profile is not None, "best_temperature": res["best_temperature"], "top_p_alt": top_p_alt,
            "recordings": str(recordings)}
    if top_p_temperature is not None:
        info["top_p_temperature_fixed"] = True
    md, table, chosen = render(res["summaries"], greedy, info)
    if dev_chosen is not None:  # the test split: each selector at the setting dev chose, its own Holm family
        lines, rows = at_dev_choice(res["summaries"], greedy, dev_chosen)
        md += "\n".join(lines) + "\n"
        table["at_dev_choice"] = rows
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(md)
    (out / "table.json").write_text(json.dumps(table, indent=2) + "\n")
    if split == "dev":  # nothing is chosen on another split
        (out / "chosen.json").write_text(json.dumps(chosen, indent=2) + "\n")
    with open(out / "scored.jsonl", "w") as f:  # per item: what the tables are computed from (small; committed)
        f.writelines(json.dumps({"setting": GREEDY, **r}) + "\n" for r in greedy)
        f.writelines(json.dumps({"setting": name, **r}) + "\n" for name, rows in per_setting.items() for r in rows)
    if stats:
        with open(out / "record.jsonl", "a") as f:  # wall time and tokens of every recording segment
            for s in stats:
                f.write(json.dumps({**s, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0))}) + "\n")
    return chosen


def make_engine(model: Path):
    """The lab server's engine in-process (``lab.recipe.runs.served``: vLLM, 1 GiB KV cache, 1024 tokens)."""
    from cat_serve.engine.vllm_engine import VLLMEngine

    return VLLMEngine.create(str(model), model.name, max_model_len=1024, kv_cache_gib=1)
