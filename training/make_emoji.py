"""Write the colour-emoji data set (Noto Color Emoji, 64x64 RGB) as two image folders.

    python -m training.make_emoji --out data/emoji

Every fully-qualified emoji of Unicode's ``emoji-test.txt`` (Debian package ``unicode-data``) that the Noto
Color Emoji font (Debian package ``fonts-noto-color-emoji``, SIL Open Font License 1.1) draws as one glyph,
skin-tone, ZWJ, keycap and flag sequences included, is rendered by Pillow (``ImageFont.truetype(font, 109)``,
``embedded_color=True``, libraqm shaping for sequences) and written as::

    OUT/train/<group>/<code>_<v>.png     64x64 RGB; <group> is one of the nine emoji groups (the class)
    OUT/train/<group>/<code>_<v>.txt     the caption: the emoji's CLDR name ("thumbs up: medium skin tone")
    OUT/heldout/<group>/...              the fixed held-out split (training.emoji_catalog.is_heldout)
    OUT/emoji.jsonl                      one line per emoji: code points, name, group, subgroup, split, files
    OUT/dataset.json                     settings, sources, counts per split and group, emoji the font lacks

``OUT/train`` and ``OUT/heldout`` are image folders as ``training.data.ImageFolder`` reads them (class
sub-folders, a caption beside each image; all nine group folders exist in both, so both give the same class
list). Variant 0 of an emoji is the canonical picture: the glyph's em box scaled to 7/8 of the side, centred,
on white. Variants 1.. are augmented in ways that keep an emoji what it is: a scale of ``--min-scale``..1 of
the canonical size, a shift of at most ``--max-shift`` pixels, and a plain light background from a fixed
palette; never flips or rotations (arrows, text and flags would change meaning). Every variant is a pure
function of ``(--seed, emoji, variant)``. By default the training split has 4 variants per emoji and the
held-out split only the canonical picture.

The folder is written atomically: built beside OUT and renamed into place at the end (nothing is left behind
when a run fails); an existing non-empty OUT is replaced only with ``--overwrite``. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from PIL import features as pil_features

from .emoji_catalog import (
    DEFAULT_HELDOUT_FRACTION,
    EMOJI_TEST_PATH,
    GROUPS,
    Emoji,
    EmojiSourceMissing,
    is_heldout,
    read_emoji_test,
)

log = logging.getLogger(__name__)

FONT_PATH = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
FONT_PACKAGE = "fonts-noto-color-emoji"
FONT_SIZE = 109  # the only bitmap strike of Noto Color Emoji (CBDT): 136x128 px glyphs
CANONICAL_FILL = 7 / 8  # the glyph's em box spans this share of the image side in variant 0
WHITE = (255, 255, 255)
# plain light backgrounds of the augmented variants (white included)
BACKGROUNDS = (WHITE, (240, 240, 240), (255, 248, 225), (225, 240, 255), (255, 228, 235), (230, 245, 225))
SPLITS = ("train", "heldout")


class EmojiFontMissing(FileNotFoundError):
    """The colour-emoji font file is not where it was looked for."""


@dataclass
class EmojiSettings:
    """Everything that decides the written files."""

    size: int = 64
    variants: int = 4  # per emoji in the training split (variant 0 is canonical)
    heldout_variants: int = 1  # per emoji in the held-out split
    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION
    min_scale: float = 0.8
    max_shift: int = 4
    seed: int = 0
    per_group: int | None = None  # only the first N emoji of each group (file order): small test sets
    group_images: int | None = None  # training pictures per group (balances the groups; replaces ``variants``)

    def check(self) -> None:
        if self.size < 8:
            raise ValueError(f"size must be at least 8 pixels, got {self.size}")
        if self.variants < 1 or self.heldout_variants < 1:
            raise ValueError(f"variants and heldout_variants must be >= 1, got {self.variants}, "
                             f"{self.heldout_variants}")
        if not 0.0 < self.min_scale <= 1.0:
            raise ValueError(f"min_scale must be in (0, 1], got {self.min_scale}")
        if self.max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {self.max_shift}")
        if self.group_images is not None and self.group_images < 1:
            raise ValueError(f"group_images must be >= 1, got {self.group_images}")
        if self.per_group is not None and self.per_group < 1:
            raise ValueError(f"per_group must be >= 1, got {self.per_group}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")


def load_emoji_font(path: str | Path = FONT_PATH) -> ImageFont.FreeTypeFont:
    """The colour-emoji font at its bitmap size, with libraqm shaping when Pillow has it (needed for skin-tone,
    ZWJ and flag sequences; without it those are reported as missing from the font).

    Raises:
        EmojiFontMissing: no file at ``path`` (the message names the Debian package).
    """
    path = Path(path)
    if not path.is_file():
        raise EmojiFontMissing(
            f"the colour-emoji font {path} was not found. Install the Debian/Ubuntu package '{FONT_PACKAGE}' "
            f"(apt-get install {FONT_PACKAGE}), or pass the path of NotoColorEmoji.ttf with --font"
        )
    raqm = pil_features.check("raqm")
    if not raqm:
        log.warning("Pillow has no libraqm: emoji sequences (skin tones, ZWJ, flags) cannot be shaped and are "
                    "skipped")
    engine = ImageFont.Layout.RAQM if raqm else ImageFont.Layout.BASIC
    return ImageFont.truetype(str(path), FONT_SIZE, layout_engine=engine)


class GlyphRenderer:
    """Renders emoji with one font: :meth:`glyph` gives the RGBA em box, or None when the font lacks the emoji."""

    def __init__(self, font: ImageFont.FreeTypeFont):
        self.font = font
        left, top, right, bottom = font.getbbox("\U0001F600")  # one glyph: the width of a single emoji
        self.glyph_width, self.glyph_height = right - left, bottom - top

    def glyph(self, item: Emoji) -> Image.Image | None:
        """RGBA ``[side, side]`` (side = the glyph's larger dimension), the glyph centred on transparency; None
        when the font draws nothing for it or needs more than one glyph (a sequence the font does not have)."""
        left, top, right, bottom = self.font.getbbox(item.text)
        if bottom - top <= 0 or right - left > self.glyph_width or right - left <= 0:
            return None
        side = max(self.glyph_width, self.glyph_height)
        canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text(((side - self.glyph_width) / 2 - left, (side - self.glyph_height) / 2 - top),
                                    item.text, font=self.font, embedded_color=True)
        if canvas.getchannel("A").getbbox() is None:
            return None
        return canvas


def place(glyph: Image.Image, item: Emoji, variant: int, s: EmojiSettings) -> Image.Image:
    """Variant ``variant`` of an emoji as an RGB ``[size, size]`` picture (0 = canonical, see the module doc)."""
    base = s.size * CANONICAL_FILL
    if variant == 0:
        scale, dx, dy, background = 1.0, 0, 0, WHITE
    else:
        rnd = random.Random(f"emoji-variant:{s.seed}:{item.code}:{variant}")
        scale = rnd.uniform(s.min_scale, 1.0)
        dx, dy = rnd.randint(-s.max_shift, s.max_shift), rnd.randint(-s.max_shift, s.max_shift)
        background = rnd.choice(BACKGROUNDS)
    side = max(1, round(base * scale))
    small = glyph.resize((side, side), Image.LANCZOS)  # Pillow resamples RGBA premultiplied
    free = s.size - side  # pixels left around the glyph; keep it inside the picture
    x = min(max(free // 2 + dx, 0), max(free, 0))
    y = min(max(free // 2 + dy, 0), max(free, 0))
    picture = Image.new("RGBA", (s.size, s.size), (*background, 255))
    picture.alpha_composite(small, (x, y))
    return picture.convert("RGB")


def _emoji_test_version(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines()[:20]:
        if line.startswith("# Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def write_emoji(out: str | Path, settings: EmojiSettings | None = None, font_path: str | Path = FONT_PATH,
                emoji_test: str | Path = EMOJI_TEST_PATH, overwrite: bool = False) -> dict:
    """Render the data set into ``out`` (see the module docstring); returns the summary written to
    ``dataset.json``. Raises EmojiFontMissing / EmojiSourceMissing (naming the package) before writing anything,
    FileExistsError for a non-empty ``out`` without ``overwrite``."""
    s = settings or EmojiSettings()
    s.check()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
    renderer = GlyphRenderer(load_emoji_font(font_path))
    catalog = read_emoji_test(emoji_test)
    if s.per_group is not None:
        taken: Counter[str] = Counter()
        chosen = []
        for item in catalog:
            if taken[item.group] < s.per_group:
                chosen.append(item)
                taken[item.group] += 1
        catalog = chosen
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        summary = _render_all(tmp, catalog, renderer, s)
        summary["sources"] = {
            "font": str(font_path), "font_package": FONT_PACKAGE, "font_name": " ".join(renderer.font.getname()),
            "emoji_test": str(emoji_test), "emoji_test_version": _emoji_test_version(Path(emoji_test)),
            "shaping": "raqm" if pil_features.check("raqm") else "basic",
        }
        (tmp / "dataset.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        _replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


def training_variants(catalog: list[Emoji], s: EmojiSettings) -> dict[str, int]:
    """Pictures per training emoji, per group: ``s.variants`` everywhere, or with ``s.group_images`` about that
    many pictures per group (``max(1, round(group_images / emoji of the group in the training split))``, counted
    on the catalog, so an emoji the font lacks leaves its group slightly short). The Unicode groups differ 25-fold
    in size (skin-tone sequences make people & body over half of all emoji); balancing them gives each group
    about the same share of a trainer's batches, with more augmented variants of the rarer groups' emoji."""
    if s.group_images is None:
        return {group: s.variants for group in GROUPS.values()}
    counts = Counter(item.group for item in catalog if not is_heldout(item, s.heldout_fraction))
    return {group: max(1, round(s.group_images / counts[group])) if counts[group] else 1 for group in GROUPS.values()}


def _render_all(tmp: Path, catalog: list[Emoji], renderer: GlyphRenderer, s: EmojiSettings) -> dict:
    variants = training_variants(catalog, s)  # group -> pictures per training emoji
    for split in SPLITS:
        for group in GROUPS.values():
            (tmp / split / group).mkdir(parents=True, exist_ok=True)
    counts = {split: Counter() for split in SPLITS}
    images = Counter()
    missing: list[dict] = []
    with open(tmp / "emoji.jsonl", "w", encoding="utf-8") as manifest:
        for item in catalog:
            glyph = renderer.glyph(item)
            if glyph is None:
                missing.append({"code": item.code, "name": item.name})
                continue
            split = "heldout" if is_heldout(item, s.heldout_fraction) else "train"
            n = s.heldout_variants if split == "heldout" else variants[item.group]
            files = []
            for v in range(n):
                stem = tmp / split / item.group / f"{item.code}_{v}"
                place(glyph, item, v, s).save(stem.with_suffix(".png"))
                stem.with_suffix(".txt").write_text(item.name + "\n", encoding="utf-8")
                files.append(str(stem.with_suffix(".png").relative_to(tmp)))
            counts[split][item.group] += 1
            images[split] += n
            manifest.write(json.dumps({"code": item.code, "name": item.name, "group": item.group,
                                       "subgroup": item.subgroup, "version": item.version, "split": split,
                                       "files": files}, ensure_ascii=False) + "\n")
    if missing:
        log.warning("the font has no glyph for %d of %d emoji (skipped; listed in dataset.json)", len(missing),
                    len(catalog))
    return {
        "settings": asdict(s),
        "emoji": {split: sum(counts[split].values()) for split in SPLITS},
        "images": {split: images[split] for split in SPLITS},
        "training_variants": variants,
        "groups": {split: {g: counts[split][g] for g in GROUPS.values()} for split in SPLITS},
        "missing_from_font": missing,
    }


def _replace_folder(new: Path, out: Path) -> None:
    """Move the finished folder ``new`` to ``out``; an existing ``out`` is removed only after that succeeded."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    try:
        new.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.make_emoji", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = EmojiSettings()
    p.add_argument("--out", required=True, help="output folder (train/ and heldout/ image folders inside)")
    p.add_argument("--size", type=int, default=d.size, help=f"image side in pixels (default {d.size})")
    p.add_argument("--variants", type=int, default=d.variants,
                   help=f"pictures per emoji in the training split, the first canonical (default {d.variants})")
    p.add_argument("--group-images", type=int, default=None,
                   help="balance the groups: about this many training pictures per group (each emoji of a group gets "
                        "max(1, round(N / emoji in the group)) pictures; replaces --variants)")
    p.add_argument("--heldout-variants", type=int, default=d.heldout_variants,
                   help=f"pictures per emoji in the held-out split (default {d.heldout_variants})")
    p.add_argument("--heldout-fraction", type=float, default=d.heldout_fraction,
                   help=f"share of emoji families held out (default {d.heldout_fraction}); changing it changes "
                   "the split")
    p.add_argument("--min-scale", type=float, default=d.min_scale,
                   help=f"smallest scale of an augmented variant, relative to the canonical size (default "
                   f"{d.min_scale})")
    p.add_argument("--max-shift", type=int, default=d.max_shift,
                   help=f"largest shift of an augmented variant in pixels (default {d.max_shift})")
    p.add_argument("--seed", type=int, default=d.seed, help="augmentation seed (default 0; the split has none)")
    p.add_argument("--per-group", type=int, default=None, help="only the first N emoji of each group (small sets)")
    p.add_argument("--font", default=str(FONT_PATH), help=f"NotoColorEmoji.ttf (default {FONT_PATH})")
    p.add_argument("--emoji-test", default=str(EMOJI_TEST_PATH), help=f"emoji-test.txt (default {EMOJI_TEST_PATH})")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = EmojiSettings(a.size, a.variants, a.heldout_variants, a.heldout_fraction, a.min_scale, a.max_shift,
                             a.seed, a.per_group, a.group_images)
    try:
        summary = write_emoji(a.out, settings, a.font, a.emoji_test, a.overwrite)
    except (EmojiFontMissing, EmojiSourceMissing, FileExistsError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"wrote {summary['emoji']['train']} emoji ({summary['images']['train']} images) to {a.out}/train and "  # noqa: T201
          f"{summary['emoji']['heldout']} ({summary['images']['heldout']} images) to {a.out}/heldout; "
          f"{len(summary['missing_from_font'])} not in the font")


if __name__ == "__main__":
    main()
