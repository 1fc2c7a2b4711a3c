"""Resumable HTTP(S) downloads, for ``python -m imagebart_core.get`` only.

This is the only module of the pack that opens network connections. The library and the ComfyUI nodes
never import it (a test checks that); only the explicit ``get`` command does.

* A file is downloaded into the cache folder as ``<name>.part`` and renamed to ``<name>`` once complete, so
  a file without ``.part`` is always whole.
* An interrupted download (dropped connection, Ctrl-C, a full disk) keeps its ``.part`` file; the next
  attempt asks the server for the rest with an HTTP ``Range`` request. A dropped connection is retried a
  few times at once.
* Free disk space is checked from the server's size before the first byte is written.
* Progress (bytes, speed, time left) goes to stderr: one updating line on a terminal, else a log line now
  and then.
"""

from __future__ import annotations

import errno
import http.client
import logging
import os
import re
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..fileio import sha256_file
from .sizes import human_bytes

logger = logging.getLogger(__name__)

USER_AGENT = "imagebart-comfyui-get/1 (+python urllib)"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class DownloadError(RuntimeError):
    """A download that could not be completed; the message says what happened and what to do."""


class DiskSpaceError(DownloadError):
    """Not enough free disk space (found before writing, or the disk filled up while writing)."""


@dataclass(frozen=True)
class Downloaded:
    """A complete download in the cache."""

    url: str
    path: Path
    bytes: int
    sha256: str


def free_bytes(folder: Path) -> int:
    """Free bytes on the filesystem that holds ``folder`` (or its nearest existing parent)."""
    p = Path(folder).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def _device_of(folder: Path) -> int:
    p = Path(folder).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p.stat().st_dev


def check_free_space(needs: dict[Path, int], what: str) -> None:
    """Raise :class:`DiskSpaceError` unless every filesystem has room for what goes to its folders.

    ``needs`` maps a folder to the bytes that will be written there; folders on one filesystem add up.
    """
    by_device: dict[int, tuple[list[Path], int]] = {}
    for folder, n in needs.items():
        dev = _device_of(folder)
        folders, total = by_device.get(dev, ([], 0))
        by_device[dev] = (folders + [Path(folder)], total + int(n))
    for folders, total in by_device.values():
        free = free_bytes(folders[0])
        if total > free:
            where = " and ".join(str(f) for f in folders)
            raise DiskSpaceError(
                f"not enough free disk space for {what}: it needs {human_bytes(total)} in {where}, but only "
                f"{human_bytes(free)} is free there. Free {human_bytes(total - free)} or choose other folders "
                "(--cache for the downloads, --dir / --comfyui for the model file).")


class ProgressLine:
    """Bytes, speed and time left of one download, on stderr (an updating line on a terminal)."""

    def __init__(self, label: str, total: int | None, start: int = 0, interval: float | None = None,
                 stream=None):
        self.label = label
        self.total = total
        self.start = start
        self.done = start
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.5 if self.tty else 10.0)
        self._t0 = time.monotonic()
        self._last = 0.0

    def text(self) -> str:
        elapsed = max(time.monotonic() - self._t0, 1e-6)
        speed = (self.done - self.start) / elapsed
        if self.total:
            pct = 100.0 * self.done / self.total
            left = (self.total - self.done) / speed if speed > 0 else float("inf")
            eta = _duration(left) if left != float("inf") else "?"
            return (f"{self.label}: {human_bytes(self.done)} of {human_bytes(self.total)} ({pct:.0f}%), "
                    f"{human_bytes(speed)}/s, {eta} left")
        return f"{self.label}: {human_bytes(self.done)}, {human_bytes(speed)}/s"

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        self._emit()

    def _emit(self) -> None:
        if self.tty:
            self.stream.write("\r" + self.text().ljust(100))
            self.stream.flush()
        else:
            logger.info("%s", self.text())

    def finish(self) -> None:
        self._emit()
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    s = int(seconds + 0.5)
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


def _open(url: str, timeout: float, start: int = 0, method: str = "GET"):
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    req = urllib.request.Request(url, headers=headers, method=method)
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (https/http URLs of the release only)


def _http_error(url: str, exc: urllib.error.HTTPError) -> DownloadError:
    hint = " (the file is not at that address; has it moved? see docs/original-checkpoints.md for the manual " \
           "route)" if exc.code in (403, 404, 410) else ""
    return DownloadError(f"download failed: {url} answered HTTP {exc.code} {exc.reason}{hint}")


def remote_size(url: str, timeout: float = 30.0) -> int | None:
    """The size the server gives for ``url`` (HEAD request), or None when it gives none.

    HTTP errors (404, ...) raise :class:`DownloadError`; network errors too.
    """
    try:
        with _open(url, timeout, method="HEAD") as resp:
            length = resp.headers.get("Content-Length")
            return int(length) if length is not None and length.isdigit() else None
    except urllib.error.HTTPError as exc:
        if exc.code in (405, 501):  # HEAD not allowed: the size will come with the download itself
            return None
        raise _http_error(url, exc) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"cannot reach {url}: {_reason(exc)}. Check the network connection (or use --from "
                            "with files you already have).") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return str(exc.reason)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def download(url: str, dest: Path, *, retries: int = 3, retry_wait: float = 2.0, timeout: float = 60.0,
             chunk: int = 1 << 20, reserve: int = 0, progress: Callable[[str, int | None, int], ProgressLine] |
             None = None) -> Downloaded:
    """Download ``url`` to ``dest`` (resuming ``dest.part`` if an earlier attempt left one).

    ``reserve`` bytes must stay free on ``dest``'s filesystem besides the download itself (what the later
    steps will write there); the check happens before the first byte is written. Returns the complete
    file with its sha256. Raises :class:`DownloadError` (HTTP and network errors, after ``retries`` resumed
    attempts), :class:`DiskSpaceError`; ``KeyboardInterrupt`` passes through. The ``.part`` file is kept
    in every case, so the next call resumes.
    """
    dest = Path(dest)
    if dest.is_file():
        return Downloaded(url, dest, dest.stat().st_size, sha256_file(dest))
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    make_progress = progress or (lambda label, total, start: ProgressLine(label, total, start))
    attempt = 0
    while True:
        have = part.stat().st_size if part.is_file() else 0
        try:
            total = _fetch_into(url, part, have, timeout, chunk, reserve, make_progress, dest.name)
        except _Retryable as exc:
            attempt += 1
            got = part.stat().st_size if part.is_file() else 0
            if attempt > retries:
                raise DownloadError(
                    f"download of {url} stopped after {human_bytes(got)}: {exc}. Tried {retries + 1} times. The "
                    f"part is kept in {part}; run the same command again to resume.") from None
            logger.warning("%s: %s after %s; resuming (attempt %d of %d)", dest.name, exc, human_bytes(got),
                           attempt + 1, retries + 1)
            time.sleep(retry_wait)
            continue
        size = part.stat().st_size
        if total is not None and size != total:
            raise DownloadError(f"download of {url}: got {size} bytes, the server announced {total}")
        os.replace(part, dest)
        return Downloaded(url, dest, size, sha256_file(dest))


class _Retryable(Exception):
    """A dropped connection or a network hiccup: resume with a Range request."""


def _fetch_into(url: str, part: Path, have: int, timeout: float, chunk: int, reserve: int, make_progress,
                label: str) -> int | None:
    """One attempt: append the rest of ``url`` to ``part``. Returns the full size (None if unknown)."""
    try:
        resp = _open(url, timeout, start=have)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # our part is as long as (or longer than) the file: start over
            logger.warning("%s: the server refused to resume at %d bytes; downloading it anew", label, have)
            part.unlink()
            raise _Retryable("resume refused") from None
        if exc.code >= 500:
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from None
        raise _http_error(url, exc) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, (socket.gaierror, ConnectionRefusedError)):
            raise DownloadError(f"cannot reach {url}: {_reason(exc)}. Check the network connection (or use "
                                "--from with files you already have).") from None
        raise _Retryable(_reason(exc)) from None
    with resp:
        start = 0
        total: int | None = None
        if resp.status == 206:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != have:
                raise DownloadError(f"{url}: the server resumed at the wrong place "
                                    f"(Content-Range {resp.headers.get('Content-Range')!r}, asked for byte {have})")
            start = have
            total = int(m.group(3)) if m.group(3) != "*" else None
        else:
            if have:
                logger.warning("%s: the server does not resume downloads; starting over", label)
            length = resp.headers.get("Content-Length")
            total = int(length) if length is not None and length.isdigit() else None
        if total is not None:
            check_free_space({part.parent: total - start + reserve}, f"downloading {label}")
        bar = make_progress(label, total, start)
        done = start
        try:
            with open(part, "ab" if start else "wb") as fh:
                while True:
                    try:
                        block = resp.read(chunk)
                    except (OSError, http.client.HTTPException) as exc:
                        raise _Retryable(_reason(exc)) from None
                    if not block:
                        break
                    try:
                        fh.write(block)
                    except OSError as exc:
                        raise _disk_error(exc, part) from None
                    done += len(block)
                    bar.update(done)
                try:
                    fh.flush()
                    os.fsync(fh.fileno())
                except OSError as exc:
                    raise _disk_error(exc, part) from None
        finally:
            bar.finish()
        if total is not None and done < total:
            raise _Retryable(f"connection closed at {human_bytes(done)} of {human_bytes(total)}")
        return total


def _disk_error(exc: OSError, path: Path) -> DownloadError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskSpaceError(f"the disk is full: writing {path} failed ({exc.strerror}). The part downloaded so "
                              f"far is kept; free space in {path.parent} (or choose another --cache) and run the "
                              "same command again to resume.")
    return DownloadError(f"writing {path} failed: {exc}")
