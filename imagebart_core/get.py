"""``python -m imagebart_core.get``: a released ImageBART model, downloaded and converted in one command.

    python -m imagebart_core.get ffhq_4_scales_geometric            # inside a ComfyUI tree
    python -m imagebart_core.get all --comfyui ~/ComfyUI --dtype fp16
    python -m imagebart_core.get churches_3_scales --dir models/ --from ~/Downloads
    python -m imagebart_core.get --list

For each model it fetches the model zip and ``vqgan.zip`` from the addresses the original repository's
README publishes, and the configs and data files the conversion reads from the original repository (pinned
to the commit the converter was checked against); verifies every zip (member CRCs); converts into one
native ``.safetensors`` file (``<model>-<dtype>.safetensors``) with the sha256 of every download in its
provenance; and deletes what it downloaded unless ``--keep``. Downloads resume (HTTP Range) from the cache
folder. Nothing partial ever appears in the models folder. This command is the only part of the pack that
uses the network.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .fileio import sha256_file
from .original import archives
from .original.convert import ConversionError, ReleaseFiles, convert_release
from .original.releases import RELEASES, Release
from .original.safe_pickle import OriginalFileError
from .original.sizes import STORAGE_DTYPES, human_bytes, model_size

logger = logging.getLogger("imagebart.get")

#: where the original README links the model zips and vqgan.zip
RELEASE_BASE_URL = "https://ommer-lab.com/files/"
#: the original repository at the commit the converter and its parity fixtures were checked against
REPO_COMMIT = "c11ea830ebf74dd0f9c1307462c9de24f536a9e7"
REPO_BASE_URL = f"https://raw.githubusercontent.com/CompVis/imagebart/{REPO_COMMIT}/"
#: storage dtype of the transformers when --dtype is not given (see docs/original-checkpoints.md for why)
DEFAULT_DTYPE = "fp16"
CACHE_ENV = "IMAGEBART_CACHE"


def default_cache() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "imagebart-downloads"


def output_name(name: str, dtype: str) -> str:
    return f"{name}-{dtype}.safetensors"


# -- where the model file goes ---------------------------------------------------------------------------
def is_comfyui_root(folder: Path) -> bool:
    return (folder / "folder_paths.py").is_file() and (folder / "comfy").is_dir()


def find_comfyui_root(*starts: Path) -> Path | None:
    """The ComfyUI folder that contains any of ``starts`` (e.g. the working folder or this pack), or None."""
    for start in starts:
        p = Path(start).absolute()  # not resolved: a pack symlinked into custom_nodes/ still finds its tree
        for candidate in (p, *p.parents):
            if is_comfyui_root(candidate):
                return candidate
    return None


def models_folder(args: argparse.Namespace) -> Path:
    if args.comfyui:
        root = Path(args.comfyui).expanduser()
        if not is_comfyui_root(root):
            raise SystemExit(f"error: --comfyui {root}: not a ComfyUI folder (no folder_paths.py and comfy/ there)")
        return root / "models" / "imagebart"
    if args.dir:
        return Path(args.dir).expanduser()
    shell_cwd = [Path(os.environ["PWD"])] if os.environ.get("PWD") else []  # keeps symlinked folder names
    root = find_comfyui_root(*shell_cwd, Path.cwd(), Path(__file__).parent)
    if root is not None:
        return root / "models" / "imagebart"
    raise SystemExit("error: not inside a ComfyUI folder; say where the model file goes: --comfyui DIR (ComfyUI's "
                     "folder; the file goes to its models/imagebart/) or --dir DIR")


# -- one model ---------------------------------------------------------------------------------------------
@dataclass
class Job:
    """What ``get`` does for one model, and what it has to clean up."""

    release: Release
    dtype: str
    out: Path
    cache: Path
    provenance: list[dict] = field(default_factory=list)
    temporary: list[Path] = field(default_factory=list)  # extracted files and folders, always removed
    downloads: list[Path] = field(default_factory=list)  # removed unless --keep

    @property
    def work(self) -> Path:
        return self.cache / "extracted" / self.release.name


class Getter:
    """Runs the jobs; holds the options and the downloads that several models share (vqgan.zip)."""

    def __init__(self, args: argparse.Namespace, models_dir: Path):
        self.args = args
        self.models_dir = models_dir
        self.cache = Path(args.cache).expanduser()
        self.base_url = args.mirror if args.mirror.endswith("/") else args.mirror + "/"
        self.repo_url = args.repo_url if args.repo_url.endswith("/") else args.repo_url + "/"
        self._verified: dict[Path, str] = {}  # zip -> sha256, verified in this run
        self.keep_at_end: set[Path] = set()
        self.remove_at_end: set[Path] = set()

    # -- download route ----------------------------------------------------------------------------------
    def _download(self, url: str, dest: Path, job: Job) -> Path:
        from .original import download as dl  # the only place the network is used

        got = dl.download(url, dest, retries=self.args.retries, retry_wait=self.args.retry_wait,
                          timeout=self.args.timeout)
        job.provenance.append({"url": url, "file": self._label(dest), "bytes": got.bytes, "sha256": got.sha256})
        (self.keep_at_end if self.args.keep else self.remove_at_end).add(dest)
        return dest

    def _label(self, dest: Path) -> str:
        """A cached file's name for the provenance: relative to the cache (no machine paths)."""
        return dest.relative_to(self.cache).as_posix()

    def _check_space_before_download(self, job: Job, urls: dict[str, Path]) -> None:
        from .original import download as dl

        remaining = extracted = 0
        for url, dest in urls.items():
            if dest.is_file():
                size = dest.stat().st_size
            else:
                size = dl.remote_size(url, timeout=self.args.timeout)
                if size is None:
                    logger.info("%s: the server gives no size; the disk check happens when the download starts", url)
                    continue
                have = dl.part_path(dest).stat().st_size if dl.part_path(dest).is_file() else 0
                remaining += max(size - have, 0)
            extracted += size  # at most the whole zip is extracted
        out_bytes = self._output_estimate(job, urls)
        needs = {self.cache: remaining + extracted, self.models_dir: out_bytes}
        logger.info("%s: %s to download, about %s extracted in %s, about %s written to %s", job.release.name,
                    human_bytes(remaining), human_bytes(extracted), self.cache, human_bytes(out_bytes), self.models_dir)
        dl.check_free_space(needs, f"{job.release.name} ({human_bytes(remaining)} to download)")

    def _output_estimate(self, job: Job, urls: dict[str, Path]) -> int:
        """The converted file's size: exact for the released architectures, capped by what the download
        can hold (a checkpoint holds raw + EMA weights, the file the EMA copy only)."""
        from .original import download as dl

        exact = model_size(job.release.name).file_bytes(job.dtype)
        zip_url = next(u for u, d in urls.items() if d.name == f"{job.release.name}.zip")
        dest = urls[zip_url]
        size = dest.stat().st_size if dest.is_file() else dl.remote_size(zip_url, timeout=self.args.timeout)
        return exact if size is None else min(exact, size)

    def fetch_sources(self, job: Job) -> tuple[Path, list[Path], Path]:
        """Download what ``job`` needs; return (repository folder, checkpoints, VQGAN checkpoint)."""
        rel = job.release
        repo = self.cache / f"CompVis-imagebart-{REPO_COMMIT[:7]}"
        model_zip = self.cache / f"{rel.name}.zip"
        vqgan_zip = self.cache / "vqgan.zip"
        urls = {self.base_url + f"{rel.name}.zip": model_zip, self.base_url + "vqgan.zip": vqgan_zip}
        list(self.repo_files(rel, repo, download=True, job=job))
        self._check_space_before_download(job, urls)
        for url, dest in urls.items():
            self._download(url, dest, job)
        ckpts, vqgan = self.extract(job, [model_zip, vqgan_zip])
        return repo, ckpts, vqgan

    def repo_files(self, rel: Release, repo: Path, download: bool, job: Job):
        """The original repository's files ``rel`` needs (configs, shrink list, schedule pickle), downloaded
        into ``repo`` when asked. Yields their paths."""
        from .original.schedule import parse_redraw_prob
        from .original.yaml_config import parse_scale_yaml, read_yaml

        def get(relpath: str) -> Path:
            dest = repo / relpath
            if download and not dest.is_file():
                self._download(self.repo_url + relpath, dest, job)
            elif download:

                job.provenance.append({"url": self.repo_url + relpath, "file": self._label(dest),
                                       "bytes": dest.stat().st_size, "sha256": sha256_file(dest)})
                (self.keep_at_end if self.args.keep else self.remove_at_end).add(dest)
            return dest

        for relpath in (rel.sampling_config, *rel.scale_configs):
            yield get(relpath)
        spec = parse_scale_yaml(read_yaml(repo / rel.scale_configs[0]), str(repo / rel.scale_configs[0]))
        remap = spec.first_stage.get("remap")
        if remap:
            yield get(remap)
        schedule = parse_redraw_prob(spec.redraw_prob)
        if schedule["kind"] == "metric":
            yield get(schedule["pickle"])

    def extract(self, job: Job, zips: list[Path]) -> tuple[list[Path], Path]:
        found = archives.Found()
        for z in zips:
            archives.find_in_zip(z, job.release, found, allow_top=True)
        missing = [w for w in ("checkpoints", "vqgan") if getattr(found, w) is None]
        if missing:
            raise archives.ArchiveError(archives.describe_missing(found, job.release, missing))
        return self._materialise(job, found)

    # -- --from route -------------------------------------------------------------------------------------
    def local_sources(self, job: Job, paths: list[Path], single: bool) -> tuple[Path, list[Path], Path]:
        rel = job.release
        found = archives.find_release_inputs(paths, rel, single)
        if found.repo is None:
            cached = self.cache / f"CompVis-imagebart-{REPO_COMMIT[:7]}"
            if (cached / rel.sampling_config).is_file():
                found.repo = archives.Item(str(cached) + "/")
        missing = [w for w in ("checkpoints", "vqgan", "repo") if getattr(found, w) is None]
        if missing:
            raise archives.ArchiveError("--from: " + archives.describe_missing(found, rel, missing))
        ckpts, vqgan = self._materialise(job, found)
        if found.repo.archive is None:
            repo = Path(found.repo.name)
        else:  # the repository's GitHub zip: take out the few files the conversion reads
            repo = job.work / "repo"
            prefix = found.repo.name
            names = archives.zip_names(found.repo.archive)
            wanted = {prefix + n: repo / n for n in names_needed(rel, names, prefix)}
            job.temporary.append(repo)
            archives.verify_and_extract(found.repo.archive, wanted)
            self._record_local(job, found.repo.archive)
        return repo, ckpts, vqgan

    def _record_local(self, job: Job, path: Path) -> None:

        if path not in self._verified:
            self._verified[path] = sha256_file(path)
        job.provenance.append({"file": str(path), "bytes": path.stat().st_size, "sha256": self._verified[path]})

    # -- shared ---------------------------------------------------------------------------------------------
    def _materialise(self, job: Job, found: archives.Found) -> tuple[list[Path], Path]:
        """Plain files for the checkpoints and the VQGAN: extracted from zips (verified) into the cache."""
        wanted: dict[Path, dict[str, Path]] = {}
        ckpts: list[Path] = []
        for i, item in enumerate(found.checkpoints, start=1):
            if item.archive is None:
                ckpts.append(Path(item.name))
            else:
                dest = job.work / f"scale{i}.ckpt"
                wanted.setdefault(item.archive, {})[item.name] = dest
                ckpts.append(dest)
        if found.vqgan.archive is None:
            vqgan = Path(found.vqgan.name)
        else:
            vqgan = job.work / "vqgan" / Path(found.vqgan.name).name
            wanted.setdefault(found.vqgan.archive, {})[found.vqgan.name] = vqgan
        if wanted:
            from .original.download import check_free_space

            job.temporary.append(job.work)
            need = sum(archives.uncompressed_size(z, members) for z, members in wanted.items())
            check_free_space({job.work: need}, f"extracting {job.release.name}")
        for archive, members in wanted.items():
            logger.info("verifying and extracting %s", archive.name)
            archives.verify_and_extract(archive, members)
            if self.args.from_paths:  # (downloads are recorded when they are fetched)
                self._record_local(job, archive)
        return ckpts, vqgan

    def run(self, job: Job) -> Path | None:
        rel = job.release
        if job.out.exists() and not self.args.overwrite:
            logger.warning("%s exists; skipping %s (pass --overwrite to make it again)", job.out, rel.name)
            return None
        t0 = time.time()
        try:
            if self.args.from_paths:
                repo, ckpts, vqgan = self.local_sources(job, self.args.from_paths, len(self.args.names) == 1)
            else:
                repo, ckpts, vqgan = self.fetch_sources(job)
            files = release_files(rel, repo, ckpts, vqgan)
            logger.info("converting %s (%s transformers) into %s", rel.name, job.dtype, job.out)
            key = "downloads" if not self.args.from_paths else "local_files"
            out = convert_release(files, job.out, overwrite=self.args.overwrite, dtype=STORAGE_DTYPES[job.dtype],
                                  provenance={"obtained_with": "python -m imagebart_core.get", key: job.provenance})
        finally:
            for p in job.temporary:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        logger.info("wrote %s (%s) in %.0fs", out, human_bytes(out.stat().st_size), time.time() - t0)
        return out

    def finish(self) -> None:
        """Delete the downloads (unless --keep); keep the ones a failed run may resume from."""
        for p in sorted(self.remove_at_end - self.keep_at_end):
            p.unlink(missing_ok=True)
        if not self.args.keep:
            _prune_empty(self.cache)


def _prune_empty(folder: Path) -> None:
    if not folder.is_dir():
        return
    for d in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()
        except OSError:
            pass


def names_needed(rel: Release, names: set[str], prefix: str) -> list[str]:
    """The repository files ``rel`` needs that exist in an archive (configs, shrink lists, schedule pickles)."""
    wanted = [rel.sampling_config, *rel.scale_configs]
    data = [n[len(prefix):] for n in names if n.startswith(prefix + "data/") and n.endswith((".npy", ".p"))]
    return [w for w in wanted if prefix + w in names] + sorted(data)


def release_files(rel: Release, repo: Path, ckpts: list[Path], vqgan: Path) -> ReleaseFiles:
    """The converter's view: yamls from the repository, checkpoints and VQGAN from wherever they are."""
    from .original.yaml_config import read_sampling_yaml

    sampling = repo / rel.sampling_config
    listed_ckpts, cfgs = read_sampling_yaml(sampling)
    if len(listed_ckpts) != len(ckpts):
        raise ConversionError(f"{sampling} lists {len(listed_ckpts)} checkpoints, found {len(ckpts)}")
    return ReleaseFiles(name=rel.name, root=repo, checkpoints=list(ckpts), configs=[repo / c for c in cfgs],
                        sampling_config=sampling, vqgan_checkpoint=vqgan)


# -- command line ---------------------------------------------------------------------------------------------
def list_models() -> str:
    rows = [f"{'model':26} {'scales':>6} {'params':>8}  {'download*':>9}  " + "  ".join(
        f"{'file ' + d:>10}" for d in STORAGE_DTYPES) + "  description"]
    for name, rel in RELEASES.items():
        s = model_size(name)
        sizes = "  ".join(f"{human_bytes(s.file_bytes(d)):>10}" for d in STORAGE_DTYPES)
        n = len(rel.scale_configs)
        est = "~" + human_bytes(2 * 4 * s.transformer_params + n * s.vqgan_bytes).replace(".00", "")
        rows.append(f"{name:26} {n:>6} {s.transformer_params / 1e9:>7.2f}B  {est:>9}  "
                    f"{sizes}  {rel.description}")
    rows.append("")
    rows.append("* download: an estimate, not a published figure (checkpoints that hold the raw and the EMA weights "
                "and a VQGAN copy per scale), plus vqgan.zip (all five VQGANs) once. get asks the server for the "
                "real size and checks the free disk space before the first byte.")
    rows.append(f"default --dtype: {DEFAULT_DTYPE}. No text-conditional ImageBART weights were ever released.")
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m imagebart_core.get",
        description="Download a released ImageBART model (CompVis, NeurIPS 2021) and convert it into the pack's "
                    ".safetensors model file. The only command of the pack that uses the network.",
    )
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"released model(s): {', '.join(RELEASES)}, or all")
    ap.add_argument("--list", action="store_true", help="list the released models with their sizes and exit")
    ap.add_argument("--dtype", choices=tuple(STORAGE_DTYPES), default=DEFAULT_DTYPE,
                    help=f"storage precision of the transformers (default {DEFAULT_DTYPE}; the VQGAN stays fp32)")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--comfyui", help="ComfyUI's folder: the file goes to its models/imagebart/")
    where.add_argument("--dir", help="folder for the model file (default: models/imagebart/ of the ComfyUI tree "
                                     "this runs in)")
    ap.add_argument("--from", dest="from_paths", type=Path, action="append", default=[], metavar="PATH",
                    help="use zips or extracted folders you already have (repeat for several; include a clone of "
                         "the original repository for its configs); no network")
    ap.add_argument("--cache", default=str(default_cache()),
                    help=f"download cache (default: $IMAGEBART_CACHE or ~/.cache/imagebart-downloads; now "
                         f"{default_cache()})")
    ap.add_argument("--keep", action="store_true", help="keep the downloaded zips and files in the cache")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    ap.add_argument("--mirror", default=RELEASE_BASE_URL, help=f"base address of the model zips (default "
                                                               f"{RELEASE_BASE_URL})")
    ap.add_argument("--repo-url", default=REPO_BASE_URL, help="base address of the original repository's files "
                                                              "(default: GitHub, pinned commit)")
    ap.add_argument("--retries", type=int, default=3, help="resumed attempts after a dropped connection")
    ap.add_argument("--retry-wait", type=float, default=2.0, help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    ap.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s",
                        stream=sys.stderr)
    if args.list:
        print(list_models())  # noqa: T201 (CLI output)
        return 0
    if not args.names:
        print("error: name the model(s) to get, or 'all'; --list shows them", file=sys.stderr)  # noqa: T201
        return 2
    names = list(RELEASES) if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in RELEASES]
    if unknown:
        print(f"error: unknown model {', '.join(unknown)}; the released models are {', '.join(RELEASES)} "  # noqa: T201
              "(or all). No text-conditional ImageBART weights were ever released.", file=sys.stderr)
        return 2
    args.names = names
    models_dir = models_folder(args)
    getter = Getter(args, models_dir)
    done: list[Path] = []
    try:
        for name in names:
            job = Job(RELEASES[name], args.dtype, models_dir / output_name(name, args.dtype), getter.cache)
            out = getter.run(job)
            if out is not None:
                done.append(out)
    except KeyboardInterrupt:
        print(f"\ninterrupted: nothing partial was written to {models_dir}. A partial download stays in "  # noqa: T201
              f"{getter.cache}; run the same command again to resume.", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            print(f"error: the disk is full ({exc}); nothing partial was written to {models_dir}. Free some space "  # noqa: T201
                  "and run the same command again (downloads resume).", file=sys.stderr)
            return 1
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    except (OriginalFileError, archives.ArchiveError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        if isinstance(exc, archives.ArchiveError) and "corrupt" in str(exc) and not args.from_paths:
            _drop_corrupt(getter, exc)
        return 1
    getter.finish()
    for out in done:
        print(f"ready: {out}")  # noqa: T201
    return 0


def _drop_corrupt(getter: Getter, exc: Exception) -> None:
    """A downloaded zip that fails its check is deleted, so the next run downloads it anew."""
    for p in getter.cache.glob("*.zip"):
        if str(p) in str(exc):
            p.unlink(missing_ok=True)
            print(f"deleted the corrupt download {p}; the next run downloads it anew", file=sys.stderr)  # noqa: T201


if __name__ == "__main__":
    sys.exit(main())
