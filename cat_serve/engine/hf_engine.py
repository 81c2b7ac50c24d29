"""transformers adapter: the fallback when vLLM is absent, and the exact-entropy reference.

Every (prefix, sample) pair becomes one row of a left-padded batch decoded with a KV cache:
``_prefill`` runs the prompts, then each step ``_sample_next`` picks every live row's token and
``_forward_one`` feeds those tokens back.
Entropy is exact: -sum p log p over the full vocabulary of the raw (untempered) logits.
Each decode step's forward pass runs in a worker thread; sampling, stop strings and callbacks run
on the event loop, so cancelling the awaiting task stops generation at the next token.
Batches go to the model's device (CPU or an accelerator; the KV cache stays there) and only the
last position's logits come back to the CPU, where sampling uses seeded CPU generators. The server
puts the model on CUDA when it has it (``--device auto``), in float32 unless ``--dtype`` says otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from cat_serve.engine.base import check_room, find_stop
from cat_serve.engine.output import StepBuilder, decode, group_rows, left_pad, sample_seed
from cat_serve.search.generator import EarlyStop
from cat_serve.search.types import ABORTED, EOS, LENGTH, STOP, GenParams, Step


class HFEngine:
    kind = "transformers"
    supports_structured_output = False  # no grammar backend here: the API answers 400

    def __init__(self, model, tokenizer, model_name: str, max_model_len: int | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_name = model_name
        cfg = model.config
        self.max_model_len = int(max_model_len or getattr(cfg, "max_position_embeddings", 2048))
        self.vocab_size = int(cfg.vocab_size)
        eos = model.generation_config.eos_token_id if model.generation_config else None
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {int(e) for e in [*eos, tokenizer.eos_token_id] if e is not None}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        self._lock = asyncio.Lock()  # one batch at a time on the model
        self._inflight = 0

    @property
    def device(self) -> str:
        """Where the model's weights are: ``cpu``, ``cuda:0``, ..."""
        return str(next(self.model.parameters()).device)

    @classmethod
    def create(cls, model_path: str, model_name: str, *, max_model_len: int | None = None,
               device: str = "auto", dtype: str = "auto") -> HFEngine:
        """``device``: auto (CUDA when available, else CPU) | cpu | cuda | cuda:N.
        ``dtype``: auto (float32: exact entropies) | float32 | bfloat16 | float16."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=resolve_dtype(dtype))
        return cls(model.to(resolve_device(device)), tokenizer, model_name, max_model_len)

    def decode(self, token_ids: Sequence[int]) -> str:
        return decode(self.tokenizer, token_ids)

    def num_inflight(self) -> int:
        return self._inflight

    async def close(self) -> None:
        return None

    async def extend(
        self,
        prefixes: Sequence[Sequence[int]],
        n: int,
        params: GenParams,
        *,
        early_stop: EarlyStop | None = None,
    ) -> list[list[Step]]:
        if params.structured is not None:  # the API answers 400 before this (supports_structured_output)
            raise NotImplementedError("structured output is not supported by the transformers engine")
        rows = [list(p) for p in prefixes for _ in range(n)]
        seeds = [sample_seed(params.seed, j) for _ in prefixes for j in range(n)]
        max_tokens = min(check_room(r, params.max_tokens, self.max_model_len) for r in rows)
        async with self._lock:
            self._inflight = len(rows)
            try:
                flat = await self._generate(rows, seeds, params, max_tokens, early_stop)
            finally:
                self._inflight = 0
        return group_rows(flat, n)

    async def _generate(self, rows, seeds, params: GenParams, max_tokens: int, early_stop) -> list[Step]:
        seqs = [_Seq() for _ in rows]
        gens = [_generator(s) for s in seeds]
        logits, state = await asyncio.to_thread(self._prefill, rows)
        for _ in range(max_tokens):
            tokens = self._sample_next(logits, seqs, gens, params, early_stop)
            if all(s.reason is not None for s in seqs):
                break
            logits, state = await asyncio.to_thread(self._forward_one, tokens, state)
        return [seq.to_step(self, params) for seq in seqs]

    # ---- the model: one forward pass each, in a worker thread -------------------------------------
    def _forward(self, input_ids, attention_mask, position_ids, past):
        import torch

        device = next(self.model.parameters()).device
        with torch.inference_mode():
            out = self.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                             position_ids=position_ids.to(device), past_key_values=past, use_cache=True)
        return out.logits[:, -1].float().cpu(), out.past_key_values

    def _prefill(self, rows):
        """The prompts as one left-padded batch -> (last-position logits [B, V], decode state)."""
        ids, mask = left_pad(rows, self.pad_id)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits, past = self._forward(ids, mask, pos, None)
        return logits, (mask, pos[:, -1:], past)

    def _forward_one(self, tokens, state):
        """One new token per row -> (logits [B, V], decode state)."""
        import torch

        mask, last_pos, past = state
        mask = torch.cat([mask, torch.ones((mask.shape[0], 1), dtype=torch.long)], dim=1)
        pos = last_pos + 1
        logits, past = self._forward(tokens[:, None], mask, pos, past)
        return logits, (mask, pos, past)

    # ---- sampling, on the event loop --------------------------------------------------------------
    def _sample_next(self, logits, seqs, gens, params: GenParams, early_stop):
        """Sample one token for every unfinished row, record it with its exact entropy, check finishes.
        Returns the [B] tokens to feed back (pad for finished rows)."""
        import torch

        logp = torch.log_softmax(logits, dim=-1)  # [B, V] raw model distribution
        entropy = -(logp.exp() * logp).sum(-1)  # [B]
        k = params.top_logprobs
        top_v, top_i = logp.topk(k, dim=-1) if k > 0 else (None, None)
        nxt = torch.full((len(seqs),), self.pad_id, dtype=torch.long)
        for b, seq in enumerate(seqs):
            if seq.reason is not None:
                continue
            tok = _sample(logits[b], params.temperature, params.top_p, gens[b])
            nxt[b] = tok
            top = tuple(zip(top_i[b].tolist(), top_v[b].tolist())) if k > 0 else ()
            seq.add(tok, float(logp[b, tok]), float(entropy[b]), top)
            self._check_finish(seq, params, early_stop)
        return nxt

    def _check_finish(self, seq: _Seq, params: GenParams, early_stop) -> None:
        if seq.ids[-1] in self.eos_ids:
            seq.reason = EOS
            return
        if params.stop:
            hit = find_stop(self.decode(seq.ids), params.stop)
            if hit is not None:
                seq.reason, seq.stop = STOP, hit[1]
                return
        if early_stop is not None and early_stop(seq.partial(self.decode(seq.ids))):
            seq.reason = ABORTED


class _Seq(StepBuilder):
    """A row's tokens plus how it ended (None while it runs)."""

    def __init__(self):
        super().__init__()
        self.reason: str | None = None
        self.stop: str | None = None

    def to_step(self, engine: HFEngine, params: GenParams) -> Step:
        text = engine.decode(self.ids)
        if self.reason == STOP and self.stop:
            i, s = find_stop(text, [self.stop])
            text = text[: i + len(s)] if params.include_stop_str else text[:i]
        return self.finish(self.reason or LENGTH, self.stop, text=text)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; a CUDA device without one is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: torch sees no CUDA device")
    return device


def resolve_dtype(dtype: str):
    import torch

    if dtype in ("auto", "float32", "float"):
        return torch.float32
    if dtype in ("bfloat16", "float16", "half"):
        return {"bfloat16": torch.bfloat16, "float16": torch.float16, "half": torch.float16}[dtype]
    raise ValueError(f"unknown dtype {dtype!r} for the transformers engine")


def _generator(seed: int | None):
    import torch

    g = torch.Generator()
    g.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, ()).item()))
    return g


def _sample(logits, temperature: float, top_p: float, gen) -> int:
    import torch

    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p  # smallest set whose mass reaches top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=gen))
