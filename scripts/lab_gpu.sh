#!/usr/bin/env bash
# Issue 21 item 6: make lab-rl800's GRPO-vs-CAPO comparison at 10x its prompts on one NVIDIA GPU, in <= 10 min.
#
#   bash scripts/lab_gpu.sh            # on a CUDA machine; MODEL defaults to the lab's SFT checkpoint
#
# 8,000 distinct train prompts per objective (PROMPTS 64 x G 8 x STEPS 125, against lab-rl800's 8 x 8 x 100),
# the rest of lab-rl800's recipe (lr 1e-5, T 1.0, 64 new tokens, dev EVAL_LIMIT 64 x 8 every EVAL_EVERY steps),
# bf16 autocast. GRPO and CAPO run at once, two processes on the one GPU (a 135M policy and its sampler take a
# few GiB each). Rows go to results/lab/rl8000-gpu/<objective>-s<seed>/ (metrics.jsonl, segments.jsonl with
# the wall time), beside make lab-rl800's results/lab/rl800/; `make lab-report` shows them and states the
# claim on them. Without a GPU it exits 2, unless DEVICE=cpu (what the test runs, with the tiny model):
#
#   DEVICE=cpu MODEL=tiny STEPS=2 PROMPTS=2 EVAL_LIMIT=2 EVAL_EVERY=1 OUT=/tmp/x bash scripts/lab_gpu.sh
#
# Env: MODEL, TOKENIZER (with MODEL=tiny), SEED (0), STEPS, PROMPTS, EVAL_LIMIT, EVAL_EVERY, ROLLOUT_ENGINE (auto: vLLM when it imports,
# else transformers), DATA_DIR (arith needs none), OUT (results/lab/rl8000-gpu), PYTHON (python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
SEED=${SEED:-0}
STEPS=${STEPS:-125}
PROMPTS=${PROMPTS:-64}
EVAL_LIMIT=${EVAL_LIMIT:-64}
EVAL_EVERY=${EVAL_EVERY:-25}
ROLLOUT_ENGINE=${ROLLOUT_ENGINE:-auto}
OUT=${OUT:-results/lab/rl8000-gpu}
CKPT=${CKPT:-${TMPDIR:-/tmp}/cat-lab-gpu}
DIFFICULTY="ops=3,digits=1,distractors=1"  # lab/recipe LAB_DIFFICULTY
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

if [ "$DEVICE" = cuda ]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 2)" || {
    echo "no CUDA GPU here: scripts/lab_gpu.sh needs one (DEVICE=cpu runs the CPU test)" >&2; exit 2; }
  MIXED=bf16
else
  export CUDA_VISIBLE_DEVICES=""
  MIXED=no
fi
MODEL=${MODEL:-$("$PY" -c "from lab.recipe import sft_dir; print(sft_dir())")}

run_one() {  # run_one OBJECTIVE: cat-train rl, then its rows and wall time into $OUT/<objective>-s$SEED/
  local obj=$1 dest="$OUT/$1-s$SEED" t0
  t0=$(date +%s)
  mkdir -p "$dest"
  "$PY" -m training.cli rl --objective "$obj" --model "$MODEL" --output-dir "$CKPT/$obj-s$SEED" --resume \
    --data-path "arith:$DIFFICULTY@train" --eval-data-path "arith:$DIFFICULTY@dev" \
    --group-size 8 --prompts-per-step "$PROMPTS" --max-steps "$STEPS" --learning-rate 1e-5 --temperature 1.0 \
    --max-new-tokens 64 --seed "$SEED" --save-steps 25 --limit $((PROMPTS * STEPS)) \
    --eval-limit "$EVAL_LIMIT" --eval-samples 8 --eval-every "$EVAL_EVERY" \
    --mixed-precision "$MIXED" --rollout-engine "$ROLLOUT_ENGINE" ${TOKENIZER:+--tokenizer "$TOKENIZER"} \
    > "$dest/train.log" 2>&1
  "$PY" - "$CKPT/$obj-s$SEED" "$dest" "$t0" "$DEVICE" "$obj" <<'EOF'
import json, sys, time
from training.checkpoint import read_metrics
ckpt, dest, t0, device, obj = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
with open(f"{dest}/metrics.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in read_metrics(ckpt))
gpu = None
if device == "cuda":
    import torch
    gpu = torch.cuda.get_device_name(0)
with open(f"{dest}/segments.jsonl", "a") as f:
    f.write(json.dumps({"command": f"bash scripts/lab_gpu.sh ({obj})", "wall_s": round(time.time() - t0, 1),
                        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)), "device": device,
                        "gpu": gpu}) + "\n")
EOF
}

t0=$(date +%s)
run_one grpo & grpo=$!
run_one capo & capo=$!
rc=0
wait $grpo || rc=$?
wait $capo || rc=$?
echo "scripts/lab_gpu.sh: GRPO and CAPO done in $(( $(date +%s) - t0 )) s (rc $rc); rows in $OUT"
exit $rc
