"""Session fixtures: real cat-serve servers (uvicorn subprocesses) on 127.0.0.1, one per engine.

Each server starts once per test session, on the embedded model, and is called through the
official `openai` SDK. Its log goes to a file shown when startup fails.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL_NAME = "SmolLM2-135M-Instruct"
TEST_MAX_MODEL_LEN = 2048


@dataclass
class Server:
    root: str  # http://127.0.0.1:PORT
    base_url: str  # root + /v1
    model: str
    engine: str
    log: Path
    proc: subprocess.Popen

    def client(self, **kw):
        from openai import OpenAI

        return OpenAI(base_url=self.base_url, api_key="none", max_retries=0, timeout=kw.pop("timeout", 600), **kw)

    def health(self) -> dict:
        return httpx.get(f"{self.root}/health", timeout=10).json()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(proc: subprocess.Popen, root: str, log: Path, what: str, timeout: float = 600) -> None:
    """Poll ``root``/health until it answers 200; fail with the log's tail if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{root}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.kill()
    pytest.fail(f"{what} not ready after {timeout}s:\n{log.read_text()[-4000:]}")


def start_server(engine: str, log_dir: Path, *extra: str, timeout: float = 600) -> Server:
    port = _free_port()
    log = log_dir / f"server-{engine}.log"
    cmd = [sys.executable, "-m", "cat_serve", "--engine", engine, "--port", str(port),
           "--max-model-len", str(TEST_MAX_MODEL_LEN), *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    root = f"http://127.0.0.1:{port}"
    wait_until_healthy(proc, root, log, f"{engine} server", timeout)
    return Server(root, f"{root}/v1", MODEL_NAME, engine, log, proc)


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.proc.kill()


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory):
    # float32 so that logprobs match the transformers reference closely (entropy-bound test)
    server = start_server("vllm", tmp_path_factory.mktemp("vllm"), "--dtype", "float32")
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def hf_server(tmp_path_factory):
    server = start_server("transformers", tmp_path_factory.mktemp("hf"))
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def hf_cuda_server(tmp_path_factory):
    """The transformers engine on the GPU (``--device cuda``); skipped without CUDA."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    server = start_server("transformers", tmp_path_factory.mktemp("hf-cuda"), "--device", "cuda")
    yield server
    stop_server(server)
