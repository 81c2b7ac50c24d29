#!/usr/bin/env bash
# A real (not smoke) CPU run on the embedded SmolLM2-135M-Instruct, outside the test suite:
#   1) rl --objective capo, 20 steps, rollouts from a colocated vLLM (weights reloaded every step), on the
#      GSM8K training questions whose reference solution has <= 2 steps (1,960 of 7,473: the easiest subset,
#      where a 135M model gets some answers right, so CAPO groups are sometimes mixed and the loss is not 0);
#   2) caspo, 1 round of step-pair collection + DPO.
# Outputs (checkpoints + logs) go under runs/ (gitignored). Usage: bash training/real_run.sh [RUN_DIR] [rl|caspo|all]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${1:-runs/real}
WHAT=${2:-all}
mkdir -p "$RUN_DIR"
export TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python}

if [[ $WHAT == all || $WHAT == rl ]]; then
  # 20 steps x (2 prompts x 8 samples), <= 192 new tokens, T = 1.0
  /usr/bin/time -f "rl wall %e s, max RSS %M KB" "$PY" -m training.cli rl --objective capo --model embedded --rollout-engine vllm \
    --output-dir "$RUN_DIR/rl_capo" --max-solution-steps 2 --max-steps 20 --prompts-per-step 2 --group-size 8 \
    --max-new-tokens 192 --learning-rate 5e-6 --temperature 1.0 --seed 0 2>&1 | tee "$RUN_DIR/rl_capo.log"
fi

if [[ $WHAT == all || $WHAT == caspo ]]; then
  # 1 round: 3 questions x every reference step x 4 candidates of <= 24 tokens, then 4 DPO steps
  OMP_NUM_THREADS=1 /usr/bin/time -f "caspo wall %e s, max RSS %M KB" "$PY" -m training.cli caspo --model embedded \
    --output-dir "$RUN_DIR/caspo" --limit 3 --rounds 1 --temperatures 0.7 --candidates-per-step 4 \
    --max-step-tokens 24 --max-steps 4 --batch-size 2 --learning-rate 1e-6 --seed 0 2>&1 | tee "$RUN_DIR/caspo.log"
fi
