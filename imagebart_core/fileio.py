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
from collections.abc import Callable, Iterator
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


class StreamingSafetensorsWriter:
    """The one safetensors writer: plan every tensor (name -> (dtype, shape)) first, then :meth:`write` each
    exactly once, in any order, then :meth:`commit`; byte for byte the same file for the same tensors and metadata.

    The layout is canonical: the header lists the metadata and the tensor entries in sorted order (the
    ``safetensors`` package's own writer orders metadata differently from process to process); tensors are laid
    out by element size (largest first, so every tensor stays aligned) then name; the header is padded with
    spaces to a multiple of 8 bytes, as the format specifies. Readable by ``safetensors.safe_open`` /
    ``load_file``. Only one tensor is in memory at a time (the converter streams checkpoints through it).
    The file is written beside its destination and renamed into place by :meth:`commit` (atomic); a temporary
    file left by a killed earlier write to the same destination is removed first. Use as a context manager:
    leaving the block with an exception removes the temporary file.
    """

    def __init__(self, path: str | os.PathLike, plan: dict[str, tuple[torch.dtype, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None, overwrite: bool = False):
        if sys.byteorder != "little":
            raise RuntimeError("safetensors files are little-endian; this writer needs a little-endian machine")
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} exists; pass overwrite to replace it")
        entries: dict[str, dict] = {}
        if metadata:
            entries["__metadata__"] = {str(k): str(metadata[k]) for k in sorted(metadata)}
        sizes = {}
        for name, (dtype, _shape) in plan.items():
            if dtype not in _SAFETENSORS_DTYPES:
                raise ValueError(f"tensor {name!r}: dtype {dtype} cannot be stored in safetensors here")
            sizes[name] = torch.empty((), dtype=dtype).element_size()
        self._entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
        offset = 0
        for name in sorted(plan, key=lambda n: (-sizes[n], n)):
            dtype, shape = plan[name]
            shape = tuple(int(d) for d in shape)
            n = sizes[name]
            for d in shape:
                n *= d
            entries[name] = {"dtype": _SAFETENSORS_DTYPES[dtype], "shape": list(shape),
                             "data_offsets": [offset, offset + n]}
            self._entries[name] = (dtype, shape, offset, n)
            offset += n
        header = json.dumps(entries, separators=(",", ":"), sort_keys=True).encode("utf-8")
        header += b" " * (-len(header) % 8)
        self._data_start, self._total = 8 + len(header), offset
        self._written: set[str] = set()
        self._overwrite = overwrite
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.path)  # what a killed earlier write to this path left behind
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(self.path), suffix=".tmp", dir=str(self.path.parent))
        os.chmod(tmp, 0o644)  # mkstemp makes it private (0600); a model file is meant to be shared
        self._tmp = Path(tmp)
        self._fh = os.fdopen(fd, "wb")
        self._fh.write(struct.pack("<Q", len(header)))
        self._fh.write(header)

    @property
    def names(self) -> list[str]:
        """The planned tensor names, in file order."""
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
        buf = _tensor_bytes(tensor.detach().to(device="cpu", dtype=dtype))
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
            raise FileExistsError(f"{self.path} appeared while writing; not replacing it")
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Close and remove the temporary file (nothing at the destination changes)."""
        if not self._fh.closed:
            self._fh.close()
        if self._tmp.exists():
            self._tmp.unlink()

    def __enter__(self) -> StreamingSafetensorsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self._tmp.exists():
            self.abort()


_TORCH_DTYPES = {code: dtype for dtype, code in _SAFETENSORS_DTYPES.items()}
#: Tensors read in another dtype than stored go through a staging buffer of this size (see SafetensorsReader.read).
READ_CHUNK_BYTES = 1 << 24
#: A header longer than this is refused (the format's own readers use the same limit).
MAX_HEADER_BYTES = 100_000_000


class SafetensorsReader:
    """Read the tensors of a safetensors file one at a time into memory the tensor owns, with plain reads.

    Unlike ``safetensors.safe_open`` this never memory-maps the file: the pages it reads are not counted in the
    process's resident memory while a model loads, and no loaded tensor is a view that keeps a mapping of the
    whole file alive (a file loaded in another dtype would otherwise stay resident beside its converted copy).
    Use as a context manager. Errors (ValueError) name the file and the tensor.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fh = open(self.path, "rb")  # noqa: SIM115 - closed by close() / the context manager
        try:
            size = os.fstat(self._fh.fileno()).st_size
            raw = self._fh.read(8)
            if len(raw) != 8:
                raise ValueError(f"{self.path}: too short for a safetensors file ({size} bytes)")
            (n,) = struct.unpack("<Q", raw)
            if n > min(MAX_HEADER_BYTES, size - 8):
                raise ValueError(f"{self.path}: header length {n} does not fit the file ({size} bytes)")
            header = json.loads(self._fh.read(n))
            if not isinstance(header, dict):
                raise ValueError(f"{self.path}: the header is not a JSON object")
            self._data_start = 8 + n
            self._data_bytes = size - self._data_start
            self._entries = {k: v for k, v in header.items() if k != "__metadata__"}
            self._staging: torch.Tensor | None = None
        except BaseException:
            self._fh.close()
            raise

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def _entry(self, name: str) -> tuple[torch.dtype, tuple[int, ...], int, int]:
        e = self._entries.get(name)
        if not isinstance(e, dict) or e.get("dtype") not in _TORCH_DTYPES:
            raise ValueError(f"{self.path}: tensor {name} is missing or has a dtype this reader does not know "
                             f"({e.get('dtype') if isinstance(e, dict) else None!r})")
        dtype = _TORCH_DTYPES[e["dtype"]]
        shape = tuple(int(d) for d in e["shape"])
        begin, end = (int(o) for o in e["data_offsets"])
        numel = 1
        for d in shape:
            numel *= d
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= self._data_bytes \
                or end - begin != numel * torch.empty((), dtype=dtype).element_size():
            raise ValueError(f"{self.path}: tensor {name} (shape {shape}, bytes {begin}..{end}) does not fit "
                             f"the file's {self._data_bytes} data bytes (truncated or corrupt?)")
        return dtype, shape, begin, end

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entry(name)[1]

    def dtype(self, name: str) -> torch.dtype:
        """The dtype ``name`` is stored in."""
        return self._entry(name)[0]

    def read(self, name: str, dtype: torch.dtype | None = None,
             on_chunk: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
        """The tensor ``name`` as a new CPU tensor that owns its memory, in ``dtype`` (default: as stored).

        A tensor read in its stored dtype is read straight into its own memory; one read in another dtype goes
        through one reused staging buffer of at most :data:`READ_CHUNK_BYTES`, so no second, full-size copy of
        any tensor (e.g. a float32 one on the way to bfloat16) is ever made. ``on_chunk`` sees every stored value
        once, in pieces (1-D tensors of the stored dtype), before any cast: for checks such as finiteness.
        """
        stored, shape, begin, end = self._entry(name)
        size = torch.empty((), dtype=stored).element_size()
        out = torch.empty(shape, dtype=dtype or stored)
        flat = out.view(-1)  # [numel]
        direct = out.dtype == stored and sys.byteorder == "little"
        step = max(1, READ_CHUNK_BYTES // size)  # elements per piece
        if not direct and self._staging is None and flat.numel():
            self._staging = torch.empty(READ_CHUNK_BYTES, dtype=torch.uint8)  # [bytes], reused for every piece
        self._fh.seek(self._data_start + begin)
        for start in range(0, flat.numel(), step):
            count = min(step, flat.numel() - start)
            if direct:
                raw = flat[start : start + count].view(torch.uint8)  # [count * size], the output's own memory
            else:
                raw = self._staging[: count * size]
            self._read_exactly(raw, name)
            if sys.byteorder != "little":
                raw = swap_bytes(raw, size)
            values = raw.view(stored)  # [count]
            if on_chunk is not None:
                on_chunk(values)
            if not direct:
                flat[start : start + count].copy_(values)
        return out

    def _read_exactly(self, raw: torch.Tensor, name: str) -> None:
        view = memoryview(raw.numpy())
        done = 0
        while done < len(view):
            got = self._fh.readinto(view[done:])
            if not got:
                raise ValueError(f"{self.path}: tensor {name} is cut short (truncated file?)")
            done += got

    def close(self) -> None:
        self._fh.close()
        self._staging = None

    def __enter__(self) -> SafetensorsReader:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


def swap_bytes(raw: torch.Tensor, itemsize: int) -> torch.Tensor:
    """uint8 [n * itemsize] little-endian element bytes -> the same elements in the other byte order (a copy)."""
    if itemsize == 1:
        return raw
    return raw.view(-1, itemsize).flip(1).reshape(-1)


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                     metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` to a safetensors file atomically (replacing ``path``) with the one canonical writer,
    :class:`StreamingSafetensorsWriter`: byte for byte the same file for the same tensors and metadata."""
    plan = {name: (t.dtype, tuple(t.shape)) for name, t in tensors.items()}
    with StreamingSafetensorsWriter(path, plan, metadata, overwrite=True) as writer:
        for name in writer.names:  # one tensor at a time: no second copy of the whole model in memory
            writer.write(name, tensors[name])
        return writer.commit()


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
