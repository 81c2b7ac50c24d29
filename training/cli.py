"""``cat-train``: one subcommand per trainer, flags generated from the config dataclasses.

    cat-train sft    --model DIR --output-dir OUT [--max-steps N] ...
    cat-train rl     --objective grpo|gspo|capo|c2gspg --model DIR --output-dir OUT ...
    cat-train caspo  --rounds 3 --temperatures 0.7 1.0 1.2 --model DIR --output-dir OUT ...

Every flag, its default and help text come from ``training/config.py``. ``--resume`` continues
from the checkpoint in ``--output-dir``. (Also runnable as ``python -m training.cli``.)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import types
import typing
from collections.abc import Sequence

from cat_serve.process import reap_descendants_on_exit
from training.config import CASPOArgs, RLArgs, SFTArgs

COMMANDS = {"sft": SFTArgs, "rl": RLArgs, "caspo": CASPOArgs}


def _base_type(annotation):
    """``int | None`` -> int, ``tuple[float, ...]`` -> (float, True)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        origin = typing.get_origin(annotation)
    if origin in (tuple, list):
        return typing.get_args(annotation)[0], True
    return annotation, False


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{f.metadata.get('help', '')} (default: {default})"
        typ, many = _base_type(hints[f.name])
        if typ is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            parser.add_argument(flag, type=typ, default=default, nargs="+" if many else None,
                                choices=f.metadata.get("choices"), help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cat-train", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, cls in COMMANDS.items():
        add_dataclass_arguments(sub.add_parser(name, help=f"train with {cls.__name__}"), cls)
    return parser


def parse_args(argv: Sequence[str] | None = None):
    """(command name, filled config dataclass)."""
    ns = vars(build_parser().parse_args(argv))
    command = ns.pop("command")
    cls = COMMANDS[command]
    ns = {k: tuple(v) if isinstance(v, list) else v for k, v in ns.items()}
    return command, cls(**ns)


def run(command: str, args):
    if command == "sft":
        from training.sft import train_sft

        return train_sft(args)
    if command == "rl":
        from training.rl import train_rl

        return train_rl(args)
    from training.caspo import train_caspo

    return train_caspo(args)


def main(argv: Sequence[str] | None = None) -> int:
    command, args = parse_args(argv)
    # SIGTERM as an exception, so exit handlers run: a colocated vLLM engine (--rollout-engine vllm) shuts
    # its EngineCore process down on exit; killed without them, that process was left running (4 GB here)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    # ... and killed outright (SIGKILL, the OOM killer), a watchdog stops what it had started
    reap_descendants_on_exit()
    path = run(command, args)
    if int(os.environ.get("RANK", "0")) == 0:  # one line per run, not per process
        print(f"checkpoint written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
