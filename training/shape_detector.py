"""A simple detector for the procedural shapes: which shapes (and colours) an image shows.

Used to check generated images: the background is the colour of the image border; every connected region
of other pixels that is big enough is a shape. Its mask, cropped to its bounding box and resized to 16x16,
is matched by IoU against the five templates drawn by :mod:`training.shapes`; its colour is the nearest of
the data set's palette. Pure numpy/torch/PIL, no learning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from .shapes import COLORS, SHAPES, draw_shape

TEMPLATE_SIZE = 16


@dataclass
class DetectedShape:
    kind: str
    color: str
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
    area: int
    score: float  # IoU with the best template


def _templates() -> dict[str, np.ndarray]:
    out = {}
    n = TEMPLATE_SIZE * 4
    for kind in SHAPES:
        img = Image.new("L", (n, n), 0)
        draw_shape(ImageDraw.Draw(img), kind, (0, 0, n - 1, n - 1), 255)
        small = img.resize((TEMPLATE_SIZE, TEMPLATE_SIZE), Image.BILINEAR)
        out[kind] = np.asarray(small) > 127
    return out


_TEMPLATES = _templates()


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a bool [H, W] mask, as lists of flat indices."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    comps = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        stack, pixels = [start], []
        seen[start] = True
        while stack:
            y, x = stack.pop()
            pixels.append(y * w + x)
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        comps.append(np.asarray(pixels))
    return comps


def detect_shapes(image: torch.Tensor | np.ndarray, min_area_frac: float = 0.01) -> list[DetectedShape]:
    """image float [3, H, W] in 0..1 (or uint8 [H, W, 3]) -> detected shapes, largest first."""
    if torch.is_tensor(image):
        rgb = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0)
    else:
        rgb = np.asarray(image, dtype=np.float64)
    h, w, _ = rgb.shape
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background = np.median(border, axis=0)
    foreground = np.linalg.norm(rgb - background, axis=-1) > 60.0
    palette = np.array(list(COLORS.values()), dtype=np.float64)
    names = list(COLORS)
    found = []
    for comp in _components(foreground):
        if comp.size < min_area_frac * h * w:
            continue
        ys, xs = comp // w, comp % w
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        box = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        box[ys - y0, xs - x0] = 255
        side = max(box.shape)  # shapes are drawn in square boxes: pad to a square around the centre
        square = np.zeros((side, side), dtype=np.uint8)
        oy, ox = (side - box.shape[0]) // 2, (side - box.shape[1]) // 2
        square[oy : oy + box.shape[0], ox : ox + box.shape[1]] = box
        small = np.asarray(Image.fromarray(square).resize((TEMPLATE_SIZE, TEMPLATE_SIZE), Image.BILINEAR)) > 127
        scores = {k: (small & t).sum() / max(1, (small | t).sum()) for k, t in _TEMPLATES.items()}
        kind = max(scores, key=scores.get)
        mean = rgb.reshape(-1, 3)[comp].mean(0)
        color = names[int(np.argmin(np.linalg.norm(palette - mean, axis=1)))]
        found.append(DetectedShape(kind, color, (int(x0), int(y0), int(x1), int(y1)), int(comp.size),
                                   float(scores[kind])))
    return sorted(found, key=lambda d: -d.area)
