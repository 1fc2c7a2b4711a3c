"""Write the example input images of the workflows (deterministic, drawn from code).

They look like the bundled demo models' training data (:mod:`training.shapes`: coloured shapes on a plain
background), so edits of them are meaningful:

* ``workflows/inputs/imagebart_example.png``: 64x64 RGB, ``"a green diamond left of a blue square"`` (item 38 of
  the shapes data set, drawn at 64 px; Encode resizes it to the demo models' 32x32).
* ``workflows/inputs/imagebart_example_masked.png``: the same picture as RGBA with a hand-drawn-like transparent
  blob over the green diamond: ComfyUI's LoadImage turns transparency into its MASK output (1 = area to
  regenerate).
* ``workflows/inputs/imagebart_example_wide_masked.png``: 96x64 RGBA, six 32x32 shapes pictures on one background
  in a 3x2 grid (larger than the demo models' 32x32 in both directions) with a transparent stroke over the shape
  in the middle of the top row, for large-image inpainting.
* ``workflows/inputs/imagebart_example_single_masked.png``: 64x64 RGBA, ``"a blue diamond"`` alone (item 40 of the
  one-shape data set the class model was trained on) with a transparent ellipse over the diamond, for the
  class-guided local edit (the class model only ever saw one shape per image).

The file names start with ``imagebart_``: the pack copies them into ComfyUI's input folder at start-up where no
file of that name exists (``nodes/example_inputs.py``), so the example workflows run on the first Queue.

Usage (from the repository root): ``python3 scripts/make_example_inputs.py``
"""

import math
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training.shapes import BACKGROUNDS, make_sample  # noqa: E402

OUT = ROOT / "workflows" / "inputs"
SIZE = 64
EXAMPLE_INDEX = 38  # "a green diamond left of a blue square" on the light blue background
SINGLE_INDEX = 40  # one-shape data set: "a blue diamond" on the off-white background
SINGLE_MARGIN = 8  # px around the shape's bounding box that the transparent ellipse covers
TILE = 32  # the demo models' image size
WIDE_GRID = (3, 2)  # tiles across, down


def example() -> Image.Image:
    return make_sample(EXAMPLE_INDEX, SIZE).image


def blob_alpha(size: int = SIZE) -> Image.Image:
    """Alpha channel: 255 everywhere except a wobbly blob over the left shape (0 = transparent = regenerate)."""
    alpha = Image.new("L", (size, size), 255)
    d = ImageDraw.Draw(alpha)
    s = size / 64
    for i in range(70):  # a brush going round and round over the left shape, as if colouring it in
        t = i / 69
        x = s * (15 + 6 * math.cos(2 * math.pi * 1.5 * t) + 1.5 * math.sin(11 * t))
        y = s * (23 + 12 * math.sin(2 * math.pi * 1.5 * t) * (0.6 + 0.4 * t) + 2 * math.cos(7 * t))
        r = s * (9 + 1.5 * math.sin(5 * t))
        d.ellipse([x - r, y - r, x + r, y + r], fill=0)
    return alpha


def single_shape() -> Image.Image:
    return make_sample(SINGLE_INDEX, SIZE, max_shapes=1).image


def shape_ellipse_alpha(img: Image.Image, margin: int = SINGLE_MARGIN) -> Image.Image:
    """Alpha: 255 except an ellipse (0 = transparent = regenerate) around the bounding box of the pixels that
    differ from the background (the corner colour), grown by ``margin`` px: the whole shape and a rim."""
    bg = img.getpixel((0, 0))
    xs, ys = [], []
    for y in range(img.height):
        for x in range(img.width):
            if sum(abs(a - b) for a, b in zip(img.getpixel((x, y)), bg)) > 30:
                xs.append(x)
                ys.append(y)
    alpha = Image.new("L", img.size, 255)
    ImageDraw.Draw(alpha).ellipse([min(xs) - margin, min(ys) - margin, max(xs) + margin, max(ys) + margin], fill=0)
    return alpha


def wide_tiles(background=BACKGROUNDS[0]) -> Image.Image:
    """The first ``3 x 2`` shapes pictures (32 px) with ``background``, pasted into one 96x64 image."""
    cols, rows = WIDE_GRID
    img = Image.new("RGB", (cols * TILE, rows * TILE), background)
    index, placed = 0, 0
    while placed < cols * rows:
        # make_sample draws its background first from this stream: select on it without drawing the image
        if random.Random(f"shapes-0-{index}").choice(BACKGROUNDS) == background:
            r, c = divmod(placed, cols)
            img.paste(make_sample(index, TILE).image, (c * TILE, r * TILE))
            placed += 1
        index += 1
    return img


def wide_stroke_alpha(width: int = WIDE_GRID[0] * TILE, height: int = WIDE_GRID[1] * TILE) -> Image.Image:
    """Alpha of the wide image: a brush stroke over the top-middle tile's shape (0 = transparent = regenerate)."""
    alpha = Image.new("L", (width, height), 255)
    d = ImageDraw.Draw(alpha)
    for i in range(60):
        t = i / 59
        x = 36 + 24 * t + 2 * math.sin(9 * t)
        y = 8 + 14 * math.sin(math.pi * t) + 2 * math.cos(13 * t)
        r = 7 + 2 * math.sin(5 * t)
        d.ellipse([x - r, y - r, x + r, y + r], fill=0)
    return alpha


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    img = example()
    img.save(OUT / "imagebart_example.png", optimize=True)
    rgba = img.copy()
    rgba.putalpha(blob_alpha())
    rgba.save(OUT / "imagebart_example_masked.png", optimize=True)
    wide = wide_tiles()
    wide.putalpha(wide_stroke_alpha())
    wide.save(OUT / "imagebart_example_wide_masked.png", optimize=True)
    single = single_shape()
    single.putalpha(shape_ellipse_alpha(single))
    single.save(OUT / "imagebart_example_single_masked.png", optimize=True)


if __name__ == "__main__":
    main()
