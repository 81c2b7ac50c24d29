"""Quick greedy accuracy of a checkpoint on an arith split, in-process (transformers, batched).

    python -m lab.greedy --model DIR --spec 'arith:ops=3,digits=2@dev' --limit 200 [--out rows.jsonl]

Used to choose the SFT recipe on the dev split without starting a server; the lab's reported numbers
come from ``cat-eval`` against a served checkpoint. The prompt is cat-eval's (question + its
boxed-answer instruction), graded by the project's one grader.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def greedy_accuracy(model_dir: str, spec: str, *, limit: int, batch_size: int = 32, max_new_tokens: int = 160,
                    suffix: str | None = None) -> tuple[float, list[dict]]:
    from cat_serve.search.formats import grade
    from cat_serve.prompts import EVAL_SUFFIX
    from eval.arith import parse_spec
    from training.models import load_model_and_tokenizer

    suffix = EVAL_SUFFIX if suffix is None else suffix
    parsed = parse_spec(spec, default_split="dev")
    if parsed.n is None:  # draw only what is evaluated (a prefix of the full split: same stream)
        parsed = type(parsed)(config=parsed.config, split=parsed.split, n=limit, seed=parsed.seed)
    problems = parsed.problems()[:limit]
    model, tok = load_model_and_tokenizer(model_dir, None, seed=0)
    model.eval()
    tok.padding_side = "left"
    rows = []
    for i in range(0, len(problems), batch_size):
        chunk = problems[i:i + batch_size]
        texts = [tok.apply_chat_template([{"role": "user", "content": p.question + suffix}], tokenize=False,
                                         add_generation_prompt=True) for p in chunk]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        for p, seq in zip(chunk, out[:, enc["input_ids"].shape[1]:]):
            text = tok.decode(seq, skip_special_tokens=True)
            rows.append({"question": p.question, "gold": p.answer, "output": text, "correct": grade(text, p.answer)})
    acc = sum(r["correct"] for r in rows) / max(len(rows), 1)
    return acc, rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    t = time.perf_counter()
    acc, rows = greedy_accuracy(args.model, args.spec, limit=args.limit, batch_size=args.batch_size)
    if args.out:
        with open(args.out, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    print(json.dumps({"model": args.model, "spec": args.spec, "n": len(rows), "accuracy": acc,
                      "seconds": round(time.perf_counter() - t, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
