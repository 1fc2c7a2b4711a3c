"""Atomic training checkpoints with the full RNG state, and finding the one to resume from."""

from __future__ import annotations

import contextlib
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imagebart_core.fileio import atomic_path, remove_stale_temps_under

from .distributed import DistEnv

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"


def rng_state() -> dict[str, Any]:
    """Torch CPU (and CUDA), Python ``random`` and NumPy global RNG states as tensors / plain values."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *[float(x) if isinstance(x, float)
                                                                                 else int(x) for x in np_state[2:]]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then ``os.replace`` (atomic)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def restore_training_state(ck: dict[str, Any], parts: dict[str, Any], ema, env) -> int:
    """Load every ``parts[name]`` (model, optimizers, scalers, ...) from ``ck[name]``, the EMA when both
    have one, and this process's RNG state; returns the step to continue from."""
    for name, obj in parts.items():
        obj.load_state_dict(ck[name])
    if ema is not None and ck.get("ema") is not None:
        ema.load_state_dict(ck["ema"])
    states = ck["rng"]
    set_rng_state(states[env.rank] if len(states) == env.world else states[0])
    return int(ck["step"])


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a training checkpoint with ``weights_only=True`` (tensors and plain values only; no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read training checkpoint {path} (truncated, or not one of ours?): {exc}") from exc


def remove_stale_temps(out: Path, env: DistEnv) -> None:
    """On start-up (main process): remove temporary files that killed writes of an earlier run left in ``out``."""
    if env.is_main:
        for p in remove_stale_temps_under(out):
            log.info("removed %s, left behind by an interrupted write", p)


def find_resume(out: Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from: ``--resume PATH``, ``--resume auto`` (the run folder's last.pt if any),
    or ``None`` for ``--resume never``."""
    if resume in (None, "never"):
        return None
    if resume == "auto":
        p = out / "checkpoints" / CHECKPOINT_NAME
        return p if p.is_file() else None
    p = Path(resume)
    if not p.is_file():
        raise FileNotFoundError(f"--resume {p}: no such checkpoint")
    return p
