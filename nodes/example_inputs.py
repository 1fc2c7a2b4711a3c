"""The example workflows' input images, made available to ComfyUI's Load Image on start-up.

Core's Load Image only lists (and loads) files in ComfyUI's input folder, and a fresh install's input folder
is empty. So when ComfyUI loads the pack, the images in ``workflows/inputs/`` (all named ``imagebart_*.png``)
are copied into the input folder, each only where no file of that name exists: nothing of the user's is ever
overwritten, a file the user changed under that name is left alone (their version is what the example
workflows then load, and the log says so), and a file the user deleted comes back at the next start. Each copy
is written to a temporary file next to it and linked into place, so a failed copy leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

logger = logging.getLogger("imagebart.nodes")

#: Where the pack keeps the example images (written by scripts/make_example_inputs.py).
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "workflows" / "inputs"
PATTERN = "imagebart_*.png"


def _place_new(data: bytes, target: Path) -> bool:
    """Write ``data`` to ``target`` only if no such file exists; atomic. False if ``target`` appeared first."""
    fd, tmp = tempfile.mkstemp(prefix=".imagebart-", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, target)  # fails if target exists: never overwrites
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create, removed again if writing fails
            try:
                with open(target, "xb") as out:
                    try:
                        out.write(data)
                    except BaseException:
                        out.close()
                        target.unlink()
                        raise
            except FileExistsError:
                return False
        return True
    finally:
        os.unlink(tmp)


def provide_example_inputs(input_dir: str | os.PathLike, source: str | os.PathLike = EXAMPLES_DIR) -> list[str]:
    """Copy the example images from ``source`` into ``input_dir`` where missing; returns the names copied.

    Existing files are never touched; one that differs from the pack's image is reported in the log."""
    input_dir, source = Path(input_dir), Path(source)
    copied = []
    images = sorted(source.glob(PATTERN))
    if not images:
        return copied
    input_dir.mkdir(parents=True, exist_ok=True)
    for image in images:
        target = input_dir / image.name
        data = image.read_bytes()
        if target.exists():
            if not target.is_file() or target.read_bytes() != data:
                logger.warning("ImageBART: %s is not the pack's example image; it is left as it is (the example "
                               "workflows will load this file)", target)
            continue
        if _place_new(data, target):
            copied.append(image.name)
    if copied:
        logger.info("ImageBART: copied the example images %s into ComfyUI's input folder %s", ", ".join(copied),
                    input_dir)
    return copied


def provide_to_comfyui() -> list[str]:
    """:func:`provide_example_inputs` into ComfyUI's input folder; never raises (a failure is logged)."""
    try:
        import folder_paths

        return provide_example_inputs(folder_paths.get_input_directory())
    except Exception as exc:
        logger.warning("ImageBART: could not copy the example images into ComfyUI's input folder (%s); copy "
                       "%s/imagebart_*.png there by hand to run the example workflows", exc, EXAMPLES_DIR)
        return []
