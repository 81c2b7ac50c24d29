#!/usr/bin/env bash
# A real (not smoke) CPU run on the embedded SmolLM2-135M-Instruct: 20 CAPO RL steps, then 1 CASPO round,
# on the first GSM8K training questions. One CPU thread (shared machine). Measured: rl 309 s, caspo 72 s.
# At 48 new tokens SmolLM2-135M rarely reaches "#### answer", so rewards are mostly 0 (CAPO loss 0):
# this checks the pipeline end to end, not learning. Raise --max-new-tokens (256+) on faster hardware.
# Outputs (checkpoints + logs) go under runs/ (gitignored). Usage: bash training/real_run.sh [RUN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${1:-runs/real}
mkdir -p "$RUN_DIR"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python}

# 1) online RL with the CAPO objective: 20 steps x (1 prompt x 2 samples), 48 new tokens, HFEngine rollouts
/usr/bin/time -f "rl wall %e s" "$PY" -m training.cli rl --objective capo --model embedded \
  --output-dir "$RUN_DIR/rl_capo" --limit 20 --max-steps 20 --prompts-per-step 1 --group-size 2 \
  --max-new-tokens 48 --learning-rate 1e-6 --temperature 1.0 --seed 0 2>&1 | tee "$RUN_DIR/rl_capo.log"

# 2) CASPO: 1 round of step-pair collection (3 questions x every reference step x 4 candidates of
#    <= 24 tokens) then 4 DPO steps against a frozen copy of the policy
/usr/bin/time -f "caspo wall %e s" "$PY" -m training.cli caspo --model embedded \
  --output-dir "$RUN_DIR/caspo" --limit 3 --rounds 1 --temperatures 0.7 --candidates-per-step 4 \
  --max-step-tokens 24 --max-steps 4 --batch-size 2 --learning-rate 1e-6 --seed 0 2>&1 | tee "$RUN_DIR/caspo.log"
