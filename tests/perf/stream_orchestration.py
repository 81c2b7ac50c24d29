"""Search-orchestration share of stream-mode CaT request latency.

    python tests/perf/stream_orchestration.py [--n 8] [--max-tokens 512] [--out result.json]

1. real: ``VLLMEngine`` (in this process) on the embedded model runs ``--n`` stream-mode CaT
   searches over the first GSM8K test questions, one at a time; each search's wall time is its
   request latency. Every output vLLM hands the adapter is recorded.
2. replay: the same searches against a stand-in for vLLM's ``AsyncLLM`` that hands back the
   recorded outputs at once. Everything that still costs time there is cat-serve's own work on
   the outputs (adapter, segmenter, search): the orchestration, measured as process CPU time.

share = replay CPU time / real wall time, over all searches. Both come from one run of one
checkout, so compare the shares of two checkouts, not their absolute times (the CPU is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

SUFFIX = "\n\nPlease reason step by step, and put your final answer within \\boxed{}."


def _key(prompt, sampling) -> tuple:
    return (tuple(prompt["prompt_token_ids"]), sampling.seed, tuple(sampling.stop or ()), sampling.max_tokens,
            sampling.logprobs)


def _snapshot(out) -> SimpleNamespace:
    o = out.outputs[0]
    lps = None if o.logprobs is None else [
        {int(t): SimpleNamespace(logprob=float(lp.logprob), rank=lp.rank) for t, lp in pos.items()}
        for pos in o.logprobs
    ]
    return SimpleNamespace(num_cached_tokens=out.num_cached_tokens, outputs=[SimpleNamespace(
        token_ids=list(o.token_ids), logprobs=lps, text=o.text, finish_reason=o.finish_reason,
        stop_reason=o.stop_reason)])


class Recorder:
    """Wraps the real AsyncLLM; keeps every output of every request by its sampling key."""

    def __init__(self, llm):
        self._llm, self.records = llm, {}

    def __getattr__(self, name):
        return getattr(self._llm, name)

    async def generate(self, prompt, sampling, request_id):
        rec = self.records[_key(prompt, sampling)] = []
        stream = self._llm.generate(prompt, sampling, request_id)
        try:
            async for out in stream:
                rec.append(_snapshot(out))
                yield out
        finally:
            await stream.aclose()


class Replay:
    """Stands in for AsyncLLM: hands back recorded outputs with no engine work."""

    def __init__(self, llm, records):
        self.model_config = llm.model_config
        self.records = records
        self._tokenizer = llm.get_tokenizer()
        self.output_processor = SimpleNamespace(get_num_unfinished_requests=lambda: 0)

    def get_tokenizer(self):
        return self._tokenizer

    async def generate(self, prompt, sampling, request_id):
        for out in self.records[_key(prompt, sampling)]:
            yield out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from cat_serve.engine.base import chat_prompt_ids
    from cat_serve.engine.vllm_engine import VLLMEngine
    from cat_serve.models import resolve_model
    from cat_serve.search import cat
    from cat_serve.search.params import CaTParams

    path, name = resolve_model(None)
    engine = VLLMEngine.create(path, name, max_model_len=2048, kv_cache_gib=1)
    data = Path(os.environ.get("CAT_SERVE_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
    questions = [json.loads(line)["question"] for line in open(data / "gsm8k_test.jsonl")][: args.n]
    prompts = [chat_prompt_ids(engine.tokenizer, [{"role": "user", "content": q + SUFFIX}]) for q in questions]
    params = CaTParams.from_dict({"mode": "stream", "branches": 3, "max_tokens": args.max_tokens,
                                  "temperature": 0.7, "seed": 0})
    real_llm = engine.llm
    await cat.run(engine, prompts[0], params)  # warm-up (compile, caches), not measured
    engine.llm = recorder = Recorder(real_llm)
    wall, tokens, texts = [], [], []
    for p in prompts:
        t0 = time.perf_counter()
        res = await cat.run(engine, p, params)
        wall.append(time.perf_counter() - t0)
        tokens.append(res.stats.tokens_generated)
        texts.append(res.text)
    engine.llm = Replay(real_llm, recorder.records)
    cpu, same = [], []
    for p, text in zip(prompts, texts):
        c0 = time.process_time()
        res = await cat.run(engine, p, params)
        cpu.append(time.process_time() - c0)
        same.append(res.text == text)
    engine.llm = real_llm
    result = {
        "requests": len(prompts), "tokens_generated": sum(tokens), "real_wall_s": round(sum(wall), 3),
        "orchestration_cpu_s": round(sum(cpu), 4), "share": round(sum(cpu) / sum(wall), 4),
        "per_request_share": [round(c / w, 4) for c, w in zip(cpu, wall)],
        "replay_reproduced_results": all(same),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    await engine.close()


if __name__ == "__main__":
    asyncio.run(main())
