"""Group sampling through the engine layer (issue D): ``engine.extend([prompt_ids], n=G, params)``.

Two rollout engines, chosen with ``--rollout-engine``:

* ``transformers`` (default): ``cat_serve.engine.hf_engine.HFEngine`` wrapped around the *live*
  policy object. It samples from the current weights, so no weight sync is ever needed, and its
  per-token entropies are exact (full-vocabulary ``-sum p log p`` of the raw distribution).
  ``HFEngine`` builds its batches on the CPU; for a policy on an accelerator ``OnDevice`` moves the
  inputs to the policy's device and the last-position logits back.
* ``vllm``: TRL's vLLM *server* mode. Start ``trl vllm-serve --model <same checkpoint>`` on
  separate GPUs; ``TRLVLLMServerEngine`` samples through ``trl.generation.vllm_client.VLLMClient``
  (token-id prompts, ``n`` samples per prompt) and pushes the policy weights to the server over NCCL
  (``sync_weights``) before every rollout. vLLM returns no entropies, so those are NaN here and the
  trainer computes them from its own forward pass. It needs CUDA, ``vllm`` and ``requests``; when any
  is missing it raises ``RolloutEngineUnavailable`` naming what to do. Not verified in this repo's
  CPU-only sessions.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from types import SimpleNamespace

import torch

from cat_serve.search.types import EOS, LENGTH, GenParams, Step

ROLLOUT_ENGINES = ("transformers", "vllm")


class RolloutEngineUnavailable(RuntimeError):
    """The requested rollout engine cannot run on this machine."""


class OnDevice:
    """Just enough of a causal LM for ``HFEngine``: moves CPU inputs to the model's device and returns
    the logits on the CPU (``HFEngine`` samples with CPU generators). The KV cache stays on the device."""

    def __init__(self, model):
        self.model = model
        self.config = model.config
        self.generation_config = model.generation_config
        self.device = next(model.parameters()).device

    def eval(self):
        self.model.eval()
        return self

    def __call__(self, *, input_ids, attention_mask, position_ids, past_key_values, use_cache):
        out = self.model(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                         position_ids=position_ids.to(self.device), past_key_values=past_key_values,
                         use_cache=use_cache)
        return SimpleNamespace(logits=out.logits[:, -1:].float().cpu(), past_key_values=out.past_key_values)


def policy_engine(policy, tokenizer, *, max_model_len: int | None = None):
    """An ``HFEngine`` sampling from the live ``policy`` (its current weights, no copy)."""
    from cat_serve.engine.hf_engine import HFEngine

    device = next(policy.parameters()).device
    model = policy if device.type == "cpu" else OnDevice(policy)
    return HFEngine(model, tokenizer, model_name="policy", max_model_len=max_model_len)


class TRLVLLMServerEngine:
    """``extend`` against a ``trl vllm-serve`` server, plus NCCL weight sync from the trainer."""

    kind = "vllm"

    def __init__(self, tokenizer, *, host: str = "127.0.0.1", port: int = 8000, group_port: int = 51216,
                 timeout: float = 240.0):
        if not torch.cuda.is_available():
            raise RolloutEngineUnavailable(
                "--rollout-engine vllm needs CUDA (the trainer pushes weights to the vLLM server over NCCL); "
                "this machine has no GPU. Use --rollout-engine transformers here, or on a GPU machine start "
                "`trl vllm-serve --model <checkpoint>` on separate GPUs first (see training/README.md).")
        try:
            from trl.generation.vllm_client import VLLMClient

            self.client = VLLMClient(host=host, server_port=port, group_port=group_port,
                                     connection_timeout=timeout)
        except ImportError as exc:
            raise RolloutEngineUnavailable(
                f"--rollout-engine vllm needs TRL's vLLM client: {exc} "
                "(install vllm and requests, then start `trl vllm-serve --model <checkpoint>`).") from exc
        self.tokenizer = tokenizer
        eos = {tokenizer.eos_token_id}
        self.eos_ids = {int(e) for e in eos if e is not None}
        self._communicator = False

    def sync_weights(self, model) -> None:
        """Push the current policy weights into the server (call after each optimiser step)."""
        if not self._communicator:
            self.client.init_communicator(device=next(model.parameters()).device)
            self._communicator = True
        self.client.update_model_params(model)
        self.client.reset_prefix_cache()

    async def extend(self, prefixes: Sequence[Sequence[int]], n: int, params: GenParams, *, early_stop=None):
        if early_stop is not None:
            raise NotImplementedError("early_stop is not supported by the TRL vLLM server engine")
        extra = {} if params.seed is None else {"seed": params.seed}
        out = await asyncio.to_thread(
            self.client.generate, [list(p) for p in prefixes], n=n, temperature=params.temperature,
            top_p=params.top_p, max_tokens=params.max_tokens, logprobs=0, generation_kwargs=extra)
        steps = []
        for ids, lps in zip(out["completion_ids"], out["logprobs"]):
            finish = EOS if ids and ids[-1] in self.eos_ids else LENGTH
            steps.append(Step(token_ids=tuple(ids), logprobs=tuple(float(row[0]) for row in lps),
                              entropies=(math.nan,) * len(ids), text=self.tokenizer.decode(ids, skip_special_tokens=True),
                              finish_reason=finish))
        return [steps[i * n:(i + 1) * n] for i in range(len(prefixes))]

    async def close(self) -> None:
        self.client.close_communicator()


def sample_groups(engine, prompts: Sequence[Sequence[int]], n: int, params: GenParams) -> list[list[Step]]:
    """``n`` samples for every prompt through ``engine.extend`` (synchronously)."""
    return asyncio.run(engine.extend([list(p) for p in prompts], n, params))
