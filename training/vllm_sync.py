"""Runs inside vLLM's worker process: reload the policy's weights in place (``--rollout-engine vllm``).

vLLM is started with ``worker_extension_cls="training.vllm_sync.WeightSync"``, which mixes this class
into its worker, so ``await llm.collective_rpc("cat_reload_weights", args=(dir,))`` calls it there.
The trainer writes the weights as safetensors to ``dir`` (``save_pretrained``, in /dev/shm when it
exists) and vLLM reads them with its own loader, ``Worker.reload_weights(weights_path=...)``, which
also re-runs each layer's post-load processing (on CPU: the oneDNN weight packing).

One thing that path misses: with tied embeddings the LM head shares the embedding's weight, and on
CPU its packed GEMM copy is built from that weight once, so after the reload it still holds the old
values (measured: sampled log-probs then match neither the old nor the new policy, |gap| ~1.2 nats on
a tiny Llama). Re-running the head's post-load processing fixes it (gap 0.0).
"""

from __future__ import annotations


class WeightSync:
    def cat_reload_weights(self, weights_dir: str) -> None:
        self.model_runner.reload_weights(weights_path=weights_dir)
        model = self.model_runner.get_model()
        head = getattr(model, "lm_head", None)
        if head is not None and hasattr(head, "cpu_linear") and hasattr(head, "quant_method"):
            head.quant_method.process_weights_after_loading(head)
