"""Atomic HF checkpoint directories.

A checkpoint is a directory loadable by ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` that also holds:

* ``training_args.json`` -- the config dataclass of the run (plus ``"command"``);
* ``metrics.jsonl``      -- one JSON object per logged step, the full history of the run;
* ``state.json``         -- ``{"step": n, ...}``, what ``--resume`` continues from;
* ``optimizer.pt``       -- the optimiser state (RL), so a resumed run continues the same updates;
* extra files a trainer adds (CASPO: ``pairs_round*.jsonl``).

It is written to a temporary sibling directory and renamed into place, so a crash never leaves a
half-written checkpoint under the final name.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from cat_serve.files import read_jsonl

ARGS_FILE = "training_args.json"
METRICS_FILE = "metrics.jsonl"
STATE_FILE = "state.json"


def _jsonable(args) -> dict:
    return dataclasses.asdict(args) if dataclasses.is_dataclass(args) else dict(args)


def save_checkpoint(
    output_dir: str | os.PathLike,
    model,
    tokenizer,
    *,
    args,
    metrics: Iterable[dict],
    state: dict,
    extra: Callable[[Path], None] | None = None,
    state_dict: dict | None = None,
) -> Path:
    """Write model, tokenizer (with chat template), args, metrics and state atomically.

    ``state_dict`` (e.g. gathered from FSDP / ZeRO-3 shards) replaces the model's own when given.
    ``extra(tmp_dir)`` may write more files before the rename; with ``model`` and ``tokenizer`` None it
    must write them itself (the SFT trainer copies the Trainer's own saved checkpoint). Returns the
    final directory.
    """
    final = Path(output_dir).resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        if model is not None:
            model.save_pretrained(tmp, state_dict=state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / ARGS_FILE).write_text(json.dumps(_jsonable(args), indent=2, default=str))
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
        with open(tmp / METRICS_FILE, "w") as f:
            for row in metrics:
                f.write(json.dumps(row) + "\n")
        if extra is not None:
            extra(tmp)
        _swap_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an existing ``final`` is moved aside first and deleted after."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def is_checkpoint(path: str | os.PathLike) -> bool:
    return (Path(path) / STATE_FILE).exists() and (Path(path) / "config.json").exists()


def read_state(path: str | os.PathLike) -> dict:
    return json.loads((Path(path) / STATE_FILE).read_text())


def read_metrics(path: str | os.PathLike) -> list[dict]:
    file = Path(path) / METRICS_FILE
    if not file.exists():
        return []
    return read_jsonl(file)
