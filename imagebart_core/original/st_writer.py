"""Writing one ``.safetensors`` file tensor by tensor, without holding every tensor in memory.

The safetensors layout is: an 8-byte little-endian header length ``N``, ``N`` bytes of JSON
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``, padded
with spaces), then the raw little-endian bytes of every tensor at its offsets. The header is known
up front from the names, dtypes and shapes, so tensors can be written one at a time in any order.
The file is written next to its destination and renamed into place at the end (atomic); a temporary file
left by a killed earlier write to the same destination is removed first.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import torch

from ..fileio import remove_stale_temps, temp_prefix

_DTYPES = {
    torch.float32: ("F32", 4), torch.float16: ("F16", 2), torch.bfloat16: ("BF16", 2), torch.float64: ("F64", 8),
    torch.int64: ("I64", 8), torch.int32: ("I32", 4), torch.int16: ("I16", 2), torch.int8: ("I8", 1),
    torch.uint8: ("U8", 1), torch.bool: ("BOOL", 1),
}


class StreamingSafetensorsWriter:
    """Plan every tensor (name, dtype, shape) first, then :meth:`write` each exactly once, then :meth:`commit`.

    Use as a context manager: leaving the block with an exception removes the temporary file.
    """

    def __init__(self, path: str | Path, plan: dict[str, tuple[torch.dtype, tuple[int, ...]]],
                 metadata: dict[str, str], overwrite: bool = False):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} exists; pass overwrite to replace it")
        header: dict[str, object] = {}
        self._entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
        offset = 0
        for name, (dtype, shape) in plan.items():
            if dtype not in _DTYPES:
                raise ValueError(f"{name}: dtype {dtype} cannot be stored")
            code, size = _DTYPES[dtype]
            n = size
            for d in shape:
                n *= int(d)
            header[name] = {"dtype": code, "shape": [int(d) for d in shape], "data_offsets": [offset, offset + n]}
            self._entries[name] = (dtype, tuple(int(d) for d in shape), offset, n)
            offset += n
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)
        self._data_start = 8 + len(raw)
        self._total = offset
        self._written: set[str] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.path)  # what a killed earlier conversion to this path left behind
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(self.path), suffix=".tmp", dir=str(self.path.parent))
        self._tmp = Path(tmp)
        self._fh = os.fdopen(fd, "wb")
        self._overwrite = overwrite
        self._fh.write(struct.pack("<Q", len(raw)))
        self._fh.write(raw)

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write one planned tensor (cast to the planned dtype; the shape must match exactly)."""
        if name not in self._entries:
            raise KeyError(f"{name} is not in the planned tensors")
        if name in self._written:
            raise ValueError(f"{name} written twice")
        dtype, shape, offset, n = self._entries[name]
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name}: shape {tuple(tensor.shape)}, planned {shape}")
        t = tensor.detach().to(device="cpu", dtype=dtype).contiguous()
        if dtype == torch.bfloat16:
            buf = t.view(torch.int16).numpy().tobytes()
        else:
            buf = memoryview(t.numpy()).cast("B") if t.numel() else b""
        if len(buf) != n:
            raise ValueError(f"{name}: {len(buf)} bytes, planned {n}")
        self._fh.seek(self._data_start + offset)
        self._fh.write(buf)
        self._written.add(name)

    def commit(self) -> Path:
        """Check that every tensor was written, flush, fsync and rename into place."""
        missing = [n for n in self._entries if n not in self._written]
        if missing:
            raise ValueError(f"not all tensors were written: {missing[:5]} ({len(missing)} missing)")
        self._fh.seek(self._data_start + self._total)
        self._fh.truncate()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        if self.path.exists() and not self._overwrite:
            raise FileExistsError(f"{self.path} appeared while converting; not replacing it")
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        if self._tmp.exists():
            self._tmp.unlink()

    def __enter__(self) -> StreamingSafetensorsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self._tmp.exists():
            self.abort()
