"""Write a small random-weight ImageBART model file (for example workflows and tests; its samples are structured noise).

    python -m tools.random_model --out imagebart-random-uncond.safetensors --conditioning none

The model is :func:`~imagebart_core.config.tiny_config` with a VQGAN of factor 4: a ``--grid 16 16`` gives
64x64 px images. Its samples are structured noise, not pictures: it exists to exercise the machinery.
Class models get the 1000 ImageNet classes (so names like "tiger" work); conditional models are built with
a null condition (classifier-free guidance works).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imagebart_core.checkpoint import save_model
from imagebart_core.config import ModelConfig, tiny_config


def random_config(conditioning: str = "none", grid: tuple[int, int] = (16, 16), n_scales: int = 3,
                  vocab_size: int = 64) -> ModelConfig:
    """The config of a random demo model: ``conditioning`` none | class | text."""
    cfg = tiny_config(n_scales=n_scales, vocab_size=vocab_size, n_embed=vocab_size + 16, grid=tuple(grid),
                      conditioning=conditioning, num_classes=1000)
    if conditioning == "class":
        cfg.conditioning.class_names = None  # 1000 classes without names = the ImageNet names
    cfg.name = f"random-{conditioning}"
    cfg.source = {"kind": "random", "note": "random weights: samples are structured noise, not images"}
    cfg.validate()
    return cfg


def write_random_model(out: str | Path, conditioning: str = "none", grid: tuple[int, int] = (16, 16),
                       n_scales: int = 3, seed: int = 0, overwrite: bool = False) -> Path:
    """Build a random model and save it to ``out`` (atomic; refuses to overwrite unless asked)."""
    from imagebart_core import build_model

    model = build_model(random_config(conditioning, grid, n_scales), seed=seed)
    return save_model(model, out, overwrite=overwrite)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output .safetensors file")
    parser.add_argument("--conditioning", choices=["none", "class", "text"], default="none")
    parser.add_argument("--grid", type=int, nargs=2, default=[16, 16], metavar=("H", "W"),
                        help="token grid (image = 4x this in pixels); default 16 16 = 64x64 px")
    parser.add_argument("--scales", type=int, default=3, help="number of transformers (chain length T - 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    path = write_random_model(args.out, args.conditioning, tuple(args.grid), args.scales, args.seed, args.overwrite)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {args.conditioning}, grid {args.grid[0]}x{args.grid[1]}, "  # noqa: T201
          f"{args.scales} scales)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
