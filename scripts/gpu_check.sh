#!/usr/bin/env bash
# Issue #13: the GPU path, run and measured on an NVIDIA GPU. Needs a CUDA machine (exits 2 without one).
#
#   bash scripts/gpu_check.sh                     # every phase, results in results/gpu/
#   PHASES="tests bench" ENGINE=vllm bash scripts/gpu_check.sh
#
# Phases (PHASES, in this order):
#   env    GPU name, driver, CUDA, library versions            -> env.txt
#   tests  pytest: tests/gpu (marker `gpu`; search checks through the openai SDK on the transformers engine
#          on CUDA, CUDA vs CPU exact entropy, training placement/bf16) + the transformers API test;
#          with ENGINE=vllm the vLLM API/search/entropy tests instead  -> pytest.log, pytest.xml (raw, not committed: the summary phase keeps their counts in tests.json)
#   bench  one server (ENGINE, default transformers on CUDA): greedy, SC@4, CaT stream in one `cat-eval bench`
#          on LIMIT (30) SingleOp items, then CaT adaptive on the same items; decode tokens/s at 1 and 16
#          concurrent requests                                  -> bench/, throughput.json
#   train  cat-train rl --objective capo 10 steps, caspo 1 round, sft 50 steps on the embedded model (bf16 on
#          the GPU), each checkpoint then served and asked one question -> train/*.log, serve_checks.jsonl
#   summary  summary.md from all of the above (scripts/gpu_summary.py)
# Data: $CAT_SERVE_DATA (default ../shared/data). Python: $PYTHON (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT_DIR:-results/gpu}
PY=${PYTHON:-python3}
ENGINE=${ENGINE:-transformers}
PHASES=${PHASES:-"env tests bench train summary"}
LIMIT=${LIMIT:-30}
BENCH_CONCURRENCY=${BENCH_CONCURRENCY:-1}
ROLLOUT_ENGINE=${ROLLOUT_ENGINE:-transformers}
PORT=${PORT:-8123}
VLLM_DTYPE=${VLLM_DTYPE:-bfloat16}  # the bench server's dtype with ENGINE=vllm (the checkpoint is fp32)
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)

log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT_DIR/timeline.txt"; }
timed() {  # timed NAME CMD...: run, log wall seconds and exit code
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  "$@"; local rc=$?
  local dt; dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}')
  log "$name: rc=$rc wall_s=$dt"
  echo "{\"name\": \"$name\", \"rc\": $rc, \"wall_s\": $dt}" >> "$OUT_DIR/walls.jsonl"
  return $rc
}

if ! (command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1); then
  echo "no NVIDIA GPU here (nvidia-smi -L failed): scripts/gpu_check.sh needs one" >&2
  exit 2
fi

export OUT_DIR PY ENGINE LIMIT BENCH_CONCURRENCY PORT
export -f log timed
serve() {  # serve LOGNAME MODEL ENGINE FUNCTION ARGS...: cat-serve on $PORT while FUNCTION runs (cat_serve.process
  # starts it, waits until it is healthy and stops its process group afterwards); the status is FUNCTION's, 3 if no start
  local name=$1 model=$2 engine=$3 fn=$4; shift 4
  local extra=()
  [[ $engine == transformers ]] && extra=(--device cuda)
  [[ $engine == vllm ]] && extra=(--dtype "$VLLM_DTYPE")
  export -f "$fn"
  "$PY" -m cat_serve.process --log "$OUT_DIR/server-$name.log" --port "$PORT" --run "$fn $(printf '%q ' "$@")" -- \
    "$PY" -m cat_serve --model "$model" --engine "$engine" --port "$PORT" --max-model-len 4096 "${extra[@]}"
}

phase_env() {
  {
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
    echo
    nvidia-smi
    "$PY" - <<'PYEOF'
import importlib.metadata as md, platform, torch
print("python", platform.python_version())
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0),
      "bf16", torch.cuda.is_bf16_supported())
for name in ("transformers", "accelerate", "trl", "vllm", "openai", "fastapi"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "not installed")
PYEOF
    echo "code: ${GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
  } > "$OUT_DIR/env.txt" 2>&1
  head -3 "$OUT_DIR/env.txt"
}

phase_tests() {
  local files=(tests/gpu tests/api/test_openai_transformers.py)
  [[ $ENGINE == vllm ]] && files=(tests/api/test_openai_vllm.py tests/api/test_search_vllm.py tests/engine/test_entropy.py)
  timed pytest "$PY" -m pytest "${files[@]}" -v -rs -p no:cacheprovider --junitxml="$OUT_DIR/pytest.xml" \
    2>&1 | tee "$OUT_DIR/pytest.log" | grep -E "PASSED|FAILED|ERROR|SKIPPED|passed|failed" | tail -60
}

bench_queries() {  # against the server `serve` started
  local common=(--dataset singleop --limit "$LIMIT" --seed 0 --concurrency "$BENCH_CONCURRENCY" --max-tokens 256
                --base-url "$CAT_SERVE_BASE_URL" --no-progress)
  timed bench "$PY" -m eval.cli bench "${common[@]}" --k 4 --searches none,self_consistency,cat \
    --search-params '{"cat": {"mode": "stream", "confident_threshold": 0.08, "tau": 0.0}}' --out "$OUT_DIR/bench" \
    2>&1 | tail -8
  timed throughput "$PY" scripts/throughput.py --base-url "$CAT_SERVE_BASE_URL" --levels 1,16 --max-tokens 128 \
    --out "$OUT_DIR/throughput.json"
  timed cat_adaptive "$PY" -m eval.cli run "${common[@]}" --search cat \
    --search-params '{"branches": 4, "return_candidates": true, "mode": "adaptive", "beam": 1, "confident_threshold": 0.25, "tau": 0.0}' \
    --out "$OUT_DIR/bench/cat_adaptive" 2>&1 | tail -3
}

phase_bench() {
  serve "bench-$ENGINE" embedded "$ENGINE" bench_queries
  [[ $? == 3 ]] && log "bench: server failed (its log: $OUT_DIR/server-bench-$ENGINE.log)"
}

one_search() {  # one_search NAME: one search request to the server `serve` started
  "$PY" - "$CAT_SERVE_BASE_URL" "$1" >> "$OUT_DIR/serve_checks.jsonl" <<'PYEOF'
import json, sys
from openai import OpenAI
base_url, name = sys.argv[1], sys.argv[2]
c = OpenAI(base_url=base_url, api_key="none")
model = c.models.list().data[0].id
r = c.chat.completions.create(model=model, max_tokens=96, messages=[{"role": "user", "content":
    "Tom has 3 apples and buys 4 more. How many apples does he have?"}],
    extra_body={"search": "self_consistency", "search_params": {"n": 4, "seed": 0}})
print(json.dumps({"checkpoint": name, "model": model, "answer": r.model_extra["search"]["answer"],
                  "confidence": r.choices[0].model_extra["confidence"], "content": r.choices[0].message.content[:200],
                  "completion_tokens": r.usage.completion_tokens}))
PYEOF
}

serve_check() {  # serve_check NAME CHECKPOINT: the checkpoint served, and asked one search question
  serve "$1" "$2" transformers one_search "$1"
  local rc=$?
  [[ $rc == 3 ]] && echo "{\"checkpoint\": \"$1\", \"error\": \"server failed\"}" >> "$OUT_DIR/serve_checks.jsonl"
  return $rc
}

phase_train() {
  local T="$OUT_DIR/train" C=${CKPT_DIR:-/tmp/cat-gpu-ckpt}
  mkdir -p "$T" "$C"
  # the CPU real run's settings (training/real_run.sh), 10 steps instead of 20
  timed rl_capo "$PY" -m training.cli rl --objective capo --model embedded --rollout-engine "$ROLLOUT_ENGINE" \
    --output-dir "$C/rl_capo" --max-solution-steps 2 --max-steps 10 --prompts-per-step 2 --group-size 8 \
    --max-new-tokens 192 --learning-rate 5e-6 --temperature 1.0 --seed 0 > "$T/rl_capo.log" 2>&1
  timed caspo "$PY" -m training.cli caspo --model embedded --output-dir "$C/caspo" --limit 3 --rounds 1 \
    --temperatures 0.7 --candidates-per-step 4 --max-step-tokens 24 --max-steps 4 --batch-size 2 \
    --learning-rate 1e-6 --seed 0 > "$T/caspo.log" 2>&1
  timed sft "$PY" -m training.cli sft --model embedded --output-dir "$C/sft" --max-steps 50 --batch-size 4 \
    --max-length 512 --learning-rate 1e-5 --save-steps 50 --seed 0 > "$T/sft.log" 2>&1
  for run in rl_capo caspo sft; do
    cp "$C/$run/metrics.jsonl" "$T/$run.metrics.jsonl" 2>/dev/null
    timed "serve_$run" serve_check "$run" "$C/$run"
  done
}

phase_summary() { "$PY" scripts/gpu_summary.py "$OUT_DIR" | tee "$OUT_DIR/summary.md"; }

for phase in $PHASES; do
  log "phase $phase"
  "phase_$phase"
done
log "done"
