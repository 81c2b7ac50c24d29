"""The ONE scripted StepGenerator used by every unit test (no model, no GPU).

Tokens are word pieces: ``decode`` concatenates them, so scripted texts read naturally.
A script maps a prefix (tuple of token ids) to a list of continuations; successive samples of
that exact prefix cycle through the list in order (across calls). A prefix that lies inside a
scripted continuation (e.g. after a stop string cut it) continues deterministically with the rest
of that continuation. Each continuation carries, per token, its logprob, entropy and top-k
logprobs, and how it ends (EOS by default) when no stop string, ``max_tokens`` or ``early_stop``
cuts it first. Seeds are ignored.

    gen = FakeGenerator()
    prompt = gen.encode("Q:", " 2+2?")
    a, b = gen.script(prompt, cont("Add", "\\n\\n", entropy=0.5), cont("\\boxed{4}", entropy=0.1))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cat_serve.search.generator import EarlyStop
from cat_serve.search.types import ABORTED, EOS, LENGTH, STOP, GenParams, Step

_TOP_ID_BASE = 100_000  # ids of the non-sampled top-k alternatives (never decoded)


@dataclass(frozen=True)
class Tok:
    piece: str
    logprob: float = -0.1
    entropy: float = 0.1
    top: tuple[float, ...] = ()  # top-k logprob values, most likely first


@dataclass(frozen=True)
class Cont:
    """One scripted continuation of a prefix."""

    toks: tuple[Tok, ...]
    finish: str = EOS


def _per_token(value, n: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def cont(*pieces: str, logprob=-0.1, entropy=0.1, top=(), finish: str = EOS) -> Cont:
    """A continuation; ``logprob``/``entropy`` are a scalar or one value per piece, ``top`` is
    one list of top-k logprobs for every token or a list of such lists (one per piece)."""
    n = len(pieces)
    tops = list(top) if top and isinstance(top[0], (list, tuple)) else [tuple(top)] * n
    return Cont(
        tuple(
            Tok(p, float(lp), float(h), tuple(t))
            for p, lp, h, t in zip(pieces, _per_token(logprob, n), _per_token(entropy, n), tops, strict=True)
        ),
        finish,
    )


@dataclass(frozen=True)
class Call:
    prefixes: tuple[tuple[int, ...], ...]
    n: int
    params: GenParams
    early_stop: bool


class FakeGenerator:
    """Scripted implementation of :class:`cat_serve.search.generator.StepGenerator`."""

    def __init__(self) -> None:
        self.vocab: list[str] = []
        self._ids: dict[str, int] = {}
        self.scripts: dict[tuple[int, ...], list[Cont]] = {}
        self._cursor: dict[tuple[int, ...], int] = {}
        self.calls: list[Call] = []
        self.tokens_generated = 0

    # ---- vocabulary -------------------------------------------------------------------------
    def token_id(self, piece: str) -> int:
        if piece not in self._ids:
            self._ids[piece] = len(self.vocab)
            self.vocab.append(piece)
        return self._ids[piece]

    def encode(self, *pieces: str) -> tuple[int, ...]:
        return tuple(self.token_id(p) for p in pieces)

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(self.vocab[t] for t in token_ids)

    # ---- scripting --------------------------------------------------------------------------
    def script(self, prefix: Sequence[int], *continuations: Cont) -> list[tuple[int, ...]]:
        """Script ``prefix``'s samples; returns each continuation's full prefix, to script deeper."""
        key = tuple(prefix)
        self.scripts.setdefault(key, []).extend(continuations)
        return [key + self.encode(*(t.piece for t in c.toks)) for c in continuations]

    def _next(self, prefix: tuple[int, ...]) -> Cont:
        if prefix in self.scripts:
            options = self.scripts[prefix]
            i = self._cursor.get(prefix, 0)
            self._cursor[prefix] = i + 1
            return options[i % len(options)]
        for key in sorted(self.scripts, key=len, reverse=True):
            rest = prefix[len(key):]
            if len(key) < len(prefix) and prefix[: len(key)] == key:
                for c in self.scripts[key]:
                    ids = self.encode(*(t.piece for t in c.toks))
                    if len(ids) > len(rest) and ids[: len(rest)] == rest:
                        return Cont(c.toks[len(rest):], c.finish)
        raise KeyError(f"no script continues prefix {self.decode(prefix)!r}")

    # ---- the protocol -----------------------------------------------------------------------
    async def extend(
        self,
        prefixes: Sequence[Sequence[int]],
        n: int,
        params: GenParams,
        *,
        early_stop: EarlyStop | None = None,
    ) -> list[list[Step]]:
        keys = tuple(tuple(p) for p in prefixes)
        self.calls.append(Call(keys, n, params, early_stop is not None))
        out = [[self._generate(self._next(key), params, early_stop) for _ in range(n)] for key in keys]
        self.tokens_generated += sum(s.num_tokens for row in out for s in row)
        return out

    def _generate(self, c: Cont, params: GenParams, early_stop: EarlyStop | None) -> Step:
        toks: list[Tok] = []
        for i, tok in enumerate(c.toks):
            toks.append(tok)
            text = self.decode(self.encode(*(t.piece for t in toks)))
            last = i == len(c.toks) - 1
            if last and c.finish == EOS:
                return self._step(toks, EOS, None, params)
            hit = next((s for s in params.stop if s in text), None)
            if hit is not None:
                return self._step(toks, STOP, hit, params)
            if last:
                return self._step(toks, c.finish, None, params)
            if len(toks) >= params.max_tokens:
                return self._step(toks, LENGTH, None, params)
            if early_stop is not None and early_stop(self._step(toks, None, None, params)):
                return self._step(toks, ABORTED, None, params)
        raise ValueError("empty scripted continuation")

    def _step(self, toks: list[Tok], finish: str | None, stop: str | None, params: GenParams) -> Step:
        ids = self.encode(*(t.piece for t in toks))
        text = self.decode(ids)
        if stop is not None and not params.include_stop_str:
            text = text[: text.index(stop)]
        k = params.top_logprobs
        tops = tuple(
            tuple((ids[i] if j == 0 else _TOP_ID_BASE + j, lp) for j, lp in enumerate(t.top[:k]))
            for i, t in enumerate(toks)
        )
        return Step(
            token_ids=ids,
            logprobs=tuple(t.logprob for t in toks),
            entropies=tuple(t.entropy for t in toks),
            top_logprobs=tops,
            text=text,
            finish_reason=finish,
            stop=stop,
        )

    # ---- assertions helpers -----------------------------------------------------------------
    def requested(self) -> list[tuple[int, ...]]:
        """Every prefix any call asked to extend, in order."""
        return [p for call in self.calls for p in call.prefixes]


# ---- an Engine around the fake generator, for in-process API tests ---------------------------------
class FakeTokenizer:
    """Chat template and encode/decode over the fake vocabulary: a rendered prompt is ONE token."""

    def __init__(self, gen: FakeGenerator):
        self.gen = gen

    def apply_chat_template(self, messages, *, add_generation_prompt: bool = True, tokenize: bool = False,
                            tools=None, **template_vars) -> str:
        """``<role>content`` per message; extra template variables (chat_template_kwargs) render as ``<k=v>``."""
        if any(m["role"] == "assistant" for m in messages) and messages[-1]["role"] == "assistant":
            raise ValueError("the conversation must end with a user message")
        head = "<tools>" + ",".join(t["function"]["name"] for t in tools) if tools else ""
        return (head + "".join(f"<{m['role']}>{m['content']}" for m in messages)
                + ("<assistant>" if add_generation_prompt else "")
                + "".join(f"<{k}={v}>" for k, v in template_vars.items()))

    def get_vocab(self) -> dict[str, int]:
        """Piece -> id (what vLLM's reasoning parsers look their markers up in)."""
        return dict(self.gen._ids)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [self.gen.token_id(text)] if text else []

    def decode(self, token_ids, skip_special_tokens: bool = True) -> str:
        """Top-k alternatives (ids from ``_TOP_ID_BASE``) read as ``<id>``."""
        return "".join(self.gen.decode([t]) if t < _TOP_ID_BASE else f"<{t}>" for t in token_ids)


class FakeEngine:
    """:class:`cat_serve.engine.base.Engine` over a :class:`FakeGenerator` (``create_app(config, engine=...)``)."""

    kind = "fake"
    supports_structured_output = True  # the constraint is recorded in gen.calls, not enforced

    def __init__(self, gen: FakeGenerator | None = None, *, model_name: str = "fake-model", max_model_len: int = 64,
                 vocab_size: int = 1000):
        self.gen = gen or FakeGenerator()
        self.tokenizer = FakeTokenizer(self.gen)
        self.model_name, self.max_model_len, self.vocab_size = model_name, max_model_len, vocab_size
        self.error: BaseException | None = None  # raised by the next extend, to test error paths

    def chat_prompt(self, *messages: tuple[str, str]) -> tuple[int, ...]:
        """The prompt ids the server builds for these (role, content) messages."""
        text = self.tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in messages])
        return tuple(self.tokenizer.encode(text))

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.gen.decode(token_ids)

    def num_inflight(self) -> int:
        return 0

    async def close(self) -> None:
        return None

    async def extend(self, prefixes, n, params, *, early_stop=None):
        from cat_serve.engine.base import check_room

        if self.error is not None:
            raise self.error
        for p in prefixes:
            check_room(p, params.max_tokens, self.max_model_len)
        return await self.gen.extend(prefixes, n, params, early_stop=early_stop)
