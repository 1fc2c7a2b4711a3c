"""Codes <-> images: Encode to Codes, Decode, Random Codes (noise), Noise Codes (variations)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from comfy_api.latest import io

from . import comfy_bridge as bridge
from .common import (
    CATEGORY,
    CodesSocket,
    ModelHandle,
    ModelSocket,
    check_codes,
    check_handle,
    ib,
    image_from_core,
    image_to_core,
    logger,
    seed_input,
)

#: Step of the width/height widgets: a multiple of every VQGAN factor in use (8 for the emoji models, 4 for the
#: shapes models, 16 for the released ones), so every click lands on a size the model takes once at or above its
#: trained size.
SIZE_STEP = 32
SIZE_TIP = ("Image {name} in pixels; 0 = the model's trained size (64 px for the bundled emoji models, 256 for the "
            "released ones). Larger sizes work too, in steps of 32 px (any multiple of the model's VQGAN factor: 8 for "
            "the emoji models, 16 for the released ones): every code is drawn from a trained-size window around it "
            "(sliding windows), e.g. 3x the trained width for a panorama. Sizes below the trained size are refused "
            "with the nearest valid ones; very large sizes get a warning on the node (time grows with the area).")
WIDTH_TIP = SIZE_TIP.format(name="width")
HEIGHT_TIP = SIZE_TIP.format(name="height")


def image_size_inputs() -> list:
    """width, height (0 = the trained size) and batch_size widgets, the same on every node that makes codes."""
    return [
        io.Int.Input("width", default=0, min=0, max=16384, step=SIZE_STEP, tooltip=WIDTH_TIP),
        io.Int.Input("height", default=0, min=0, max=16384, step=SIZE_STEP, tooltip=HEIGHT_TIP),
        io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Number of images."),
    ]
KEEP_SIZE = "keep size (round to multiple of factor)"
FIT_MODES = ["resize to model size", "crop to model size", "crop to multiple of factor", "error", KEEP_SIZE]


def keep_size(h: int, w: int, handle: ModelHandle) -> tuple[int, int]:
    """Pixel size (h, w) -> the nearest size the chain takes at this scale: each side a multiple of the VQGAN
    factor, at least the trained size (a smaller image is first scaled up, keeping its aspect ratio)."""
    th, tw = handle.image_size
    f = handle.factor
    s = max(1.0, th / h, tw / w)  # scale up (uniformly) only when a side is below the trained size
    return max(th, round(h * s / f) * f), max(tw, round(w * s / f) * f)


def fit_image(x: torch.Tensor, handle: ModelHandle, mode: str) -> torch.Tensor:
    """float [B, 3, H, W] -> float [B, 3, H', W'] the VQGAN takes.

    The chain (Sample, Reverse Chain Step, Masked Refine) takes any size of at least the trained size along
    both axes, in multiples of the factor: every mode but 'crop to multiple of factor' guarantees that
    (the latter keeps small images small, for encode/decode round trips).
    """
    h, w = x.shape[-2:]
    th, tw = handle.image_size
    f = handle.factor
    if mode == KEEP_SIZE:
        nh, nw = keep_size(h, w, handle)
        if (nh, nw) == (h, w):
            return x
        logger.info("ImageBART Encode: resized %dx%d px to %dx%d (multiples of %d, at least %dx%d)", w, h, nw, nh,
                    f, tw, th)
        return F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    if mode == "crop to multiple of factor":
        nh, nw = h // f * f, w // f * f
        if nh < f or nw < f:
            raise ValueError(f"image {w}x{h} px is smaller than one code ({f}x{f} px)")
        if (nh, nw) != (h, w):
            logger.info("ImageBART Encode: cropped %dx%d px to %dx%d (a multiple of %d)", w, h, nw, nh, f)
        if nh < th or nw < tw:
            logger.info("ImageBART Encode: %dx%d px is below the model's %dx%d: fine for Decode, but the chain "
                        "nodes need at least the model's size", nw, nh, tw, th)
        top, left = (h - nh) // 2, (w - nw) // 2
        return x[..., top:top + nh, left:left + nw]
    if (h, w) == (th, tw):
        return x
    if mode == "error":
        raise ValueError(f"image is {w}x{h} px but this model works on {tw}x{th} px. Resize it (e.g. ImageScale), "
                         f"or set 'fit' to 'resize to model size', 'crop to model size' or '{KEEP_SIZE}' "
                         "(larger images are sampled with sliding windows).")
    if mode == "resize to model size":
        logger.info("ImageBART Encode: resized %dx%d px to %dx%d", w, h, tw, th)
        return F.interpolate(x, size=(th, tw), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    if mode == "crop to model size":
        s = max(th / h, tw / w)
        rh, rw = max(th, round(h * s)), max(tw, round(w * s))
        x = F.interpolate(x, size=(rh, rw), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        top, left = (rh - th) // 2, (rw - tw) // 2
        logger.info("ImageBART Encode: scaled %dx%d px to %dx%d and center-cropped to %dx%d", w, h, rw, rh, tw, th)
        return x[..., top:top + th, left:left + tw]
    raise ValueError(f"unknown fit mode {mode!r}; choose one of {FIT_MODES}")


def encode(handle: ModelHandle, image: torch.Tensor, fit: str = FIT_MODES[0]) -> ib.Codes:
    """IMAGE [B, H, W, C] -> level-1 codes int64 [B, h, w] (on the CPU)."""
    handle = check_handle(handle)
    x = fit_image(image_to_core(image), handle, fit)
    model = bridge.prepare(handle)
    return model.encode(x).cpu()


def decode(handle: ModelHandle, codes: ib.Codes) -> torch.Tensor:
    """Level-1 codes -> IMAGE float32 [B, H, W, 3]."""
    handle = check_handle(handle)
    check_codes(handle, codes)
    if codes.level != 1:
        raise ValueError(f"Decode needs clean (level-1) codes; these are at level {codes.level}. Run "
                         f"{codes.level - 1} more reverse step(s) first (Reverse Chain Step or Sample); for a "
                         "look at an intermediate level use the 'preview' output of Reverse Chain Step.")
    model = bridge.prepare(handle)
    return image_from_core(model.decode(codes))


def decode_any_level(handle: ModelHandle, codes: ib.Codes) -> torch.Tensor:
    """Codes of any level decoded as if they were clean (how the paper shows intermediate levels)."""
    model = bridge.prepare(handle)
    return image_from_core(model.decode(codes.with_tokens(codes.tokens, 1)))


def grid_for(handle: ModelHandle, width: int, height: int) -> tuple[int, int]:
    """Pixel size (0 = the model's) -> token grid (h, w). Any multiple of the VQGAN factor of at least the
    trained size works (larger sizes are sampled with sliding windows); otherwise an error naming the sizes."""
    th, tw = handle.image_size
    f = handle.factor
    size = {"width": int(width) or tw, "height": int(height) or th}
    for name, value, trained in (("width", size["width"], tw), ("height", size["height"], th)):
        if value % f:
            near = " or ".join(str(v) for v in sorted({max(trained, value // f * f), max(trained, value // f * f + f)}))
            raise ValueError(f"{name} {value} px is not a multiple of this model's VQGAN factor {f}: use {near} "
                             f"(or 0 for the trained size, {trained} px)")
        if value < trained:
            raise ValueError(f"{name} {value} px is smaller than this model's trained {name} {trained} px; ImageBART "
                             f"generates at its trained size ({tw}x{th} px) or larger (sliding windows). Use "
                             f"{trained} or more, in steps of {f} (0 = the trained size)")
    return size["height"] // f, size["width"] // f


#: A request whose estimated time is above this many seconds gets a warning on the node.
SLOW_SECONDS = 120.0


def _load_device(handle: ModelHandle):
    patcher_device = getattr(handle.patcher, "load_device", None)
    return patcher_device if patcher_device is not None else next(handle.model.parameters()).device


def chain_estimate(handle: ModelHandle, grid: tuple[int, int], batch: int) -> ib.RequestEstimate:
    """The library's memory and time estimate (``ib.estimate_request``) for the whole chain at this grid and
    batch on the device the model runs on."""
    return ib.estimate_request(handle.model, grid=tuple(grid), batch=int(batch), device=_load_device(handle),
                               dtype=handle.dtype)


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def slow_size_warning(handle: ModelHandle, grid: tuple[int, int], batch: int, estimate) -> str | None:
    """The warning for a request whose ``estimate`` (an ``ib.RequestEstimate``: ``seconds``, ``describe()``)
    is above SLOW_SECONDS, or None."""
    seconds = float(estimate.seconds)
    if seconds <= SLOW_SECONDS:
        return None
    f = handle.factor
    th, tw = handle.image_size
    return (f"{grid[1] * f}x{grid[0] * f} px, batch {batch} will take about {_duration(seconds)} for the whole "
            f"chain on this device ({estimate.describe()}). Cancel and choose a smaller size (trained: {tw}x{th} "
            "px) if that is not what you want.")


def size_warnings(handle: ModelHandle, grid: tuple[int, int], batch: int) -> list[str]:
    """Warnings for the UI about a requested size (see :func:`slow_size_warning`)."""
    warning = slow_size_warning(handle, grid, batch, chain_estimate(handle, grid, batch))
    return [warning] if warning else []


def random_codes(handle: ModelHandle, width: int, height: int, batch: int, seed: int) -> ib.Codes:
    """Uniform noise codes at the top level T (the start of the chain)."""
    handle = check_handle(handle)
    grid = grid_for(handle, width, height)
    return handle.model.random_codes(int(batch), grid=grid, seed=int(seed)).cpu()


def noise_codes(handle: ModelHandle, codes: ib.Codes, level: int, seed: int) -> ib.Codes:
    """Forward-noise codes to ``level`` (2 = slight change ... T = pure noise)."""
    handle = check_handle(handle)
    return handle.model.noise(codes, int(level), seed=int(seed)).cpu()  # the core checks the codes and level


class ImageBARTEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageBARTEncode", display_name="ImageBART Encode to Codes", category=CATEGORY,
            description="Encodes images with the model's VQGAN into clean (level-1) codes, the starting point for "
                        "editing, inpainting and variations.",
            inputs=[
                ModelSocket.Input("model", tooltip="The ImageBART model (its VQGAN encodes)."),
                io.Image.Input("image", tooltip="Images to encode (a batch is encoded item by item)."),
                io.Combo.Input("fit", options=FIT_MODES, default=FIT_MODES[0],
                               tooltip="What to do when the image is not the model's size: stretch to it; scale "
                                       "and center-crop to it; crop to a multiple of the VQGAN factor (an image "
                                       "smaller than the model's size then only round-trips through Decode); stop "
                                       "with an error; or keep the image's own size (each side resized to the "
                                       "nearest multiple of the factor, at least the model's size; larger images "
                                       "are sampled and refined with sliding windows)."),
            ],
            outputs=[CodesSocket.Output(display_name="codes",
                                        tooltip="Level-1 (clean) codes of the images: a grid of the fitted image's "
                                                "size / the VQGAN factor (e.g. 8x8 for 64x64 px with factor 8).")],
        )

    @classmethod
    def execute(cls, model, image, fit=FIT_MODES[0]) -> io.NodeOutput:
        return io.NodeOutput(encode(model, image, fit))


class ImageBARTDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageBARTDecode", display_name="ImageBART Decode", category=CATEGORY,
            description="Decodes clean (level-1) codes into images with the model's VQGAN (always in fp32).",
            inputs=[ModelSocket.Input("model", tooltip="The model whose VQGAN made the codes."),
                    CodesSocket.Input("codes", tooltip="Level-1 codes (from Sample, the last Reverse Chain Step, "
                                                       "Masked Refine or Encode).")],
            outputs=[io.Image.Output(display_name="image",
                                     tooltip="Decoded images, at the codes' size: their grid x the VQGAN factor (the "
                                             "trained size, e.g. 64x64 px for the emoji models, unless the codes come "
                                             "from a larger sample or a 'keep size' encode).")],
        )

    @classmethod
    def execute(cls, model, codes) -> io.NodeOutput:
        return io.NodeOutput(decode(model, codes))


class ImageBARTRandomCodes(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageBARTRandomCodes", display_name="ImageBART Random Codes", category=CATEGORY,
            description="Pure noise: uniformly random codes at the top level of the chain, where sampling starts. "
                        "Feed them to Reverse Chain Step nodes.",
            inputs=[
                ModelSocket.Input("model", tooltip="The ImageBART model."),
                *image_size_inputs(),
                seed_input(),
            ],
            outputs=[CodesSocket.Output(display_name="codes", tooltip="Noise codes at the top level T.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, width, height, batch_size, seed) -> io.NodeOutput:
        codes = random_codes(model, width, height, batch_size, seed)
        bridge.report_warnings(cls.hidden.unique_id, size_warnings(model, codes.grid, codes.batch_size))
        return io.NodeOutput(codes)


class ImageBARTNoiseCodes(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageBARTNoiseCodes", display_name="ImageBART Noise Codes", category=CATEGORY,
            description="Runs the forward (noising) process: clean codes -> codes at a higher level. Running the "
                        "reverse chain from there gives variations of the image; higher levels change more.",
            inputs=[
                ModelSocket.Input("model", tooltip="The ImageBART model."),
                CodesSocket.Input("codes", tooltip="Codes to noise (usually level 1, from Encode)."),
                io.Int.Input("level", default=2, min=1, max=64,
                             tooltip="Target level: 2 = lightly noised ... n_scales + 1 = pure noise. Must not "
                                     "be below the codes' level nor above the model's top level."),
                seed_input(),
            ],
            outputs=[CodesSocket.Output(display_name="codes", tooltip="Codes at the chosen level.")],
        )

    @classmethod
    def execute(cls, model, codes, level, seed) -> io.NodeOutput:
        return io.NodeOutput(noise_codes(model, codes, level, seed))
