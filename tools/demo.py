"""``python -m tools.demo``: what ImageBART does, as PNGs, in seconds on a CPU.

With the bundled demo models (``models/`` beside this package, trained by ``python -m training.demo_recipe``
on procedural coloured shapes) it writes into ``--out``:

* ``samples.png``: unconditional samples (top row) and one class-conditional sample per shape class;
* ``inpainting.png``: inputs, the free-form mask (white = regenerate), and the inpainted results;
* ``upper_half.png``: inputs, and completions of their upper halves from the lower halves;
* ``text_edit.png``: an image from a prompt, the mask, and the masked region re-generated from another prompt;
* ``panorama.png``: images three times the trained width whose prompt blends from left to right (sliding windows).

Without the bundled models (or with ``--model FILE``) it runs the same pipeline on that model, or on a tiny
**random-weight** model, which exercises everything but draws structured noise, and says so.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from imagebart_core.checkpoint import load_model
from imagebart_core.conditioning import ConditionBlend
from imagebart_core.config import tiny_config
from imagebart_core.model import ImageBART, upper_half_mask

log = logging.getLogger("imagebart.demo")

BUNDLED_MODELS = Path(__file__).resolve().parents[1] / "models"
CLASS_MODEL = "imagebart-demo-shapes-class.safetensors"
TEXT_MODEL = "imagebart-demo-shapes-text.safetensors"


def save_grid(images: torch.Tensor, path: Path, columns: int = 4, scale: int = 1) -> Path:
    """images float [B, 3, H, W] in 0..1 -> one PNG grid (``scale`` x nearest-neighbour enlargement)."""
    from PIL import Image

    b, _, h, w = images.shape
    columns = min(columns, b)
    rows = (b + columns - 1) // columns
    pad = 2
    grid = torch.ones(3, rows * (h + pad) + pad, columns * (w + pad) + pad)
    for i in range(b):
        r, c = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[:, y : y + h, x : x + w] = images[i].detach().float().cpu()
    array = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    image = Image.fromarray(array)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def blob_mask(batch: int, h: int, w: int) -> torch.Tensor:
    """A free-form mask float [B, H, W] (1 = regenerate): an ellipse joined to a stroke, as if hand-drawn."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    ellipse = ((yy - h * 0.42) / (h * 0.2)) ** 2 + ((xx - w * 0.38) / (w * 0.24)) ** 2 <= 1.0
    stroke = (torch.abs((yy - h * 0.3) - 0.6 * (xx - w * 0.4)) < h * 0.07) & (xx > w * 0.35) & (xx < w * 0.85)
    return (ellipse | stroke).float().expand(batch, h, w).clone()


def _mask_rgb(mask: torch.Tensor) -> torch.Tensor:
    return mask[:, None].expand(-1, 3, -1, -1)


class _Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


def _random_model() -> ImageBART:
    torch.manual_seed(0)
    return ImageBART(tiny_config(n_scales=3, grid=(8, 8), vocab_size=64, n_embed=96)).eval()


def run(out: Path, model_path: str | None = None, batch: int = 4, seed: int = 0, guidance: float = 2.0) -> list[str]:
    """Write the demo PNGs into ``out``; returns the printed summary lines."""
    class_file, text_file = BUNDLED_MODELS / CLASS_MODEL, BUNDLED_MODELS / TEXT_MODEL
    lines = []
    if model_path:
        model, text_model = load_model(model_path), None
        lines.append(f"model: {model_path}")
    elif class_file.is_file():
        model = load_model(class_file)
        text_model = load_model(text_file) if text_file.is_file() else None
        lines.append(f"models: bundled demo models in {BUNDLED_MODELS} ({CLASS_MODEL}"
                     f"{', ' + TEXT_MODEL if text_model else ''}), trained on procedural coloured shapes")
    else:
        model, text_model = _random_model(), None
        lines.append("model: a tiny RANDOM-WEIGHT model (no trained model installed): the pictures are structured noise")
    cfg = model.config
    lines.append(f"chain: {cfg.n_scales} scales (T = {cfg.num_levels}), grid {cfg.grid[0]}x{cfg.grid[1]}, "
                 f"K = {cfg.vocab_size}, conditioning = {cfg.conditioning.kind}")

    # 1. samples: unconditional row, then class-conditional (or text-conditional) rows
    rows, cond_note = [], ""
    with _Timer() as t:
        kind = cfg.conditioning.kind
        if kind == "none" or cfg.conditioning.null_condition:
            rows.append(model.decode(model.sample(batch, seed=seed)))  # null condition on conditional models
        if kind == "class":
            names = model.class_condition(list(range(cfg.conditioning.num_classes))).labels
            cond = model.class_condition(names)
            rows.append(model.decode(model.sample(len(names), cond=cond, seed=seed + 100, guidance=guidance)))
            cond_note = f"; row 2: one sample per class ({', '.join(names)}), guidance {guidance}"
        elif kind == "text":
            cond = model.text_condition(["a red circle above a blue square"] * batch)
            rows.append(model.decode(model.sample(batch, cond=cond, seed=seed + 100, guidance=guidance)))
            cond_note = "; row 2: 'a red circle above a blue square'"
    images = rows[0]
    columns = max(r.shape[0] for r in rows)
    grid = torch.cat([torch.cat([r, torch.ones(columns - r.shape[0], *r.shape[1:])]) for r in rows])
    path = save_grid(grid, out / "samples.png", columns=columns, scale=3)
    lines.append(f"samples: {path} (row 1: unconditional{cond_note}; {t.seconds:.1f} s)")

    # 2. free-form inpainting and 3. upper-half completion of those samples
    h, w = images.shape[-2:]
    codes = model.encode(images)
    mask = blob_mask(batch, h, w)
    with _Timer() as t:
        inpainted = model.decode(model.masked_refine(codes, mask, seed=seed + 1))
    path = save_grid(torch.cat([images, _mask_rgb(mask), inpainted]), out / "inpainting.png", columns=batch, scale=3)
    lines.append(f"inpainting: {path} (rows: input, mask, result; unmasked codes kept exactly; {t.seconds:.1f} s)")
    with _Timer() as t:
        upper = model.decode(model.masked_refine(codes, upper_half_mask(batch, h, w), seed=seed + 2))
    path = save_grid(torch.cat([images, upper]), out / "upper_half.png", columns=batch, scale=3)
    lines.append(f"upper-half completion: {path} (rows: input, upper half regenerated; {t.seconds:.1f} s)")

    # 4. text-guided local edit
    if text_model is not None:
        with _Timer() as t:
            source_prompt, edit_prompt = "a red circle left of a blue square", "a yellow triangle left of a blue square"
            start = text_model.sample(batch, cond=text_model.text_condition([source_prompt] * batch), seed=seed + 3,
                                      guidance=guidance)
            before = text_model.decode(start)
            left = torch.zeros(batch, h, w)
            left[:, :, : w // 2] = 1.0
            edited = text_model.masked_refine(start, left, cond=text_model.text_condition([edit_prompt] * batch),
                                              seed=seed + 4, guidance=guidance)
            after = text_model.decode(edited)
        path = save_grid(torch.cat([before, _mask_rgb(left), after]), out / "text_edit.png", columns=batch, scale=3)
        lines.append(f"text-guided edit: {path} (rows: '{source_prompt}', mask (left half), re-generated as "
                     f"'{edit_prompt}'; {t.seconds:.1f} s)")
        # 5. a panorama three times the trained width, one prompt blending into another (sliding windows)
        with _Timer() as t:
            gh, gw = text_model.config.grid
            blend = ConditionBlend([text_model.text_condition(["a red circle"]),
                                    text_model.text_condition(["a blue square"])])
            wide = text_model.decode(text_model.sample(2, cond=blend, grid=(gh, 3 * gw), seed=seed + 5,
                                                       guidance=guidance))
        path = save_grid(wide, out / "panorama.png", columns=1, scale=3)
        lines.append(f"panorama: {path} ({wide.shape[-1]}x{wide.shape[-2]} px = 3x the trained width, "
                     f"'a red circle' on the left blending into 'a blue square' on the right; {t.seconds:.1f} s)")
    else:
        lines.append("text-guided edit and panorama: skipped (no text-conditional model)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_out", help="output folder for the PNGs (default: demo_out)")
    parser.add_argument("--model", default=None, help="a native .safetensors model file (default: bundled demo)")
    parser.add_argument("--batch", type=int, default=4, help="images per row (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed (item i uses seed + i)")
    parser.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance of conditional rows")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    with torch.inference_mode():
        lines = run(Path(args.out), args.model, args.batch, args.seed, args.guidance)
    lines.append(f"total: {time.perf_counter() - t0:.1f} s")
    for line in lines:
        print(line)  # noqa: T201 - the command's summary
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
