"""`cat-client ask "question" [--search cat] [--param k=v ...] [--base-url URL] [--json] [--stream]`,
`cat-client models`, `cat-client health`.

Prints the answer text, then one line with the confidence and search statistics (``--stream`` prints
search progress events on stderr as they arrive); ``--json`` prints the raw response JSON instead (one chunk
per line with ``--stream``). ``--param`` values are parsed as JSON when possible
(``--param branches=4 --param step_delimiters='["\\n\\n"]'``), else kept as strings. Errors print
the server's message on stderr and exit 1 (2 for bad command-line usage).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import openai

from clients.cat_client import DEFAULT_BASE_URL, STRATEGIES, Answer, CatClient, error_message


def parse_param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def _common() -> argparse.ArgumentParser:
    c = argparse.ArgumentParser(add_help=False)
    c.add_argument("--base-url", default=os.environ.get("CAT_SERVE_BASE_URL", DEFAULT_BASE_URL),
                   help="server URL including /v1 (default: $CAT_SERVE_BASE_URL or %(default)s)")
    c.add_argument("--api-key", default=os.environ.get("CAT_SERVE_API_KEY") or os.environ.get("OPENAI_API_KEY", "none"),
                   help="default: $CAT_SERVE_API_KEY, else $OPENAI_API_KEY")
    c.add_argument("--timeout", type=float, default=600.0, help="seconds (default: %(default)s)")
    return c


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cat-client", description="Talk to a cat-serve server.")
    sub = p.add_subparsers(dest="command", required=True)
    common = _common()
    sub.add_parser("models", parents=[common], help="list the served models")
    sub.add_parser("health", parents=[common], help="the server's /health (engine, in-flight requests)")
    ask = sub.add_parser("ask", parents=[common], help="ask one question")
    ask.add_argument("question")
    ask.add_argument("--search", default="cat", help=f"search strategy: {', '.join(STRATEGIES)} (default: cat)")
    ask.add_argument("--param", "-p", action="append", type=parse_param, default=[], metavar="KEY=VALUE",
                     help="a search_params field or OpenAI request field (max_tokens, temperature, ...); repeatable")
    ask.add_argument("--system", default=None, help="system prompt")
    ask.add_argument("--model", default=None, help="model id (default: the server's first model)")
    ask.add_argument("--json", action="store_true", help="print the raw response JSON")
    ask.add_argument("--stream", action="store_true", help="stream progress events and text")
    return p


def _ask(args: argparse.Namespace) -> int:
    client = CatClient(args.base_url, args.api_key, args.model, timeout=args.timeout)
    params = dict(args.param)
    if args.json and not args.stream:
        print(json.dumps(client.create(args.question, search=args.search, system=args.system, **params).model_dump()))
        return 0
    if args.json:
        for chunk in client.create(args.question, search=args.search, system=args.system, stream=True, **params):
            print(json.dumps(chunk.model_dump()), flush=True)
        return 0
    if not args.stream:
        answer = client.ask(args.question, search=args.search, system=args.system, **params)
        print(answer.text)
        print(answer.summary())
        return 0
    for item in client.stream(args.question, search=args.search, system=args.system, **params):
        if isinstance(item, str):
            print(item, end="", flush=True)
        elif isinstance(item, Answer):
            print()
            print(item.summary())
        else:  # a search progress event
            print(f"[{item.get('type', 'event')}] " + json.dumps({k: v for k, v in item.items() if k != "type"}),
                  file=sys.stderr, flush=True)
    return 0


def _models(args: argparse.Namespace) -> int:
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, timeout=args.timeout, max_retries=0)
    for m in client.models.list().data:
        extra = getattr(m, "max_model_len", None)
        print(m.id if extra is None else f"{m.id}\tmax_model_len={extra}")
    return 0


def _health(args: argparse.Namespace) -> int:
    import httpx

    root = args.base_url.rstrip("/").removesuffix("/v1")
    try:
        r = httpx.get(f"{root}/health", timeout=args.timeout)
    except httpx.HTTPError as e:  # connection refused, timeout
        print(f"error: {e} ({root}/health)", file=sys.stderr)
        return 1
    print(json.dumps(r.json()) if r.headers.get("content-type", "").startswith("application/json") else r.text)
    return 0 if r.status_code == 200 else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "models":
            return _models(args)
        if args.command == "health":
            return _health(args)
        return _ask(args)
    except openai.APIStatusError as e:
        print(f"error: {e.status_code}: {error_message(e)}", file=sys.stderr)
    except openai.APIError as e:  # connection errors, timeouts, errors sent mid-stream
        print(f"error: {error_message(e)} ({args.base_url})", file=sys.stderr)

    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
