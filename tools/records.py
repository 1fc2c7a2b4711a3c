"""What every measuring tool writes beside its figures: the command, the date, the torch version; and the one way
their JSON is written (atomically, so an interrupted run leaves the previous file as it was)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from imagebart_core.fileio import atomic_write_text


def provenance(prog: str, argv: Sequence[str] | None) -> dict:
    """{"command", "date", "torch"} for a run of ``python -m <prog>`` with ``argv`` (None: this process's)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return {"command": " ".join([f"python -m {prog}", *args]), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "torch": torch.__version__}


def write_json(path: str | Path | None, payload: dict, indent: int = 1) -> None:
    """Write ``payload`` as JSON to ``path`` atomically; nothing when ``path`` is None."""
    if path:
        atomic_write_text(path, json.dumps(payload, indent=indent) + "\n")
