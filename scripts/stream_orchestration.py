"""Search-orchestration share of stream-mode CaT request latency.

    python scripts/stream_orchestration.py --record out.pkl      # real vLLM engine, in process
    python scripts/stream_orchestration.py --replay out.pkl      # any checkout, no engine

1. record: ``VLLMEngine`` on the embedded model runs ``--n`` stream-mode CaT searches over the
   first GSM8K test questions, one at a time; each search's wall time is its request latency.
   Every output vLLM hands the adapter is saved.
2. replay: the same searches against a stand-in for vLLM's ``AsyncLLM`` that hands back the saved
   outputs at once. What still costs time there is cat-serve's own work on the outputs (adapter,
   segmenter, search): the orchestration, measured as process CPU time (best of ``--repeat``).

share = orchestration CPU time / recorded request latency, over all searches. Replaying one
recording through two checkouts compares their orchestration on identical engine output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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


def _setup(args, **extra):
    from cat_serve.engine.base import chat_prompt_ids
    from cat_serve.search.params import CaTParams

    data = Path(os.environ.get("CAT_SERVE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    questions = [json.loads(line)["question"] for line in open(data / "gsm8k_test.jsonl")][: args.n]

    def prompts(tokenizer):
        return [chat_prompt_ids(tokenizer, [{"role": "user", "content": q + SUFFIX}]) for q in questions]

    params = CaTParams.from_dict({"mode": "stream", "branches": 3, "max_tokens": args.max_tokens,
                                  "temperature": 0.7, "seed": 0, **extra})
    return prompts, params


async def record(args) -> None:
    """Real engine: per-search wall time, and every vLLM output, saved to ``args.record``."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from cat_serve.engine.vllm_engine import VLLMEngine
    from cat_serve.models import resolve_model
    from cat_serve.search import cat

    make_prompts, params = _setup(args)
    path, name = resolve_model(None)
    engine = VLLMEngine.create(path, name, max_model_len=2048, kv_cache_gib=1)
    prompts = make_prompts(engine.tokenizer)
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
    engine.llm = real_llm
    await engine.close()
    with open(args.record, "wb") as f:
        pickle.dump({"wall": wall, "tokens": tokens, "texts": texts, "records": recorder.records,
                     "max_model_len": engine.max_model_len, "vocab_size": engine.vocab_size}, f)
    print(json.dumps({"requests": len(prompts), "tokens_generated": sum(tokens), "real_wall_s": round(sum(wall), 3)}))


async def replay(args) -> None:
    """No engine: the recorded outputs through this checkout's adapter and search; CPU time."""
    from transformers import AutoTokenizer

    from cat_serve.engine.vllm_engine import VLLMEngine
    from cat_serve.models import resolve_model
    from cat_serve.search import cat

    with open(args.replay, "rb") as f:
        rec = pickle.load(f)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None)[0])
    cfg = SimpleNamespace(max_model_len=rec["max_model_len"], get_vocab_size=lambda: rec["vocab_size"])
    llm = SimpleNamespace(model_config=cfg, get_tokenizer=lambda: tokenizer)
    engine = VLLMEngine(Replay(llm, rec["records"]), "replay")
    make_prompts, params = _setup(args)
    prompts = make_prompts(tokenizer)
    best = None
    for _ in range(args.repeat):
        cpu, same = [], []
        for p, text in zip(prompts, rec["texts"]):
            c0 = time.process_time()
            res = await cat.run(engine, p, params)
            cpu.append(time.process_time() - c0)
            same.append(res.text == text)
        if best is None or sum(cpu) < sum(best):
            best = cpu
    wall = rec["wall"]
    result = {
        "requests": len(prompts), "tokens_generated": sum(rec["tokens"]), "recorded_real_wall_s": round(sum(wall), 3),
        "orchestration_cpu_s": round(sum(best), 4),
        "orchestration_cpu_us_per_token": round(1e6 * sum(best) / sum(rec["tokens"]), 1),
        "share": round(sum(best) / sum(wall), 5), "replay_reproduced_results": all(same),
    }
    print(json.dumps(result))


class Synthetic:
    """Stands in for AsyncLLM with no recording: every request streams, one token per output, a GSM8K
    reference solution (steps separated by blank lines, ``--copies`` times, then ``\\boxed{}``) with
    peaked top-20 logprobs, so every step is confident and stream mode follows it in one request."""

    def __init__(self, tokenizer, vocab_size: int, solutions: list, max_model_len: int = 1 << 16):
        self.model_config = SimpleNamespace(max_model_len=max_model_len, get_vocab_size=lambda: vocab_size)
        self._tokenizer = tokenizer
        self.output_processor = SimpleNamespace(get_num_unfinished_requests=lambda: 0)
        self.streams = {}  # prompt -> [(token id, text delta)], decoded before any timing
        for prompt, solution in solutions:
            ids, text, stream = tokenizer.encode(solution, add_special_tokens=False), "", []
            for n, tid in enumerate(ids, 1):
                full = tokenizer.decode(ids[:n], skip_special_tokens=True)
                stream.append((tid, full[len(text):]))
                text = full
            self.streams[tuple(prompt)] = stream

    def get_tokenizer(self):
        return self._tokenizer

    async def generate(self, prompt, sampling, request_id):
        stream = self.streams[tuple(prompt["prompt_token_ids"])][: sampling.max_tokens]
        for n, (tid, delta) in enumerate(stream, 1):
            entries = {tid: SimpleNamespace(logprob=-0.001, rank=1)}
            entries.update({tid + r: SimpleNamespace(logprob=-9.0 - r, rank=r + 1) for r in range(1, 20)})
            last = n == len(stream)
            yield SimpleNamespace(num_cached_tokens=0, outputs=[SimpleNamespace(
                token_ids=[tid], logprobs=[entries], text=delta,
                finish_reason=("length" if n == sampling.max_tokens else "stop") if last else None, stop_reason=None)])


async def synthetic(args) -> None:
    """No engine and no recording: orchestration CPU time on the synthetic streams of ``Synthetic``."""
    from transformers import AutoTokenizer

    from cat_serve.engine.vllm_engine import VLLMEngine
    from cat_serve.models import resolve_model
    from cat_serve.search import cat

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None)[0])
    data = Path(os.environ.get("CAT_SERVE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    rows = [json.loads(line) for line in open(data / "gsm8k_test.jsonl")][: args.n]
    solutions = []
    for row in rows:
        steps, final = row["answer"].split("####")
        body = args.sep.join(line.strip() for line in steps.strip().splitlines())
        solutions.append(args.sep.join([body] * args.copies) + f"\n\nThe answer is \\boxed{{{final.strip()}}}.")
    make_prompts, params = _setup(args, max_steps=1024)  # every step is confident: one request per search
    prompts = make_prompts(tokenizer)
    llm = Synthetic(tokenizer, len(tokenizer), list(zip(prompts, solutions)))
    engine = VLLMEngine(llm, "synthetic")
    best, tokens, answers = None, 0, []
    for _ in range(args.repeat):
        cpu, tokens, answers = [], 0, []
        for p in prompts:
            c0 = time.process_time()
            res = await cat.run(engine, p, params)
            cpu.append(time.process_time() - c0)
            tokens += res.stats.tokens_generated
            answers.append(res.answer)
        if best is None or sum(cpu) < sum(best):
            best = cpu
    print(json.dumps({"requests": len(prompts), "tokens_generated": tokens, "copies": args.copies,
                      "answers": answers, "orchestration_cpu_s": round(sum(best), 4),
                      "us_per_token": round(1e6 * sum(best) / tokens, 1)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--record", help="run the real engine and save its outputs here")
    ap.add_argument("--replay", help="replay saved outputs through this checkout (no engine)")
    ap.add_argument("--repeat", type=int, default=5, help="replay: best of this many passes")
    ap.add_argument("--synthetic", action="store_true", help="no engine, no recording: synthetic streams")
    ap.add_argument("--copies", type=int, default=1, help="synthetic: solution copies per stream (length)")
    ap.add_argument("--sep", default="\n\n", help="synthetic: between solution lines ('\\n\\n': one step each)")
    args = ap.parse_args()
    asyncio.run(synthetic(args) if args.synthetic else record(args) if args.record else replay(args))


if __name__ == "__main__":
    main()
