"""Atomic file writes (write beside the target, flush to disk, then rename over it) and a reproducible
safetensors writer.

A crash or an error leaves either the old file or the new one, never half a file. An error removes the
temporary file; a killed process cannot, so the next write to the same path removes what an earlier,
killed write left there (:func:`remove_stale_temps`), and trainers sweep their run folder on start
(:func:`remove_stale_temps_under`). Two processes writing the same path at the same time are not supported.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

#: Our temporary names: ``.<target name>.<8 random characters from mkstemp><suffix>`` beside the target.
_TEMP_RANDOM = 8
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{%d}(?P<suffix>\.tmp|\.npy)$" % _TEMP_RANDOM)


def temp_prefix(target: str | os.PathLike) -> str:
    """The prefix of every temporary file our writers make for ``target`` (in its folder)."""
    return f".{Path(target).name}."


def remove_stale_temps(path: str | os.PathLike, suffix: str = ".tmp") -> list[Path]:
    """Remove temporary files an earlier (killed) write to ``path`` left in its folder; returns them."""
    target = Path(path)
    if not target.parent.is_dir():
        return []
    prefix = temp_prefix(target)
    removed = []
    for entry in target.parent.iterdir():
        name = entry.name
        if (name.startswith(prefix) and name.endswith(suffix)
                and len(name) == len(prefix) + _TEMP_RANDOM + len(suffix) and entry.is_file()):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def remove_stale_temps_under(folder: str | os.PathLike) -> list[Path]:
    """Remove every temporary file of our writers below ``folder`` (a run folder at start-up); returns them."""
    root = Path(folder)
    if not root.is_dir():
        return []
    removed = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            m = _TEMP_NAME.match(name)
            if m and m.group("target") and Path(dirpath, name).is_file():
                Path(dirpath, name).unlink(missing_ok=True)
                removed.append(Path(dirpath, name))
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path in ``path``'s folder; on success it replaces ``path``, on error it is removed.

    ``suffix`` lets writers that insist on an extension (``numpy.save`` adds ``.npy``) keep it.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target, suffix)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target), suffix=suffix, dir=str(target.parent))
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes it private (0600); a model or config file is meant to be shared
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a UTF-8 text file atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(path)


_SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                     metadata: dict[str, str] | None = None) -> Path:
    """Write a safetensors file atomically, byte for byte the same for the same tensors and metadata.

    The ``safetensors`` package stores metadata in a hash map whose order changes from process to process, so
    two runs that produce equal tensors would give files that differ in their header. Here the header lists
    the metadata and tensor entries in sorted order; tensors are laid out by element size (largest first, so
    every tensor stays aligned) then name, the header padded with spaces to a multiple of 8 bytes, as the
    format specifies. Readable by ``safetensors.safe_open`` / ``load_file``.
    """
    if sys.byteorder != "little":
        raise RuntimeError("safetensors files are little-endian; this writer needs a little-endian machine")
    entries: dict[str, dict] = {}
    if metadata:
        entries["__metadata__"] = {str(k): str(metadata[k]) for k in sorted(metadata)}
    order = sorted(tensors, key=lambda name: (-tensors[name].element_size(), name))
    offset = 0
    for name in order:
        t = tensors[name]
        if t.dtype not in _SAFETENSORS_DTYPES:
            raise ValueError(f"tensor {name!r}: dtype {t.dtype} cannot be stored in safetensors here")
        size = t.numel() * t.element_size()
        entries[name] = {"dtype": _SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
                         "data_offsets": [offset, offset + size]}
        offset += size
    header = json.dumps(entries, separators=(",", ":"), sort_keys=True).encode("utf-8")
    header += b" " * (-len(header) % 8)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)))
        fh.write(header)
        for name in order:  # one tensor at a time: no second copy of the whole model in memory
            fh.write(_tensor_bytes(tensors[name]))
    return Path(path)


def _tensor_bytes(t: torch.Tensor):
    """The raw little-endian bytes of ``t`` (C order) as a buffer, without a copy when ``t`` is contiguous on CPU."""
    t = t.detach().cpu().contiguous()
    return t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 24) -> str:
    """The SHA-256 hex digest of a file, read in chunks (any size, little memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()
