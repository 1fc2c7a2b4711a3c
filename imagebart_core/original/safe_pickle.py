"""Reading the original release's pickled files without ever executing code from them.

* Lightning checkpoints (``*.ckpt``) are read with ``torch.load(weights_only=True)``: PyTorch's
  restricted unpickler, which only rebuilds tensors and plain containers. The only additions are a
  few Lightning callback *classes* that PyTorch-Lightning uses as dictionary keys of the
  ``callbacks`` entry; they are mapped to an inert placeholder (:class:`OpaqueGlobal`) and never
  imported. Anything else is refused, and the error names what was refused. There is no fallback
  to unrestricted loading.
* The schedule pickle ``data/*_schedule_vs_metric.p`` is read with :class:`RestrictedUnpickler`,
  which only resolves the numpy globals that rebuild ndarrays, scalars and dtypes.
"""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)


class OriginalFileError(ValueError):
    """An original release file that cannot be used; the message says what and where."""


class RefusedGlobalError(OriginalFileError):
    """A pickle referenced a global that the allow-list does not contain (it was not executed)."""

    def __init__(self, path: str | Path, refused: list[str], detail: str = ""):
        self.path = str(path)
        self.refused = list(refused)
        names = ", ".join(refused) if refused else "(unknown)"
        super().__init__(
            f"{path}: refused to load: the pickle references {names}, which is not on the allow-list of "
            "plain tensors/containers. Nothing from the file was executed. An original ImageBART release "
            "checkpoint never needs this; the file is not an original release or it has been tampered with."
            + (f" ({detail})" if detail else "")
        )


class OpaqueGlobal:
    """Inert stand-in for an allow-listed Lightning class that a checkpoint only *names* (as a dict key).

    Calling it or restoring state into it stores nothing and runs nothing.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


#: Lightning classes that PL 1.x checkpoints use as keys of ``checkpoint["callbacks"]``.
LIGHTNING_CALLBACK_KEYS = tuple(
    f"pytorch_lightning.callbacks.{module}.{name}"
    for module, name in (
        ("model_checkpoint", "ModelCheckpoint"),
        ("early_stopping", "EarlyStopping"),
        ("lr_monitor", "LearningRateMonitor"),
        ("progress", "ProgressBar"),
        ("gpu_stats_monitor", "GPUStatsMonitor"),
    )
)

_REFUSED_RE = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_REFUSED_RE2 = re.compile(r"global ['\"]?([\w.]+)['\"]? (?:is not|was not)")


def _refused_from_message(msg: str) -> list[str]:
    names = _REFUSED_RE.findall(msg) or _REFUSED_RE2.findall(msg)
    return sorted(set(names))


def load_checkpoint(path: str | Path, mmap: bool = True) -> dict[str, Any]:
    """Read an original Lightning ``.ckpt`` safely; returns its top-level dict.

    With ``mmap`` (zip-format files) tensors stay backed by the file until touched, so reading
    one scale of a 3-billion-parameter release does not pull the raw (non-EMA) copy into memory.

    Raises:
        FileNotFoundError: the file is missing.
        RefusedGlobalError: the pickle needs a global outside the allow-list (nothing was executed).
        OriginalFileError: the file is not a readable torch checkpoint (truncated, corrupt, not a dict).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    use_mmap = mmap and zipfile.is_zipfile(p)  # the legacy (non-zip) torch format cannot be mapped
    allowed = [(OpaqueGlobal, name) for name in LIGHTNING_CALLBACK_KEYS]
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(str(p), map_location="cpu", weights_only=True, mmap=use_mmap)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        refused = _refused_from_message(msg)
        if not refused and "Weights only load failed" in msg:
            try:
                refused = sorted(set(torch.serialization.get_unsafe_globals_in_checkpoint(str(p))))
            except Exception:  # the listing itself never executes anything; ignore if it cannot parse
                refused = []
        if refused or "Weights only load failed" in msg:
            raise RefusedGlobalError(p, refused, _first_line_after(msg, "WeightsUnpickler error:")) from None
        raise OriginalFileError(f"{p}: not a readable PyTorch checkpoint (truncated or corrupt?): {msg}") from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise OriginalFileError(f"{p}: not a readable PyTorch checkpoint (truncated or corrupt?): {exc}") from exc
    if not isinstance(obj, dict):
        raise OriginalFileError(f"{p}: expected a Lightning checkpoint (a dict), got {type(obj).__name__}")
    return obj


def _first_line_after(msg: str, marker: str) -> str:
    i = msg.find(marker)
    if i < 0:
        return ""
    line = msg[i + len(marker):].strip().splitlines()[0] if msg[i + len(marker):].strip() else ""
    # keep the name of what was refused but not PyTorch's advice to disable the safety check
    return line.split(". Please use")[0][:300]


def state_dict_of(ckpt: dict[str, Any], path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` entry of a Lightning checkpoint, checked to map names to tensors."""
    sd = ckpt.get("state_dict")
    if not isinstance(sd, dict):
        keys = ", ".join(sorted(map(str, ckpt))[:10])
        raise OriginalFileError(f"{path}: no 'state_dict' in this checkpoint (top-level keys: {keys})")
    bad = [k for k, v in sd.items() if not torch.is_tensor(v)]
    if bad:
        raise OriginalFileError(f"{path}: state_dict entries that are not tensors: {bad[:5]}")
    return sd


# -- the schedule pickle --------------------------------------------------------------------------
def _numpy_core(name: str):
    core = getattr(np, "_core", None) or np.core  # numpy 2 moved numpy.core to numpy._core
    return getattr(core.multiarray, name)


#: (module, name) -> resolver. Only what ndarrays, numpy scalars and dtypes need.
_NUMPY_ALLOWED = {
    ("numpy.core.multiarray", "scalar"): lambda: _numpy_core("scalar"),
    ("numpy._core.multiarray", "scalar"): lambda: _numpy_core("scalar"),
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_core("_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_core("_reconstruct"),
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that resolves only numpy's ndarray / scalar / dtype reconstructors.

    Every other global (functions, classes, modules) raises :class:`pickle.UnpicklingError` naming it,
    before anything is called.
    """

    def find_class(self, module: str, name: str):
        resolver = _NUMPY_ALLOWED.get((module, name))
        if resolver is None:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return resolver()

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused persistent id (not a plain-data pickle)")


def load_plain_pickle(path: str | Path) -> Any:
    """Unpickle plain data (dicts, lists, numbers, strings, numpy arrays) from ``path`` safely."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"pickle not found: {p}")
    try:
        with open(p, "rb") as fh:
            obj = RestrictedUnpickler(fh).load()
    except pickle.UnpicklingError as exc:
        m = re.search(r"refused global ([\w.]+)", str(exc))
        if m:
            raise RefusedGlobalError(p, [m.group(1)]) from None
        raise OriginalFileError(f"{p}: not a readable plain-data pickle: {exc}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as exc:
        raise OriginalFileError(f"{p}: not a readable plain-data pickle (truncated or corrupt?): {exc}") from None
    _reject_objects(obj, p)
    return obj


def _reject_objects(obj: Any, path: Path, depth: int = 0) -> None:
    """Refuse object-dtype arrays (their items could be anything) and unexpected types."""
    if depth > 20:
        raise OriginalFileError(f"{path}: pickle nested too deeply")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _reject_objects(k, path, depth + 1)
            _reject_objects(v, path, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _reject_objects(v, path, depth + 1)
    elif isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise OriginalFileError(f"{path}: object arrays are not plain data")
    elif not isinstance(obj, (str, bytes, int, float, bool, type(None), np.generic)):
        raise OriginalFileError(f"{path}: unexpected {type(obj).__name__} in a plain-data pickle")
