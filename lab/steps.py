"""Step-level calibration of a checkpoint on arith (lab experiment 3c, analogue of the CASPO paper's Tables 6/8).

    python -m lab.steps --model DIR --split dev --limit 64 --out results/lab/caspo/sft_dev

For each question the model writes its solution one step (line) at a time, on-policy: every step is
sampled from the context of its own earlier steps, and the exact critic (``eval.arith.Critic``, from the
model's own state) judges it. Per step we keep the mean token entropy, the mean max-token probability
and the perplexity exp(-mean logprob), all from the raw (temperature-1) distribution. ``step_metrics``
then reports ECE and Brier of the CASPO confidence c = exp(-mean token entropy) (as ``training.caspo``
computes it), the mean entropy of correct vs incorrect steps and its gap, and the step-correctness
AUROC of three scores: -entropy, max-token probability, -perplexity.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path


def step_stats(logprobs: Sequence[float], entropies: Sequence[float], max_logprobs: Sequence[float]) -> dict:
    k = max(len(logprobs), 1)
    mean_entropy = sum(entropies) / k
    return {"mean_entropy": mean_entropy, "confidence": math.exp(-mean_entropy),
            "max_prob": sum(math.exp(x) for x in max_logprobs) / k,
            "perplexity": math.exp(-sum(logprobs) / k)}


def step_metrics(rows: Sequence[dict]) -> dict:
    """Metrics of judged steps (``correct`` plus ``step_stats``' keys)."""
    from eval.metrics import auroc, brier, ece

    correct = [bool(r["correct"]) for r in rows]
    conf = [r["confidence"] for r in rows]
    ent_ok = [r["mean_entropy"] for r in rows if r["correct"]]
    ent_bad = [r["mean_entropy"] for r in rows if not r["correct"]]
    mean = (lambda xs: sum(xs) / len(xs) if xs else None)
    gap = mean(ent_bad) - mean(ent_ok) if ent_ok and ent_bad else None
    return {
        "steps": len(rows), "step_accuracy": mean([float(c) for c in correct]),
        "ece": ece(conf, correct), "brier": brier(conf, correct),
        "entropy_correct": mean(ent_ok), "entropy_incorrect": mean(ent_bad), "entropy_gap": gap,
        "auroc_entropy": auroc([-r["mean_entropy"] for r in rows], correct),
        "auroc_max_prob": auroc([r["max_prob"] for r in rows], correct),
        "auroc_perplexity": auroc([-r["perplexity"] for r in rows], correct),
    }


def collect(model_dir: str, spec: str, *, limit: int, temperature: float = 1.0, max_step_tokens: int = 32,
            seed: int = 0, tokenizer: str | None = None, batch: int = 64) -> list[dict]:
    """On-policy judged steps of ``limit`` problems of an arith spec (HFEngine on the checkpoint), ``batch``
    problems at a time (``collect_steps``)."""
    import torch

    from cat_serve.search.types import GenParams
    from eval.arith import parse_spec
    from training.models import load_model_and_tokenizer
    from training.rollout import PolicyEngine

    torch.manual_seed(seed)
    model, tok = load_model_and_tokenizer(model_dir, tokenizer, seed=seed)
    model.eval()
    params = GenParams(max_tokens=max_step_tokens, temperature=temperature, stop=("\n",), top_logprobs=1)
    problems = parse_spec(spec, default_split="dev").problems()[:limit]
    return collect_steps(PolicyEngine(model, tok), tok, problems, params, batch=batch)


def collect_steps(engine, tok, problems: Sequence, params, *, batch: int = 64) -> list[dict]:
    """Each problem's solution one step (line) at a time, each step sampled from the context of the problem's own
    earlier steps and judged by the exact critic; a problem ends at an empty step, a "####" line, an empty
    sample or ``len(ops) + 2`` steps. The j-th steps of up to ``batch`` problems are sampled in one
    ``engine.sample_groups`` call (one left-padded batch in HFEngine). Rows in (question, j) order."""
    from eval.arith import Critic
    from training.rl import question_prompt_ids

    rows = []
    for lo in range(0, len(problems), batch):
        live = {qi: {"critic": Critic.from_problem(p), "prompt": question_prompt_ids(tok, p.question), "lines": [],
                     "steps": len(p.ops) + 2} for qi, p in enumerate(problems[lo:lo + batch], start=lo)}
        j = 0
        while live := {qi: state for qi, state in live.items() if j < state["steps"]}:
            qs = list(live)
            ids = [live[qi]["prompt"] + tok("".join(s + "\n" for s in live[qi]["lines"]),
                                           add_special_tokens=False)["input_ids"] for qi in qs]
            for qi, group in zip(qs, engine.sample_groups(ids, 1, params)):
                st, state = group[0], live[qi]
                text = st.text.strip()
                if not st.token_ids:
                    del live[qi]
                    continue
                maxes = [top[0][1] if top else lp for top, lp in zip(st.top_logprobs or [()] * len(st.logprobs),
                                                                      st.logprobs)]
                judged = state["critic"].judge(state["lines"], text)
                rows.append({"question": qi, "j": j, "step": text, "correct": judged,
                             **step_stats(st.logprobs, st.entropies, maxes)})
                if not text or text.startswith("####"):
                    del live[qi]
                else:
                    state["lines"].append(text)
            j += 1
    return sorted(rows, key=lambda r: (r["question"], r["j"]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--spec", required=True, help="e.g. arith:ops=3,digits=2,distractors=1@dev")
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    steps_file = args.out / "steps.jsonl"
    if steps_file.exists():  # resumable: a finished collection is not redone
        rows = [json.loads(line) for line in steps_file.read_text().splitlines() if line.strip()]
    else:
        rows = collect(args.model, args.spec, limit=args.limit)
        steps_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"model": args.model, "spec": args.spec, "limit": args.limit, **step_metrics(rows)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
