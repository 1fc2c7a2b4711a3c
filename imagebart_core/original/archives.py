"""Finding a release's files in zips and folders, verifying zips and extracting what the conversion needs.

The published zips' inner layout could not be checked when this was written, so every plausible one is
accepted: a model zip holds ``scale1.ckpt ... scaleT.ckpt`` at the top, under ``<model>/`` or under
``models/<model>/``; ``vqgan.zip`` holds ``vqgan-<dataset>.ckpt`` at the top or under ``vqgan/``. The
original repository's ``configs/`` and ``data/`` come from a clone, its GitHub zip, or a download. When no
layout fits, the error lists what was found. No network here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .releases import Release

_LISTED = 12  # how many entries an error message lists


class ArchiveError(ValueError):
    """A zip or folder that does not hold what it should; the message lists what was found."""


@dataclass(frozen=True)
class Item:
    """One file: inside ``archive`` (a zip) under ``name``, or a plain file at ``name`` when archive is None."""

    name: str
    archive: Path | None = None

    def describe(self) -> str:
        return f"{self.archive}:{self.name}" if self.archive else self.name


@dataclass
class Found:
    """Where one model's inputs are (any may be missing)."""

    checkpoints: list[Item] | None = None  # scale 1 first
    vqgan: Item | None = None
    repo: Item | None = None  # a folder (archive None) or a zip + member prefix ("" or "imagebart-main/")
    seen: list[str] = field(default_factory=list)  # for error messages


def checkpoint_prefixes(name: str) -> tuple[str, ...]:
    return (f"{name}/", f"models/{name}/", "")


def _match_checkpoints(names: set[str], release: Release, allow_top: bool) -> str | None:
    n = len(release.scale_configs)
    for prefix in checkpoint_prefixes(release.name):
        if prefix == "" and not allow_top:
            continue
        if all(f"{prefix}scale{s}.ckpt" in names for s in range(1, n + 1)):
            return prefix
    return None


def _match_vqgan(names: set[str], release: Release) -> str | None:
    base = Path(release.vqgan_checkpoint).name
    for candidate in (f"vqgan/{base}", base):
        if candidate in names:
            return candidate
    return None


def _match_repo(names: set[str], release: Release) -> str | None:
    """The member prefix under which the repository's sampling yaml of ``release`` sits ("" or "<top>/")."""
    tops = {n.split("/", 1)[0] + "/" for n in names if "/" in n}
    for prefix in ("", *sorted(tops)):
        if prefix + release.sampling_config in names and prefix + release.scale_configs[0] in names:
            return prefix
    return None


def zip_names(path: Path) -> set[str]:
    """Member names of a zip (directories left out); ArchiveError for a file that is no zip."""
    try:
        with zipfile.ZipFile(path) as zf:
            return {i.filename for i in zf.infolist() if not i.is_dir()}
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"{path} is not a readable zip file (truncated or corrupt?): {exc}") from None


def _listing(names: Iterable[str]) -> str:
    names = sorted(names)
    shown = ", ".join(names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "") if names else "nothing"


def find_in_zip(path: Path, release: Release, found: Found, allow_top: bool) -> None:
    names = zip_names(path)
    found.seen.append(f"{path}: {_listing(names)}")
    if found.checkpoints is None:
        prefix = _match_checkpoints(names, release, allow_top or path.stem == release.name)
        if prefix is not None:
            n = len(release.scale_configs)
            found.checkpoints = [Item(f"{prefix}scale{s}.ckpt", path) for s in range(1, n + 1)]
    if found.vqgan is None:
        member = _match_vqgan(names, release)
        if member is not None:
            found.vqgan = Item(member, path)
    if found.repo is None:
        prefix = _match_repo(names, release)
        if prefix is not None:
            found.repo = Item(prefix, path)


def _files_under(folder: Path, depth: int = 3) -> set[str]:
    out: set[str] = set()

    def walk(d: Path, rel: str, level: int) -> None:
        try:
            entries = list(os.scandir(d))
        except OSError:
            return
        for e in entries:
            r = rel + e.name
            if e.is_file():
                out.add(r)
            elif e.is_dir() and level < depth and not e.name.startswith("."):
                walk(Path(e.path), r + "/", level + 1)

    walk(folder, "", 0)
    return out


def find_in_folder(folder: Path, release: Release, found: Found, allow_top: bool) -> None:
    """Look in ``folder`` (files up to 3 levels down) and in the zips directly inside it."""
    names = _files_under(folder, depth=3)
    tops = sorted({n.split("/", 1)[0] + ("/" if "/" in n else "") for n in names})
    found.seen.append(f"{folder}/: {_listing(tops)}")
    if found.checkpoints is None:
        prefix = _match_checkpoints(names, release, allow_top or folder.name == release.name)
        if prefix is not None:
            n = len(release.scale_configs)
            found.checkpoints = [Item(str(folder / f"{prefix}scale{s}.ckpt")) for s in range(1, n + 1)]
    if found.vqgan is None:
        member = _match_vqgan(names, release)
        if member is not None:
            found.vqgan = Item(str(folder / member))
    if found.repo is None:
        prefix = _match_repo(names, release)
        if prefix is not None:
            found.repo = Item(str(folder / prefix))
    for child in sorted(folder.glob("*.zip")):
        if found.checkpoints is not None and found.vqgan is not None and found.repo is not None:
            break
        find_in_zip(child, release, found, allow_top=False)


def find_release_inputs(paths: list[Path], release: Release, single_model: bool) -> Found:
    """Search ``paths`` (zips and folders, in the order given) for the inputs of ``release``."""
    found = Found()
    for p in paths:
        p = Path(p)
        if p.is_dir():
            find_in_folder(p, release, found, allow_top=single_model)
        elif p.is_file() and p.suffix.lower() == ".zip":
            find_in_zip(p, release, found, allow_top=single_model)
        elif p.exists():
            found.seen.append(f"{p}: neither a folder nor a .zip")
        else:
            raise ArchiveError(f"--from {p}: no such file or folder")
    return found


def describe_missing(found: Found, release: Release, what: list[str]) -> str:
    n = len(release.scale_configs)
    wanted = {
        "checkpoints": f"the checkpoints scale1.ckpt ... scale{n}.ckpt of {release.name} (in {release.name}.zip or "
                       f"a folder: at its top, under {release.name}/ or under models/{release.name}/)",
        "vqgan": f"{Path(release.vqgan_checkpoint).name} (in vqgan.zip or a folder: at its top or under vqgan/)",
        "repo": f"the original repository's {release.sampling_config} and configs (a clone of "
                "https://github.com/CompVis/imagebart or its GitHub zip)",
    }
    lines = [f"could not find {wanted[w]}" for w in what]
    return "; ".join(lines) + ". Found: " + (" | ".join(found.seen) or "nothing")


# -- verification and extraction ---------------------------------------------------------------------------
def verify_and_extract(archive: Path, wanted: dict[str, Path], chunk: int = 1 << 22) -> int:
    """Read every member of ``archive``, checking its CRC-32, and write the ``wanted`` members to their paths.

    Each wanted member goes to a temporary file beside its destination and is renamed into place only when
    its CRC matched. Returns the bytes extracted. Raises :class:`ArchiveError` for a truncated or corrupt zip
    (naming the member that fails) and leaves no partial file; ``OSError`` from a full disk passes through
    (nothing partial left either).
    """
    written = 0
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"{archive} is not a valid zip file (truncated or corrupt download?): {exc}") from None
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        missing = sorted(set(wanted) - {i.filename for i in infos})
        if missing:
            raise ArchiveError(f"{archive} has no member {missing[0]}")
        for info in infos:
            dest = wanted.get(info.filename)
            try:
                if dest is None:
                    with zf.open(info) as src:
                        while src.read(chunk):
                            pass
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=str(dest.parent))
                try:
                    with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                        shutil.copyfileobj(src, out, chunk)
                    os.replace(tmp, dest)
                except BaseException:
                    if os.path.exists(tmp):
                        os.remove(tmp)
                    raise
                written += info.file_size
            except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, ValueError) as exc:
                raise ArchiveError(f"{archive} is corrupt: member {info.filename} fails its check ({exc}). "
                                   "Delete it and download it again.") from None
            except (OSError, RuntimeError) as exc:
                if isinstance(exc, OSError) and exc.errno is not None:
                    raise
                raise ArchiveError(f"{archive}: cannot read member {info.filename}: {exc}") from None
    return written


def uncompressed_size(archive: Path, members: Iterable[str] | None = None) -> int:
    """Sum of the uncompressed sizes of ``members`` (all when None), from the zip's directory."""
    with zipfile.ZipFile(archive) as zf:
        keep = set(members) if members is not None else None
        return sum(i.file_size for i in zf.infolist() if keep is None or i.filename in keep)
