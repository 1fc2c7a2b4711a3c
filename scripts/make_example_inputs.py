"""Write the example input images of the workflows and the demo, rendered from the Noto Color Emoji font.

They are pictures like the bundled emoji models' training data (:mod:`training.make_emoji`: one emoji, the
canonical rendering at 64x64 on white), so completions and edits of them are meaningful:

* ``workflows/inputs/imagebart_emoji_face.png``: 64x64 RGB, "grinning face with big eyes" (U+1F603, in the
  training split), for upper-half completion and variations.
* ``workflows/inputs/imagebart_emoji_face_left_masked.png``: the same face as RGBA with its left half transparent:
  ComfyUI's Load Image turns transparency into its MASK output (1 = area to regenerate), for the class- and
  text-guided local edits ("turn the left half into a cat face").
* ``workflows/inputs/imagebart_emoji_masked.png``: 64x64 RGBA, "smiling face with sunglasses" (U+1F60E) with a
  hand-drawn-like transparent blob over the sunglasses' left lens, for free-form inpainting.
* ``workflows/inputs/imagebart_emoji_wide_masked.png``: 192x64 RGBA, three emoji side by side ("dog face",
  "red apple", "rocket"; larger than the models' 64x64) with a transparent stroke over the middle one, for
  large-image inpainting.

The file names start with ``imagebart_``: the pack copies them into ComfyUI's input folder at start-up where no
file of that name exists (``nodes/example_inputs.py``), so the example workflows run on the first Queue.
The pictures are rendered from Noto Color Emoji (Google, SIL Open Font License 1.1; Debian package
``fonts-noto-color-emoji``); see docs/emoji-licence.md.

Usage (from the repository root): ``python3 scripts/make_example_inputs.py`` (stops with a message naming the
Debian package when the font is missing).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training.emoji_catalog import Emoji  # noqa: E402
from training.make_emoji import EmojiFontMissing, EmojiSettings, GlyphRenderer, load_emoji_font, place  # noqa: E402

OUT = ROOT / "workflows" / "inputs"
SIZE = 64  # the emoji models' image size
FACE = Emoji((0x1F603,), "grinning face with big eyes", "smileys-emotion", "face-smiling", "E0.6")
SUNGLASSES = Emoji((0x1F60E,), "smiling face with sunglasses", "smileys-emotion", "face-glasses", "E1.0")
WIDE = (Emoji((0x1F436,), "dog face", "animals-nature", "animal-mammal", "E0.6"),
        Emoji((0x1F34E,), "red apple", "food-drink", "food-fruit", "E0.6"),
        Emoji((0x1F680,), "rocket", "travel-places", "transport-air", "E0.6"))


def render(renderer: GlyphRenderer, item: Emoji) -> Image.Image:
    """The canonical 64x64 RGB picture of ``item`` (variant 0 of the data set: centred, on white)."""
    glyph = renderer.glyph(item)
    if glyph is None:
        raise SystemExit(f"error: the font has no glyph for {item.name!r} ({item.code})")
    return place(glyph, item, 0, EmojiSettings(size=SIZE))


def left_half_alpha(size: int = SIZE) -> Image.Image:
    """Alpha: the left half transparent (0 = regenerate), the right half opaque."""
    alpha = Image.new("L", (size, size), 255)
    ImageDraw.Draw(alpha).rectangle([0, 0, size // 2 - 1, size - 1], fill=0)
    return alpha


def lens_blob_alpha(size: int = SIZE) -> Image.Image:
    """Alpha: 255 except a wobbly blob over the left lens of the sunglasses (0 = transparent = regenerate), as if
    painted with a brush going round and round."""
    alpha = Image.new("L", (size, size), 255)
    d = ImageDraw.Draw(alpha)
    for i in range(60):
        t = i / 59
        x = 22 + 5 * math.cos(2 * math.pi * 1.5 * t) + 1.5 * math.sin(11 * t)
        y = 26 + 4 * math.sin(2 * math.pi * 1.5 * t) * (0.6 + 0.4 * t) + 1.5 * math.cos(7 * t)
        r = 7 + 1.5 * math.sin(5 * t)
        d.ellipse([x - r, y - r, x + r, y + r], fill=0)
    return alpha


def wide_stroke_alpha(width: int = 3 * SIZE, height: int = SIZE) -> Image.Image:
    """Alpha of the wide picture: a brush stroke across the middle emoji (0 = transparent = regenerate)."""
    alpha = Image.new("L", (width, height), 255)
    d = ImageDraw.Draw(alpha)
    for i in range(60):
        t = i / 59
        x = SIZE + 10 + 44 * t + 2 * math.sin(9 * t)
        y = 18 + 26 * math.sin(math.pi * t) + 2 * math.cos(13 * t)
        r = 9 + 2 * math.sin(5 * t)
        d.ellipse([x - r, y - r, x + r, y + r], fill=0)
    return alpha


def with_alpha(img: Image.Image, alpha: Image.Image) -> Image.Image:
    rgba = img.copy()
    rgba.putalpha(alpha)
    return rgba


def main() -> None:
    try:
        renderer = GlyphRenderer(load_emoji_font())
    except EmojiFontMissing as exc:
        raise SystemExit(f"error: {exc}") from None
    OUT.mkdir(parents=True, exist_ok=True)
    face = render(renderer, FACE)
    face.save(OUT / "imagebart_emoji_face.png", optimize=True)
    with_alpha(face, left_half_alpha()).save(OUT / "imagebart_emoji_face_left_masked.png", optimize=True)
    with_alpha(render(renderer, SUNGLASSES), lens_blob_alpha()).save(OUT / "imagebart_emoji_masked.png",
                                                                     optimize=True)
    wide = Image.new("RGB", (SIZE * len(WIDE), SIZE), (255, 255, 255))
    for i, item in enumerate(WIDE):
        wide.paste(render(renderer, item), (i * SIZE, 0))
    with_alpha(wide, wide_stroke_alpha()).save(OUT / "imagebart_emoji_wide_masked.png", optimize=True)


if __name__ == "__main__":
    main()
