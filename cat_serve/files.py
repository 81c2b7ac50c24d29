"""Files that the eval, the trainer and the tools all read: the benchmark data folder and JSON Lines."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

DATA_ENV = "CAT_SERVE_DATA"  # the benchmark data folder, for cat-eval, cat-train and .ci/run alike
REPO_ROOT = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    """``$CAT_SERVE_DATA`` if set, else ``<repo>/../shared/data``."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def read_jsonl(path: str | os.PathLike, *, skip_invalid: bool = False) -> list[dict]:
    """One object per non-blank line. ``skip_invalid`` drops lines that do not parse (a results file
    whose last write was interrupted); otherwise they raise."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if not skip_invalid:
                    raise
    return rows


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
