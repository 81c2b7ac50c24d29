"""Async batch: many questions at once with AsyncOpenAI; a 429 (server queue full) is retried after
the server's Retry-After.

    python examples/async_batch.py [--base-url URL] [--concurrency 8]
"""

import argparse
import asyncio
import os

import openai

QUESTIONS = [f"What is {a} + {b}?" for a, b in [(2, 3), (17, 25), (120, 7), (9, 9), (44, 56), (3, 1000)]]


async def ask(client, model, question, sem):
    async with sem:
        for _ in range(5):
            try:
                r = await client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": question}], max_tokens=128,
                    extra_body={"search": "self_consistency", "search_params": {"n": 3}, "deadline_s": 120})
                return question, r.search["answer"], r.choices[0].confidence
            except openai.RateLimitError as e:
                await asyncio.sleep(float(e.response.headers.get("retry-after", "1")))
        return question, None, None


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--concurrency", type=int, default=8)
    a = ap.parse_args()
    client = openai.AsyncOpenAI(base_url=a.base_url, api_key=os.environ.get("CAT_SERVE_API_KEY", "none"),
                                max_retries=0)
    model = (await client.models.list()).data[0].id
    sem = asyncio.Semaphore(a.concurrency)
    for q, answer, conf in await asyncio.gather(*(ask(client, model, q, sem) for q in QUESTIONS)):
        print(f"{q:22} -> {answer}  (confidence {conf})")


asyncio.run(main())
