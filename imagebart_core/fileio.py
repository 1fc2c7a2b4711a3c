"""Atomic file writes (write beside the target, flush to disk, then rename over it) and a reproducible
safetensors writer.

A crash or an error leaves either the old file or the new one, never half a file, and no temporary file.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path in ``path``'s folder; on success it replaces ``path``, on error it is removed.

    ``suffix`` lets writers that insist on an extension (``numpy.save`` adds ``.npy``) keep it.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=str(target.parent))
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
