"""Write the input images of the released-model workflows (``workflows/released/``), drawn from code.

256x256 px (the released models' size), simple drawings, nothing downloaded:

* ``workflows/inputs/imagebart_released_face.png``: RGB, a drawn face (FFHQ upper-half completion: the top half is
  regenerated to fit the drawn chin, mouth and neck).
* ``workflows/inputs/imagebart_released_meadow_masked.png``: RGBA, a meadow under a sky with a tree, and a transparent
  blob on the grass (ImageNet class-guided editing: the blob becomes the chosen class).
* ``workflows/inputs/imagebart_released_church_masked.png``: RGBA, a drawn church with a transparent stroke over its
  tower (LSUN churches free-form inpainting).

ComfyUI's LoadImage turns transparency into its MASK output (1 = area to regenerate).

Usage (from the repository root): ``python3 scripts/make_release_inputs.py``
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "workflows" / "inputs"
SIZE = 256


def _vertical_gradient(top: tuple[int, int, int], bottom: tuple[int, int, int], size: int = SIZE) -> Image.Image:
    img = Image.new("RGB", (size, size))
    d = ImageDraw.Draw(img)
    for y in range(size):
        t = y / (size - 1)
        d.line([(0, y), (size, y)], fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom)))
    return img


def face() -> Image.Image:
    img = _vertical_gradient((196, 205, 214), (120, 132, 150))
    d = ImageDraw.Draw(img)
    d.rectangle([100, 200, 156, 256], fill=(224, 178, 150))  # neck
    d.pieslice([28, 214, 228, 330], 180, 360, fill=(60, 76, 112))  # shoulders
    d.ellipse([58, 22, 198, 142], fill=(70, 46, 30))  # hair
    d.ellipse([66, 46, 190, 222], fill=(236, 190, 160))  # face
    d.ellipse([52, 112, 74, 150], fill=(226, 178, 148))  # ears
    d.ellipse([182, 112, 204, 150], fill=(226, 178, 148))
    d.chord([62, 30, 194, 110], 180, 360, fill=(70, 46, 30))  # fringe
    for cx in (100, 156):  # eyes and brows
        d.ellipse([cx - 14, 110, cx + 14, 126], fill=(250, 250, 250))
        d.ellipse([cx - 6, 111, cx + 6, 125], fill=(80, 60, 40))
        d.line([(cx - 16, 100), (cx + 14, 98)], fill=(70, 46, 30), width=4)
    d.polygon([(128, 124), (120, 160), (136, 160)], fill=(220, 168, 140))  # nose
    d.arc([104, 168, 152, 196], 20, 160, fill=(170, 70, 70), width=5)  # mouth
    return img


def _blob(size: int, cx: float, cy: float, rx: float, ry: float) -> Image.Image:
    """Alpha 255 with a brush-like transparent blob (0) around (cx, cy)."""
    alpha = Image.new("L", (size, size), 255)
    d = ImageDraw.Draw(alpha)
    d.ellipse([cx - 0.5 * rx, cy - 0.5 * ry, cx + 0.5 * rx, cy + 0.5 * ry], fill=0)
    for i in range(90):
        t = i / 89
        x = cx + rx * 0.6 * math.cos(2 * math.pi * 1.5 * t) + 4 * math.sin(13 * t)
        y = cy + ry * 0.6 * math.sin(2 * math.pi * 1.5 * t) * (0.6 + 0.4 * t) + 3 * math.cos(9 * t)
        r = 0.45 * min(rx, ry) + 4 * math.sin(5 * t)
        d.ellipse([x - r, y - r, x + r, y + r], fill=0)
    return alpha


def meadow_masked() -> Image.Image:
    img = _vertical_gradient((110, 160, 225), (200, 225, 245))
    d = ImageDraw.Draw(img)
    d.ellipse([-60, 120, 200, 230], fill=(96, 150, 70))  # hills
    d.ellipse([100, 110, 330, 230], fill=(84, 138, 62))
    d.rectangle([0, 168, SIZE, SIZE], fill=(104, 168, 72))  # grass
    for x in range(0, SIZE, 6):  # blades
        d.line([(x, 200 + (x * 7) % 40), (x + 2, 190 + (x * 7) % 40)], fill=(80, 140, 56), width=2)
    d.rectangle([196, 96, 208, 176], fill=(96, 66, 40))  # tree
    d.ellipse([168, 50, 236, 120], fill=(54, 110, 48))
    d.ellipse([40, 24, 76, 60], fill=(255, 236, 150))  # sun
    rgba = img.convert("RGBA")
    rgba.putalpha(_blob(SIZE, 96, 196, 70, 44))
    return rgba


def church_masked() -> Image.Image:
    img = _vertical_gradient((150, 180, 220), (220, 226, 232))
    d = ImageDraw.Draw(img)
    d.rectangle([0, 206, SIZE, SIZE], fill=(110, 150, 90))  # lawn
    d.rectangle([60, 120, 210, 210], fill=(200, 190, 170))  # nave
    d.polygon([(50, 124), (135, 70), (220, 124)], fill=(120, 60, 50))  # roof
    d.rectangle([150, 50, 196, 210], fill=(190, 180, 160))  # tower
    d.polygon([(144, 54), (173, 6), (202, 54)], fill=(100, 52, 44))  # spire
    d.line([(173, 0), (173, 14)], fill=(60, 60, 60), width=3)
    d.rectangle([112, 160, 138, 210], fill=(90, 60, 40))  # door
    d.pieslice([112, 148, 138, 174], 180, 360, fill=(90, 60, 40))
    for x in (76, 192 - 26):  # windows
        d.rectangle([x, 140, x + 16, 176], fill=(70, 90, 130))
    d.ellipse([162, 78, 184, 100], fill=(240, 240, 230))  # clock
    rgba = img.convert("RGBA")
    rgba.putalpha(_blob(SIZE, 173, 60, 40, 70))
    return rgba


IMAGES = {"imagebart_released_face.png": face, "imagebart_released_meadow_masked.png": meadow_masked,
          "imagebart_released_church_masked.png": church_masked}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, draw in IMAGES.items():
        draw().save(OUT / name, optimize=True)


if __name__ == "__main__":
    main()
