"""A procedural data set of simple coloured shapes, for quick experiments and tests.

Each image shows one or two shapes (circle, square, triangle, diamond, cross) in a few colours on a plain
background. The class is the kind of the first ("main") shape; the caption names the shapes, their colours
and where the second one sits (e.g. ``"a red circle above a blue square"``). Everything is drawn with PIL and
is a pure function of ``(seed, index)``: the same seed gives the same images, labels and captions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
}
BACKGROUNDS: tuple[tuple[int, int, int], ...] = ((245, 245, 240), (30, 30, 35), (200, 220, 235))


@dataclass
class ShapeSample:
    """One generated item: an RGB image, its class index (into SHAPES) and its caption."""

    image: Image.Image
    label: int
    caption: str

    @property
    def class_name(self) -> str:
        return SHAPES[self.label]


def draw_shape(draw: ImageDraw.ImageDraw, kind: str, box: tuple[float, float, float, float], color) -> None:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if kind == "circle":
        draw.ellipse(box, fill=color)
    elif kind == "square":
        draw.rectangle(box, fill=color)
    elif kind == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=color)
    elif kind == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=color)
    elif kind == "cross":
        w = (x1 - x0) / 3
        draw.rectangle((cx - w / 2, y0, cx + w / 2, y1), fill=color)
        draw.rectangle((x0, cy - w / 2, x1, cy + w / 2), fill=color)
    else:
        raise ValueError(f"unknown shape {kind!r}; known: {SHAPES}")


def make_sample(index: int, size: int = 64, seed: int = 0, max_shapes: int = 2) -> ShapeSample:
    """Item ``index`` of the data set with ``seed``: a ``size`` x ``size`` RGB image, label and caption."""
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, got {size}")
    rnd = random.Random(f"shapes-{seed}-{index}")
    bg = rnd.choice(BACKGROUNDS)
    img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    n = rnd.randint(1, max(1, max_shapes))
    label = rnd.randrange(len(SHAPES))
    kinds = [SHAPES[label]] + [rnd.choice(SHAPES) for _ in range(n - 1)]
    colors = rnd.sample(sorted(COLORS), n)
    if n == 1:
        s = rnd.uniform(0.45, 0.75) * size
        x0, y0 = rnd.uniform(0, size - s), rnd.uniform(0, size - s)
        draw_shape(draw, kinds[0], (x0, y0, x0 + s, y0 + s), COLORS[colors[0]])
        return ShapeSample(img, label, f"a {colors[0]} {kinds[0]}")
    # two shapes: the main one in one half, the other in the opposite half
    vertical = rnd.random() < 0.5
    first_low = rnd.random() < 0.5  # main shape on the top / left half?
    half = size / 2
    boxes = []
    for i in range(2):
        s = rnd.uniform(0.55, 0.85) * half
        lo = (i == 0) == first_low
        a0 = (0 if lo else half) + rnd.uniform(0, half - s)
        b0 = rnd.uniform(0, size - s)
        x0, y0 = (b0, a0) if vertical else (a0, b0)
        boxes.append((x0, y0, x0 + s, y0 + s))
    for kind, color, box in zip(kinds, colors, boxes):
        draw_shape(draw, kind, box, COLORS[color])
    relation = ("above" if first_low else "below") if vertical else ("left of" if first_low else "right of")
    caption = f"a {colors[0]} {kinds[0]} {relation} a {colors[1]} {kinds[1]}"
    return ShapeSample(img, label, caption)
