"""Write the procedural shapes data set as an image folder.

    python -m training.make_shapes --out data/shapes --n 1000 --size 64

Layout: ``OUT/<shape>/<index>.png`` with ``OUT/<shape>/<index>.txt`` holding the caption, so the folder
works with class conditioning (sub-folder names) and text conditioning (captions) alike.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .shapes import SHAPES, make_sample


def write_shapes(out: str | Path, n: int, size: int = 64, seed: int = 0, max_shapes: int = 2,
                 overwrite: bool = False) -> Path:
    """Write ``n`` items to ``out`` (created). Refuses a non-empty folder unless ``overwrite``."""
    out = Path(out)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
    for kind in SHAPES:
        (out / kind).mkdir(parents=True, exist_ok=True)
    width = len(str(n - 1))
    for i in range(n):
        item = make_sample(i, size=size, seed=seed, max_shapes=max_shapes)
        stem = out / item.class_name / f"{i:0{width}d}"
        item.image.save(stem.with_suffix(".png"))
        stem.with_suffix(".txt").write_text(item.caption + "\n", encoding="utf-8")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.make_shapes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (class sub-folders are created inside)")
    p.add_argument("--n", type=int, default=1000, help="number of images (default 1000)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--seed", type=int, default=0, help="data set seed (default 0)")
    p.add_argument("--max-shapes", type=int, default=2, help="1 or 2 shapes per image (default 2)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    args = p.parse_args(argv)
    write_shapes(args.out, args.n, args.size, args.seed, args.max_shapes, args.overwrite)
    print(f"wrote {args.n} images of {args.size}x{args.size} px to {args.out}")  # noqa: T201 (CLI summary)


if __name__ == "__main__":
    main()
