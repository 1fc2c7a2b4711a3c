"""Write the example input images of the workflows (deterministic, drawn from code).

* ``workflows/inputs/example.png``: 96x96 RGB, a small landscape (sky, sun, hills, a house).
* ``workflows/inputs/example_masked.png``: the same picture as RGBA with a hand-drawn-like transparent
  stroke: ComfyUI's LoadImage turns transparency into its MASK output (1 = area to regenerate).
* ``workflows/inputs/example_wide_masked.png``: 192x96 RGBA, a wide landscape (larger than the random demo
  model's 64x64 px in both directions) with a transparent stroke over the sky, for large-image inpainting.

Usage (from the repository root): ``python3 scripts/make_example_inputs.py``
"""

import math
from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent.parent / "workflows" / "inputs"
SIZE = 96


def landscape() -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE))
    d = ImageDraw.Draw(img)
    for y in range(SIZE):  # sky gradient
        t = y / SIZE
        d.line([(0, y), (SIZE, y)], fill=(int(90 + 100 * t), int(150 + 70 * t), 235))
    d.ellipse([62, 10, 84, 32], fill=(255, 214, 90))  # sun
    d.polygon([(0, 60), (30, 44), (58, 58), (96, 40), (96, 96), (0, 96)], fill=(70, 150, 70))  # hills
    d.polygon([(0, 76), (40, 66), (96, 78), (96, 96), (0, 96)], fill=(50, 120, 50))
    d.rectangle([18, 60, 38, 78], fill=(200, 80, 60))  # house
    d.polygon([(15, 61), (28, 50), (41, 61)], fill=(120, 50, 40))
    d.rectangle([25, 68, 31, 78], fill=(90, 60, 40))
    return img


def stroke_alpha() -> Image.Image:
    """Alpha channel: 255 everywhere except a wobbly brush stroke (0 = transparent = regenerate)."""
    alpha = Image.new("L", (SIZE, SIZE), 255)
    d = ImageDraw.Draw(alpha)
    for i in range(60):
        t = i / 59
        x = 52 + 30 * t + 4 * math.sin(9 * t)
        y = 14 + 20 * math.sin(math.pi * t) + 3 * math.cos(13 * t)
        r = 7 + 3 * math.sin(5 * t)
        d.ellipse([x - r, y - r, x + r, y + r], fill=0)
    return alpha


def wide_landscape(width: int = 2 * SIZE, height: int = SIZE) -> Image.Image:
    """A panorama-shaped version of :func:`landscape`: rolling hills, two houses, a sun and a tree."""
    img = Image.new("RGB", (width, height))
    d = ImageDraw.Draw(img)
    for y in range(height):  # sky gradient
        t = y / height
        d.line([(0, y), (width, y)], fill=(int(90 + 100 * t), int(150 + 70 * t), 235))
    d.ellipse([140, 8, 164, 32], fill=(255, 214, 90))  # sun
    far = [(x, int(56 - 10 * math.sin(x / 23.0) - 5 * math.sin(x / 9.0))) for x in range(0, width + 1, 4)]
    d.polygon(far + [(width, height), (0, height)], fill=(70, 150, 70))  # far hills
    near = [(x, int(76 - 6 * math.sin(x / 31.0 + 1.0))) for x in range(0, width + 1, 4)]
    d.polygon(near + [(width, height), (0, height)], fill=(50, 120, 50))  # near hills
    for x0 in (18, 112):  # houses
        d.rectangle([x0, 60, x0 + 20, 78], fill=(200, 80, 60))
        d.polygon([(x0 - 3, 61), (x0 + 10, 50), (x0 + 23, 61)], fill=(120, 50, 40))
        d.rectangle([x0 + 7, 68, x0 + 13, 78], fill=(90, 60, 40))
    d.rectangle([76, 58, 80, 80], fill=(100, 70, 40))  # tree
    d.ellipse([68, 42, 88, 62], fill=(40, 100, 45))
    return img


def wide_stroke_alpha(width: int = 2 * SIZE, height: int = SIZE) -> Image.Image:
    """Alpha of the wide image: a brush stroke across the sky around the sun (0 = transparent = regenerate)."""
    alpha = Image.new("L", (width, height), 255)
    d = ImageDraw.Draw(alpha)
    for i in range(80):
        t = i / 79
        x = 100 + 80 * t + 4 * math.sin(7 * t)
        y = 16 + 8 * math.sin(math.pi * t) + 3 * math.cos(11 * t)
        r = 8 + 3 * math.sin(4 * t)
        d.ellipse([x - r, y - r, x + r, y + r], fill=0)
    return alpha


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    img = landscape()
    img.save(OUT / "example.png", optimize=True)
    rgba = img.copy()
    rgba.putalpha(stroke_alpha())
    rgba.save(OUT / "example_masked.png", optimize=True)
    wide = wide_landscape()
    wide.putalpha(wide_stroke_alpha())
    wide.save(OUT / "example_wide_masked.png", optimize=True)


if __name__ == "__main__":
    main()
