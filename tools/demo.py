"""``python -m tools.demo``: what ImageBART does, as PNGs, in seconds on a CPU.

With the bundled colour-emoji models (``models/`` beside this package: ``imagebart-emoji-class.safetensors``,
conditioned on the nine Unicode emoji groups, and ``imagebart-emoji-text.safetensors``, conditioned on the
emoji's names; 64x64 px, trained by ``python -m training.emoji_recipe`` on the Noto Color Emoji font) it
writes into ``--out``:

* ``groups.png``: samples per emoji group (one row per group, class model, classifier-free guidance);
* ``prompts.png``: samples per prompt (one row per prompt, text model);
* ``upper_half.png``: a face emoji, its lower half kept, the upper half completed four times;
* ``inpainting.png``: a free-form painted area (white in the mask) regenerated four times;
* ``class_edit.png`` / ``text_edit.png``: the left half of the face regenerated under a group / a prompt;
* ``variations.png``: the face noised to level 2 and brought back by the reverse chain, four times;
* ``panorama.png``: pictures three times the trained width whose prompt blends from left to right;
* ``demo_grid.png``: one small labelled grid of the above (the picture at the top of README's Demo section).

The input pictures are the example images of the workflows (``workflows/inputs/imagebart_emoji_*.png``,
rendered from the font by ``scripts/make_example_inputs.py``). Every seed, prompt and guidance is in
:class:`EmojiShowcase`, so the pictures are reproducible.

Without the emoji models it runs the older, smaller pipeline: on the bundled shapes models
(``imagebart-demo-shapes-*.safetensors``, ``python -m training.demo_recipe``) if present, on ``--model FILE``, or
on a tiny **random-weight** model, which exercises everything but draws structured noise, and says so.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from imagebart_core.checkpoint import load_model
from imagebart_core.conditioning import ConditionBlend
from imagebart_core.config import tiny_config
from imagebart_core.model import ImageBART, upper_half_mask

log = logging.getLogger("imagebart.demo")

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_MODELS = REPO_ROOT / "models"
EXAMPLE_INPUTS = REPO_ROOT / "workflows" / "inputs"
CLASS_MODEL = "imagebart-emoji-class.safetensors"
TEXT_MODEL = "imagebart-emoji-text.safetensors"
SHAPES_CLASS_MODEL = "imagebart-demo-shapes-class.safetensors"
SHAPES_TEXT_MODEL = "imagebart-demo-shapes-text.safetensors"
FACE = "imagebart_emoji_face.png"
FACE_LEFT_MASKED = "imagebart_emoji_face_left_masked.png"
MASKED = "imagebart_emoji_masked.png"


@dataclass(frozen=True)
class EmojiShowcase:
    """What the emoji demo draws and how (conditions, guidance, seeds; batch item i uses seed + i)."""

    group_guidance: float = 5.0  # README's group-classifier share is measured at this (the recipe's class_guidance)
    group_seed: int = 0
    # emoji names whose colours the text model follows most visibly (chosen from 20 candidates by looking)
    prompts: tuple[str, ...] = ("grinning cat", "red apple", "blue heart", "cloud", "flag: Sweden", "evergreen tree")
    # README's caption retrieval is measured at these (the recipe's text_guidance and text_top_k)
    prompt_guidance: float = 2.0
    prompt_top_k: int | None = 4
    prompt_seed: int = 100
    upper_half_class: str | None = "smileys-emotion"  # None: unconditional
    upper_half_guidance: float = 2.0
    upper_half_seed: int = 11
    inpaint_seed: int = 3
    edit_class: str = "flags"  # the most distinctive group (wide striped rectangles); animals-nature was tried
    class_edit_guidance: float = 3.0
    class_edit_seed: int = 1
    # chosen from 8 candidates by looking (seed 9 fixed before): "blue heart", "red heart", "globe showing americas",
    # "evergreen tree", "green apple", "red apple" and "snowflake" mostly kept the face yellow or only reddened it
    edit_prompt: str = "flag: Sweden"
    text_edit_guidance: float = 5.0
    text_edit_seed: int = 9
    variation_level: int = 2
    variation_seed: int = 21
    panorama_prompts: tuple[str, str] = ("red apple", "globe showing americas")
    panorama_guidance: float = 3.0
    panorama_seed: int = 17


SHOWCASE = EmojiShowcase()


# -- pictures -------------------------------------------------------------------------------------------------
def _to_pil(image: torch.Tensor):
    """float [3, H, W] in 0..1 -> PIL RGB."""
    from PIL import Image

    array = (image.detach().float().cpu().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array)


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
    image = _to_pil(grid)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _label_font(size: int = 11):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def save_labelled_rows(rows: list[tuple[str, torch.Tensor]], path: Path, scale: int = 1, label_width: int = 110,
                       pad: int = 2) -> Path:
    """One PNG: a row per ``(label, images float [B, 3, H, W] in 0..1)``, the label on the left, the images side
    by side (rows may hold different counts and widths); ``scale`` x nearest-neighbour enlargement of the
    images. Labels are drawn with Pillow's default font (no font file needed)."""
    from PIL import Image, ImageDraw

    font = _label_font()
    widths = [sum(int(im.shape[-1]) * scale + pad for im in images) + pad for _, images in rows]
    heights = [max(int(im.shape[-2]) for im in images) * scale + pad for _, images in rows]
    canvas = Image.new("RGB", (label_width + max(widths), sum(heights) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = pad
    for (label, images), height in zip(rows, heights):
        lines = _wrap(label, draw, font, label_width - 6)
        line_h = 13
        ty = y + max(0, (height - pad - line_h * len(lines)) // 2)
        for k, line in enumerate(lines):
            draw.text((3, ty + k * line_h), line, fill=(40, 40, 40), font=font)
        x = label_width
        for im in images:
            tile = _to_pil(im)
            if scale > 1:
                tile = tile.resize((tile.width * scale, tile.height * scale), Image.NEAREST)
            canvas.paste(tile, (x, y))
            x += tile.width + pad
        y += height
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=True)
    return path


def save_captioned_grid(rows: list[tuple[str, list[tuple[str, torch.Tensor]]]], path: Path, label_width: int = 74,
                        pad: int = 4, caption_lines: int = 2) -> Path:
    """One PNG: a row per ``(title, [(caption, image float [3, H, W] in 0..1), ...])``, the title on the left, each
    image with its caption above it (tiles may differ in width, e.g. a panorama). Pillow's default font."""
    from PIL import Image, ImageDraw

    font = _label_font(10)
    line_h = 11
    cap_h = caption_lines * line_h + 1
    widths = [sum(int(im.shape[-1]) + pad for _, im in tiles) + pad for _, tiles in rows]
    heights = [cap_h + max(int(im.shape[-2]) for _, im in tiles) + pad for _, tiles in rows]
    canvas = Image.new("RGB", (label_width + max(widths), sum(heights) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = pad
    for (title, tiles), height in zip(rows, heights):
        lines = _wrap(title, draw, font, label_width - 6)
        ty = y + max(0, (height - line_h * len(lines)) // 2)
        for k, line in enumerate(lines):
            draw.text((3, ty + k * line_h), line, fill=(20, 20, 20), font=font)
        x = label_width
        for caption, im in tiles:
            for k, line in enumerate(_wrap(caption, draw, font, int(im.shape[-1]) + pad)[:caption_lines]):
                draw.text((x, y + k * line_h), line, fill=(70, 70, 70), font=font)
            canvas.paste(_to_pil(im), (x, y + cap_h))
            x += int(im.shape[-1]) + pad
        y += height
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=True)
    return path


def _wrap(text: str, draw, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + ([line] if line else [])


def blob_mask(batch: int, h: int, w: int) -> torch.Tensor:
    """A free-form mask float [B, H, W] (1 = regenerate): an ellipse joined to a stroke, as if hand-drawn."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    ellipse = ((yy - h * 0.42) / (h * 0.2)) ** 2 + ((xx - w * 0.38) / (w * 0.24)) ** 2 <= 1.0
    stroke = (torch.abs((yy - h * 0.3) - 0.6 * (xx - w * 0.4)) < h * 0.07) & (xx > w * 0.35) & (xx < w * 0.85)
    return (ellipse | stroke).float().expand(batch, h, w).clone()


def _mask_rgb(mask: torch.Tensor) -> torch.Tensor:
    return mask[:, None].expand(-1, 3, -1, -1)


def shade(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """images [B, 3, H, W], mask [B|1, H, W] (1 = regenerate) -> the images with the masked area greyed out
    (how the input looks to the model: that area is unknown)."""
    m = mask[:, None].to(images.dtype)
    return images * (1 - m) + 0.55 * m


def load_example(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """An example picture of ``workflows/inputs`` -> (image float [1, 3, H, W] in 0..1, mask float [1, H, W],
    1 = regenerate where the PNG is transparent, as ComfyUI's Load Image reads it)."""
    import numpy as np
    from PIL import Image

    path = EXAMPLE_INPUTS / name
    if not path.is_file():
        raise FileNotFoundError(f"the demo's input picture {path} is missing; write it with "
                                "python3 scripts/make_example_inputs.py")
    with Image.open(path) as im:
        rgba = np.asarray(im.convert("RGBA")).astype(np.float32) / 255.0
    image = torch.from_numpy(rgba[..., :3]).permute(2, 0, 1)[None].contiguous()
    return image, 1.0 - torch.from_numpy(rgba[..., 3])[None]


class _Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


def _random_model() -> ImageBART:
    torch.manual_seed(0)
    return ImageBART(tiny_config(n_scales=3, grid=(8, 8), vocab_size=64, n_embed=96)).eval()


def emoji_models_present(folder: Path = BUNDLED_MODELS) -> bool:
    return (folder / CLASS_MODEL).is_file() and (folder / TEXT_MODEL).is_file()


# -- the emoji showcase ---------------------------------------------------------------------------------------
def run_emoji(out: Path, class_model: ImageBART, text_model: ImageBART, batch: int = 4,
              show: EmojiShowcase = SHOWCASE) -> list[str]:
    """Write the emoji demo PNGs (module docstring) into ``out``; returns the printed summary lines."""
    cfg = class_model.config
    lines = [f"models: {CLASS_MODEL} and {TEXT_MODEL} in {BUNDLED_MODELS} (colour emoji, Noto Color Emoji font)",
             f"chain: {cfg.n_scales} scales (T = {cfg.num_levels}), grid {cfg.grid[0]}x{cfg.grid[1]}, "
             f"K = {cfg.vocab_size}, {cfg.grid[0] * cfg.vqgan.factor}x{cfg.grid[1] * cfg.vqgan.factor} px"]
    grid_rows: list[tuple[str, list[tuple[str, torch.Tensor]]]] = []

    # 1. samples per group: one row per group
    groups = list(cfg.conditioning.class_names)
    with _Timer() as t:
        cond = class_model.class_condition([g for g in groups for _ in range(batch)])
        by_group = class_model.decode(class_model.sample(len(groups) * batch, cond=cond, seed=show.group_seed,
                                                         guidance=show.group_guidance))
    rows = [(g, by_group[i * batch:(i + 1) * batch]) for i, g in enumerate(groups)]
    path = save_labelled_rows(rows, out / "groups.png", scale=2, label_width=130)
    lines.append(f"samples per group: {path} ({batch} per group, guidance {show.group_guidance}, seed "
                 f"{show.group_seed}; {t.seconds:.1f} s)")
    grid_rows.append(("samples by group", [(g.split("-")[0], by_group[i * batch]) for i, g in enumerate(groups)]))

    # 2. samples per prompt: one row per prompt
    prompts = list(show.prompts)
    with _Timer() as t:
        cond = text_model.text_condition([p for p in prompts for _ in range(batch)])
        by_prompt = text_model.decode(text_model.sample(len(prompts) * batch, cond=cond, seed=show.prompt_seed,
                                                        guidance=show.prompt_guidance, top_k=show.prompt_top_k))
    rows = [(f'"{p}"', by_prompt[i * batch:(i + 1) * batch]) for i, p in enumerate(prompts)]
    path = save_labelled_rows(rows, out / "prompts.png", scale=2, label_width=130)
    lines.append(f"samples per prompt: {path} ({batch} per prompt, guidance {show.prompt_guidance}, top-k "
                 f"{show.prompt_top_k}, seed "
                 f"{show.prompt_seed}; {t.seconds:.1f} s)")
    grid_rows.append(("samples by prompt", [(f'"{p}"', by_prompt[i * batch]) for i, p in enumerate(prompts)]))

    face, _ = load_example(FACE)
    h, w = face.shape[-2:]
    faces = face.expand(batch, -1, -1, -1)
    face_codes = class_model.encode(faces)
    edits: list[tuple[str, torch.Tensor]] = []

    # 3. upper-half completion of the face
    with _Timer() as t:
        top = upper_half_mask(batch, h, w)
        cond = class_model.class_condition([show.upper_half_class] * batch) if show.upper_half_class else None
        completed = class_model.decode(class_model.masked_refine(
            face_codes, top, cond=cond, seed=show.upper_half_seed,
            guidance=show.upper_half_guidance if cond is not None else 1.0))
    under = f" under '{show.upper_half_class}'" if show.upper_half_class else ""
    path = save_labelled_rows([("input", face), ("upper half unknown", shade(face, top[:1])),
                               (f"completed{under}", completed)], out / "upper_half.png", scale=2)
    lines.append(f"upper-half completion: {path} (the lower half's codes kept, the upper half drawn{under}, seed "
                 f"{show.upper_half_seed}; {t.seconds:.1f} s)")
    edits += [("upper half unknown", shade(face, top[:1])[0]), ("completed", completed[0])]

    # 4. free-form inpainting (the painted area of the example picture)
    painted, blob = load_example(MASKED)
    with _Timer() as t:
        codes = class_model.encode(painted.expand(batch, -1, -1, -1))
        inpainted = class_model.decode(class_model.masked_refine(codes, blob, seed=show.inpaint_seed))
    path = save_labelled_rows([("input", painted), ("painted area unknown", shade(painted, blob)),
                               ("inpainted", inpainted)], out / "inpainting.png", scale=2)
    lines.append(f"free-form inpainting: {path} (unconditional, seed {show.inpaint_seed}; {t.seconds:.1f} s)")
    edits += [("painted area unknown", shade(painted, blob)[0]), ("inpainted", inpainted[0])]

    # 5. class- and 6. text-guided local edits of the face's left half
    _, left = load_example(FACE_LEFT_MASKED)
    with _Timer() as t:
        cond = class_model.class_condition([show.edit_class] * batch)
        class_edit = class_model.decode(class_model.masked_refine(face_codes, left, cond=cond,
                                                                  seed=show.class_edit_seed,
                                                                  guidance=show.class_edit_guidance))
    path = save_labelled_rows([("input, left half unknown", shade(face, left)),
                               (f"left half as '{show.edit_class}'", class_edit)], out / "class_edit.png", scale=2)
    lines.append(f"class-guided edit: {path} (left half under group '{show.edit_class}', guidance "
                 f"{show.class_edit_guidance}, seed {show.class_edit_seed}; {t.seconds:.1f} s)")
    with _Timer() as t:
        text_codes = text_model.encode(faces)
        cond = text_model.text_condition([show.edit_prompt] * batch)
        text_edit = text_model.decode(text_model.masked_refine(text_codes, left, cond=cond, seed=show.text_edit_seed,
                                                               guidance=show.text_edit_guidance))
    path = save_labelled_rows([("input, left half unknown", shade(face, left)),
                               (f'left half as "{show.edit_prompt}"', text_edit)], out / "text_edit.png", scale=2)
    lines.append(f"text-guided edit: {path} (left half under \"{show.edit_prompt}\", guidance "
                 f"{show.text_edit_guidance}, seed {show.text_edit_seed}; {t.seconds:.1f} s)")
    edits += [("left half unknown", shade(face, left)[0]), (f'"{show.edit_prompt}"', text_edit[0]),
              (show.edit_class, class_edit[0])]

    # 7. variations: noise the face's codes to a middle level, run the chain back down
    with _Timer() as t:
        noised = class_model.noise(face_codes, level=show.variation_level, seed=show.variation_seed)
        varied = class_model.decode(class_model.reverse_step(noised, steps=show.variation_level - 1,
                                                             seed=show.variation_seed))
    path = save_labelled_rows([("input", face), (f"variations (level {show.variation_level})", varied)],
                              out / "variations.png", scale=2)
    lines.append(f"variations: {path} (noised to level {show.variation_level} of {cfg.num_levels}, seed "
                 f"{show.variation_seed}; {t.seconds:.1f} s)")
    edits.append(("a variation", varied[0]))

    # 8. a panorama three times the trained width, one prompt blending into another (sliding windows)
    first, second = show.panorama_prompts
    with _Timer() as t:
        gh, gw = text_model.config.grid
        blend = ConditionBlend([text_model.text_condition([first]), text_model.text_condition([second])])
        wide = text_model.decode(text_model.sample(2, cond=blend, grid=(gh, 3 * gw), seed=show.panorama_seed,
                                                   guidance=show.panorama_guidance))
    path = save_labelled_rows([(f'"{first}" -> "{second}"', wide[i:i + 1]) for i in range(2)],
                              out / "panorama.png", scale=2)
    lines.append(f"panorama: {path} ({wide.shape[-1]}x{wide.shape[-2]} px = 3x the trained width, \"{first}\" on "
                 f"the left blending into \"{second}\" on the right, seed {show.panorama_seed}; {t.seconds:.1f} s)")

    grid_rows.append(("completion and editing", edits))
    grid_rows.append((f'3x wide: "{first}" left, "{second}" right',
                      [(f"seed {show.panorama_seed + i}", wide[i]) for i in range(wide.shape[0])]))
    path = save_captioned_grid(grid_rows, out / "demo_grid.png")
    lines.append(f"overview: {path}")
    return lines


# -- the generic pipeline (shapes models, --model FILE, or random weights) ------------------------------------
def run_generic(out: Path, model: ImageBART, text_model: ImageBART | None, batch: int = 4, seed: int = 0,
                guidance: float = 2.0) -> list[str]:
    """Samples, inpainting and upper-half completion on ``model`` (+ a text edit and a panorama on
    ``text_model``), the pictures the shapes demo models were made for."""
    cfg = model.config
    lines = [f"chain: {cfg.n_scales} scales (T = {cfg.num_levels}), grid {cfg.grid[0]}x{cfg.grid[1]}, "
             f"K = {cfg.vocab_size}, conditioning = {cfg.conditioning.kind}"]

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


def run(out: Path, model_path: str | None = None, batch: int = 4, seed: int = 0, guidance: float | None = None,
        models: Path = BUNDLED_MODELS) -> list[str]:
    """Write the demo PNGs into ``out``; returns the printed summary lines. ``models``: the folder searched for
    the bundled models (the emoji pair first, then the shapes pair)."""
    out = Path(out)
    if model_path is None and emoji_models_present(models):
        return run_emoji(out, load_model(models / CLASS_MODEL), load_model(models / TEXT_MODEL), batch)
    guidance = 2.0 if guidance is None else guidance
    class_file, text_file = models / SHAPES_CLASS_MODEL, models / SHAPES_TEXT_MODEL
    if model_path:
        model, text_model = load_model(model_path), None
        lines = [f"model: {model_path}"]
    elif class_file.is_file():
        model = load_model(class_file)
        text_model = load_model(text_file) if text_file.is_file() else None
        lines = [f"models: bundled demo models in {models} ({SHAPES_CLASS_MODEL}"
                 f"{', ' + SHAPES_TEXT_MODEL if text_model else ''}), trained on procedural coloured shapes "
                 f"(the emoji models {CLASS_MODEL}, {TEXT_MODEL} are not there)"]
    else:
        model, text_model = _random_model(), None
        lines = ["model: a tiny RANDOM-WEIGHT model (no trained model installed): the pictures are structured noise"]
    return lines + run_generic(out, model, text_model, batch, seed, guidance)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_out", help="output folder for the PNGs (default: demo_out)")
    parser.add_argument("--model", default=None, help="a native .safetensors model file (default: bundled models)")
    parser.add_argument("--models", default=str(BUNDLED_MODELS),
                        help=f"folder with the bundled models (default: {BUNDLED_MODELS})")
    parser.add_argument("--batch", type=int, default=4, help="images per row (default 4)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the generic pipeline (item i uses seed + i); the emoji showcase uses the "
                        "fixed seeds of tools.demo.EmojiShowcase")
    parser.add_argument("--guidance", type=float, default=None,
                        help="classifier-free guidance of the generic pipeline's conditional rows (default 2); the "
                        "emoji showcase uses its own per-picture values")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f"--batch must be at least 1, got {args.batch}")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    with torch.inference_mode():
        lines = run(Path(args.out), args.model, args.batch, args.seed, args.guidance, Path(args.models))
    lines.append(f"total: {time.perf_counter() - t0:.1f} s ({torch.get_num_threads()} threads)")
    for line in lines:
        print(line)  # noqa: T201 - the command's summary
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
