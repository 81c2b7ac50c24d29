"""Strategy comparison: the same question under each search strategy, with cost and confidence.

    python examples/compare_strategies.py [--base-url URL] [--question "..."]
"""

import argparse
import os
import time

from openai import OpenAI

ap = argparse.ArgumentParser()
ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
ap.add_argument("--question", default="Tom has 3 boxes of 12 pencils and gives away 7. How many are left?")
a = ap.parse_args()
client = OpenAI(base_url=a.base_url, api_key=os.environ.get("CAT_SERVE_API_KEY", "none"), max_retries=0)
model = client.models.list().data[0].id
STRATEGIES = {
    "none": {},
    "self_consistency": {"n": 4},
    "deepconf": {"n": 4, "window": 16},
    "cat": {"branches": 3, "max_steps": 8},
}
print(f"{'strategy':18} {'answer':>10} {'confidence':>10} {'tokens':>7} {'seconds':>8}")
for name, params in STRATEGIES.items():
    extra = {"search": name, **({"search_params": params} if params else {})}
    t0 = time.monotonic()
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": a.question}],
                                       max_tokens=256, seed=0, extra_body=extra)
    search = getattr(r, "search", None) or {}
    answer = search.get("answer") or r.choices[0].message.content.strip()[-10:]
    tokens = search.get("tokens_generated", r.usage.completion_tokens)
    conf = r.choices[0].confidence
    print(f"{name:18} {answer!s:>10} {conf if conf is None else round(conf, 3)!s:>10} {tokens:>7} "
          f"{time.monotonic() - t0:>8.2f}")
