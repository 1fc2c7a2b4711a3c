"""Image folders for training.

``ImageFolder(root, size)`` finds every image below ``root`` (recursively). Class labels come from the first
sub-folder level below ``root`` (sorted names; images directly in ``root`` have no class), and a ``.txt`` file
next to an image (same stem) is its caption. Images are converted to RGB, resized so the short side equals
``size`` (bicubic) and cropped to ``size`` x ``size`` (centre crop, or a random crop when ``random_crop``),
optionally flipped horizontally. Items are float ``[3, size, size]`` in ``[-1, 1]`` (the VQGAN's range).

Random augmentation is a pure function of ``(seed, epoch, index)`` (set via :meth:`set_epoch`), so a resumed
run sees exactly the images an uninterrupted one would.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class DataError(ValueError):
    """A data folder that cannot be used, with the reason."""


def find_images(root: str | Path) -> list[Path]:
    """Sorted image paths below ``root`` (recursive, by extension). Hidden files and folders (a name starting
    with ".") below ``root`` are skipped; the path of ``root`` itself may contain any (``../data``, ``~/.cache/x``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist or is not a folder")
    files = sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise DataError(f"no images found in {root} (looked recursively for {', '.join(IMAGE_EXTENSIONS)})")
    return files


def class_names_of(root: str | Path) -> list[str]:
    """The class list: sorted names of the (non-hidden) sub-folders of ``root`` (as torchvision's ImageFolder;
    an empty sub-folder is still a class). Raises DataError when ``root`` holds no images at all."""
    root = Path(root)
    find_images(root)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_rgb(path: Path) -> Image.Image:
    """Open an image as RGB; raises DataError naming the file when it cannot be read."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}. Remove or replace the file.") from exc


def resize_crop(img: Image.Image, size: int, rnd: random.Random | None = None, flip: bool = False) -> Image.Image:
    """Short side to ``size`` (bicubic), then a centre crop (or a random one when ``rnd`` is given)."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC)
    if rnd is None:
        left, top = (nw - size) // 2, (nh - size) // 2
    else:
        left, top = rnd.randint(0, nw - size), rnd.randint(0, nh - size)
    img = img.crop((left, top, left + size, top + size))
    if flip:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return img


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> float32 [3, H, W] in [-1, 1] (x / 127.5 - 1, as the original)."""
    arr = np.asarray(img, dtype=np.uint8)  # [H, W, 3]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 127.5 - 1.0


class ImageFolder(torch.utils.data.Dataset):
    """Images below ``root`` as ``{"image": float [3,S,S] in [-1,1], "label": int64 (-1 = none),
    "caption": str ("" = none), "index": int}``.

    Args:
        root: the folder.
        size: training side in pixels.
        class_names: the class list to map sub-folders to (default: this folder's sorted sub-folders).
            An image in a sub-folder not in the list raises DataError.
        random_crop / hflip: augmentation (deterministic per ``(seed, epoch, index)``).
        check: open every image once up front to fail early on unreadable files.
    """

    def __init__(self, root: str | Path, size: int, class_names: list[str] | None = None,
                 random_crop: bool = False, hflip: bool = False, seed: int = 0, check: bool = False):
        self.root = Path(root)
        if size < 1:
            raise DataError(f"image size must be positive, got {size}")
        self.size = int(size)
        self.files = find_images(self.root)
        self.class_names = list(class_names) if class_names is not None else class_names_of(self.root)
        index = {n: i for i, n in enumerate(self.class_names)}
        self.labels: list[int] = []
        for p in self.files:
            parts = p.relative_to(self.root).parts
            if len(parts) > 1:
                if parts[0] not in index:
                    raise DataError(f"{p} is in sub-folder {parts[0]!r}, which is not one of the model's classes "
                                    f"{self.class_names[:10]}{'...' if len(self.class_names) > 10 else ''}")
                self.labels.append(index[parts[0]])
            else:
                self.labels.append(-1)
        self.random_crop, self.hflip, self.seed = random_crop, hflip, seed
        self.epoch = 0
        if check:
            for p in self.files:
                load_rgb(p)

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def caption(self, i: int) -> str:
        txt = self.files[i].with_suffix(".txt")
        return txt.read_text(encoding="utf-8").strip() if txt.is_file() else ""

    def has_labels(self) -> bool:
        return all(lab >= 0 for lab in self.labels)

    def load(self, i: int, epoch: int | None = None) -> torch.Tensor:
        """Image ``i`` as float [3, size, size] in [-1, 1]."""
        rnd = None
        flip = False
        if self.random_crop or self.hflip:
            r = random.Random(f"{self.seed}-{self.epoch if epoch is None else epoch}-{i}")
            rnd = r if self.random_crop else None
            flip = self.hflip and r.random() < 0.5
        return to_tensor(resize_crop(load_rgb(self.files[i]), self.size, rnd, flip))

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """``key``: an index, or ``(index, epoch)`` (augmentation of that epoch; for worker processes)."""
        i, epoch = (key if isinstance(key, tuple) else (key, None))
        return {"image": self.load(i, epoch), "label": self.labels[i], "caption": self.caption(i), "index": i}
