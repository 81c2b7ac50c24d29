"""A basic call: one chat completion with CaT search, through the official openai SDK.

    python examples/basic_call.py [--base-url http://127.0.0.1:8000/v1]   # key: $CAT_SERVE_API_KEY
"""

import argparse
import os

from openai import OpenAI

ap = argparse.ArgumentParser()
ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
a = ap.parse_args()
client = OpenAI(base_url=a.base_url, api_key=os.environ.get("CAT_SERVE_API_KEY", "none"), max_retries=0)
model = client.models.list().data[0].id
r = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "What is 17 * 3?"}], max_tokens=256,
    extra_body={"search": "cat", "search_params": {"branches": 3, "max_steps": 8}},
)
print(r.choices[0].message.content)
print("confidence:", r.choices[0].confidence, "| answer:", r.search["answer"], "| tokens:", r.search["tokens_generated"])
