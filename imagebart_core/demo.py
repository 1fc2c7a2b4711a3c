"""``python -m imagebart_core.demo``: sample, inpaint and complete images, written as PNGs.

Uses the bundled demo model when it is installed (``models/`` beside this package) or a model file
given with ``--model``; otherwise it falls back to a tiny **random-weight** model, which exercises
the whole pipeline but draws structured noise, and says so.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from .checkpoint import load_model
from .config import tiny_config
from .model import ImageBART, upper_half_mask

log = logging.getLogger("imagebart.demo")

BUNDLED_MODELS = Path(__file__).resolve().parents[1] / "models"


def save_grid(images: torch.Tensor, path: Path, columns: int = 4) -> Path:
    """images float [B, 3, H, W] in 0..1 -> one PNG grid."""
    from PIL import Image

    b, _, h, w = images.shape
    columns = min(columns, b)
    rows = (b + columns - 1) // columns
    grid = torch.ones(3, rows * h, columns * w)
    for i in range(b):
        r, c = divmod(i, columns)
        grid[:, r * h : (r + 1) * h, c * w : (c + 1) * w] = images[i].cpu()
    array = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _default_model() -> tuple[ImageBART, str]:
    candidates = sorted(BUNDLED_MODELS.glob("*.safetensors")) if BUNDLED_MODELS.is_dir() else []
    if candidates:
        return load_model(candidates[0]), f"bundled model {candidates[0].name}"
    torch.manual_seed(0)
    cfg = tiny_config(n_scales=3, grid=(8, 8), vocab_size=64, n_embed=96)
    model = ImageBART(cfg).eval()
    return model, "a tiny RANDOM-WEIGHT model (no trained model installed): the pictures are structured noise"


def run(out: Path, model_path: str | None, batch: int, seed: int) -> list[str]:
    """Write the demo PNGs into ``out``; returns the summary lines."""
    model, what = (load_model(model_path), f"model file {model_path}") if model_path else _default_model()
    lines = [f"model: {what}", f"chain: {model.n_scales} scales, grid {model.config.grid}, K={model.config.vocab_size}"]
    cond_kind = model.config.conditioning.kind
    cond = None
    if cond_kind == "class":
        cond = model.class_condition([i % model.config.conditioning.num_classes for i in range(batch)])
    elif cond_kind == "text":
        cond = model.text_condition(["a red circle"] * batch)
    t0 = time.perf_counter()
    codes = model.sample(batch, cond=cond, seed=seed)
    images = model.decode(codes)
    t_sample = time.perf_counter() - t0
    lines.append(f"samples: {save_grid(images, out / 'samples.png')} ({batch} images, {t_sample:.2f} s)")
    h, w = images.shape[-2:]
    mask = torch.zeros(batch, h, w)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    blob = ((yy - h * 0.45) ** 2 / (h * 0.22) ** 2 + (xx - w * 0.55) ** 2 / (w * 0.3) ** 2) <= 1.0
    mask[:, blob] = 1.0
    t0 = time.perf_counter()
    refined = model.decode(model.masked_refine(codes, mask, cond=cond, seed=seed + 1))
    lines.append(f"inpainting: {save_grid(torch.cat([images, refined]), out / 'inpainting.png')} "
                 f"(top row input, bottom row a free-form elliptic hole regenerated, "
                 f"{time.perf_counter() - t0:.2f} s)")
    t0 = time.perf_counter()
    upper = model.decode(model.masked_refine(codes, upper_half_mask(batch, h, w), cond=cond, seed=seed + 2))
    lines.append(f"upper-half completion: {save_grid(torch.cat([images, upper]), out / 'upper_half.png')} "
                 f"({time.perf_counter() - t0:.2f} s)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_out", help="output folder for the PNGs (default: demo_out)")
    parser.add_argument("--model", default=None, help="a native .safetensors model file (default: bundled demo)")
    parser.add_argument("--batch", type=int, default=4, help="images per grid (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed (item i uses seed + i)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with torch.inference_mode():
        lines = run(Path(args.out), args.model, args.batch, args.seed)
    for line in lines:
        print(line)  # noqa: T201 - the command's summary
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
