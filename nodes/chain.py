"""The reverse chain: Reverse Chain Step (one node per transition), Sample (all of it), Masked Refine."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from comfy_api.latest import io

from . import comfy_bridge as bridge
from .codes import decode_any_level, grid_for, image_size_inputs, size_warnings
from .common import (
    CATEGORY,
    CodesSocket,
    ModelHandle,
    ModelSocket,
    check_codes,
    check_handle,
    cond_batch,
    cond_input,
    filter_settings,
    fit_batches,
    ib,
    image_from_core,
    image_to_core,
    resize_mask,
    sampling_inputs,
    seed_input,
    stride_arg,
    window_stride_input,
)

PER_SCALE_TIP = ("Per-scale overrides of {name} as 'scale:value' pairs, e.g. '1:0.9, 3:1.1'. Scale 1 is the last "
                 "(finest) step, scale n_scales the first one from noise. Empty = the value above for every scale.")


def reverse_step(handle: ModelHandle, codes: ib.Codes, steps: int, seed: int, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, guidance: float = 1.0, condition=None, preview: bool = True,
                 window_stride: int = 0):
    """codes at level t -> (codes at level t - steps, progress callback). Codes of any grid of at least the
    trained size (larger ones use sliding windows, moved by ``window_stride`` codes; 0 = automatic)."""
    handle = check_handle(handle)
    check_codes(handle, codes)
    if condition is not None and cond_batch(condition) not in (1, codes.batch_size):
        raise ValueError(f"batch mismatch: the codes have {codes.batch_size} items but the condition has "
                         f"{cond_batch(condition)}; give 1 or {codes.batch_size} conditions")
    temps, ks, ps = filter_settings(handle, temperature, top_k, top_p)
    model = bridge.prepare(handle)
    progress = bridge.ChainProgress(model, preview)
    out = model.reverse_step(codes, condition, steps=int(steps), temperature=temps, top_k=ks, top_p=ps,
                             seed=int(seed), guidance=float(guidance), callback=progress,
                             window_stride=stride_arg(window_stride))
    return out.cpu(), progress


def sample(handle: ModelHandle, width: int, height: int, batch_size: int, seed: int, temperature: float = 1.0,
           top_k: int = 0, top_p: float = 1.0, guidance: float = 1.0, temperature_per_scale: str = "",
           top_k_per_scale: str = "", top_p_per_scale: str = "", condition=None, preview: bool = True,
           window_stride: int = 0):
    """The whole chain from noise -> (level-1 codes, progress callback). Equals Random Codes + steps.

    width/height: pixels, 0 = the trained size; larger sizes (multiples of the factor) use sliding windows."""
    handle = check_handle(handle)
    grid = grid_for(handle, width, height)
    temps, ks, ps = filter_settings(handle, temperature, top_k, top_p, temperature_per_scale, top_k_per_scale,
                                    top_p_per_scale)
    if condition is not None:
        batch_size = fit_batches("batch_size", int(batch_size), "condition", cond_batch(condition))
    model = bridge.prepare(handle)
    progress = bridge.ChainProgress(model, preview)
    out = model.sample(int(batch_size), condition, grid=grid, seed=int(seed), temperature=temps, top_k=ks,
                       top_p=ps, guidance=float(guidance), callback=progress,
                       window_stride=stride_arg(window_stride))
    return out.cpu(), progress


def masked_refine(handle: ModelHandle, codes: ib.Codes, mask: torch.Tensor, seed: int, start_level: int = 0,
                  passes: int = 0, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  guidance: float = 1.0, condition=None, composite: bool = False, image: torch.Tensor | None = None,
                  window_stride: int = 0):
    """Regenerate the masked part of level-1 codes -> (codes, IMAGE [B, H, W, 3], progress).

    codes: any grid of at least the trained size (larger ones use sliding windows, see ``window_stride``).
    mask: MASK [B|1, H, W] of any size, 1 = regenerate; passed through (the core's ``token_mask`` says which tokens
    it regenerates); one image with several masks gives one result per mask. With ``composite`` the
    original ``image`` pixels (stretched to the encoded size) are pasted back outside the mask after decoding.
    """
    handle = check_handle(handle)
    check_codes(handle, codes)  # read below before the core runs; the core checks the level, grid and mask
    codes = codes_per_mask(codes, mask)
    b = codes.batch_size
    if condition is not None:
        fit_batches("image", b, "condition", cond_batch(condition))
    if composite and image is None:
        raise ValueError("composite is on but no original image is connected: connect the image you encoded to "
                         "'image', or turn composite off")
    n = handle.model.n_scales
    start = int(start_level) or handle.model.num_levels  # 0 = the top level; the core checks the range
    temps, ks, ps = filter_settings(handle, temperature, top_k, top_p)
    model = bridge.prepare(handle)
    progress = bridge.ChainProgress(model)
    out = model.masked_refine(codes, mask, condition, start_level=start, passes=[int(passes)] * n if passes else None,
                              seed=int(seed), temperature=temps, top_k=ks, top_p=ps, guidance=float(guidance),
                              callback=progress, window_stride=stride_arg(window_stride)).cpu()
    decoded = model.decode(out)  # [B, 3, h*f, w*f]: the encoded size
    if composite:
        decoded = composite_onto(decoded, image, mask)  # [B, 3, H, W]: the original image's size
    return out, image_from_core(decoded), progress


def composite_onto(decoded: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Paste a refined result into the original image, at the original's size.

    decoded: float [B, 3, h, w] (the encoded size); image: IMAGE [B|1, H, W, C]; mask: MASK [B|1, H', W'] (any
    size, 1 = regenerated). Returns float [B, 3, H, W]: the decoded pixels stretched to H x W where the mask (at
    H x W) is 1, the original pixels where it is 0, blended in between."""
    original = image_to_core(image).to(decoded.device)  # [Bo, 3, H, W]
    b = fit_batches("image", decoded.shape[0], "original image", original.shape[0])
    size = tuple(original.shape[-2:])
    if tuple(decoded.shape[-2:]) != size:
        decoded = F.interpolate(decoded, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
    keep = resize_mask(mask, size).to(decoded.device)  # [Bm, H, W], 1 = regenerated
    keep = keep.expand(b, *size) if keep.shape[0] == 1 else keep
    return keep[:, None] * decoded + (1 - keep[:, None]) * original  # a single original broadcasts over the batch


def codes_per_mask(codes: ib.Codes, mask: torch.Tensor) -> ib.Codes:
    """One image with a batch of masks: the image's codes repeated once per mask (a node convenience the core does
    not offer); otherwise ``codes`` unchanged. A batch that fits neither is refused, naming both counts."""
    n_masks = mask.shape[0] if torch.is_tensor(mask) and mask.ndim >= 3 else 1
    b = codes.batch_size
    if n_masks == b or n_masks == 1:
        return codes
    if b == 1:
        return codes.with_tokens(codes.tokens.expand(n_masks, *codes.grid).contiguous())
    raise ValueError(f"batch mismatch: the image has {b} items but the mask has {n_masks}; give one mask for all "
                     "or one mask per image")


def mask_warnings(handle: ModelHandle, codes: ib.Codes, mask: torch.Tensor) -> list[str]:
    """What the UI must say about a mask Masked Refine accepted: nothing to regenerate (for all or some items)."""
    regen = handle.model.token_mask(mask, codes_per_mask(codes, mask))  # [B, h, w] bool, the core's rule
    empty = [i for i in range(regen.shape[0]) if not bool(regen[i].any())]
    if not empty:
        return []
    which = "the mask is empty" if len(empty) == regen.shape[0] else \
        f"the mask of item(s) {', '.join(str(i + 1) for i in empty)} is empty"
    return [f"{which} (no pixel >= 0.5 at the encoded size), so nothing is regenerated there. Paint the area to "
            "change: white in a mask, or transparent in Load Image's mask editor."]


class ImageBARTReverseStep(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageBARTReverseStep", display_name="ImageBART Reverse Chain Step", category=CATEGORY,
            description="One (or more) transitions of the reverse chain: codes at level t -> level t - steps, drawn "
                        "token by token by that scale's transformer. Chain one node per transition to watch and "
                        "steer each level; the preview output shows the new level decoded as if it were clean.",
            inputs=[
                ModelSocket.Input("model", tooltip="The ImageBART model."),
                CodesSocket.Input("codes", tooltip="Codes at level t (Random Codes, Noise Codes or a previous step)."),
                io.Int.Input("steps", default=1, min=1, max=64, tooltip="Transitions to run (1 = one level down)."),
                seed_input(),
                *sampling_inputs(),
                cond_input(),
                window_stride_input(),
            ],
            outputs=[
                CodesSocket.Output(display_name="codes", tooltip="Codes at level t - steps."),
                io.Image.Output(display_name="preview", tooltip="The new level decoded as if it were clean "
                                                                "(exact only at level 1), at the codes' size: "
                                                                "their grid x the VQGAN factor."),
            ],
        )

    @classmethod
    def execute(cls, model, codes, steps, seed, temperature, top_k, top_p, guidance, condition=None,
                window_stride=0):
        out, _ = reverse_step(model, codes, steps, seed, temperature, top_k, top_p, guidance, condition,
                              window_stride=window_stride)
        return io.NodeOutput(out, decode_any_level(model, out))


class ImageBARTSample(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageBARTSample", display_name="ImageBART Sample", category=CATEGORY,
            description="The whole reverse chain in one node: noise -> level-1 codes, scale by scale (the bar counts "
                        "scales x tokens; each finished level is previewed). Same seed, same images.",
            inputs=[
                ModelSocket.Input("model", tooltip="The ImageBART model."),
                *image_size_inputs(),
                seed_input(),
                *sampling_inputs(),
                io.String.Input("temperature_per_scale", default="", tooltip=PER_SCALE_TIP.format(name="temperature")),
                io.String.Input("top_k_per_scale", default="", tooltip=PER_SCALE_TIP.format(name="top_k (0 = off)")),
                io.String.Input("top_p_per_scale", default="", tooltip=PER_SCALE_TIP.format(name="top_p (1.0 = off)")),
                cond_input(),
                window_stride_input(),
            ],
            outputs=[CodesSocket.Output(display_name="codes", tooltip="Level-1 codes; connect to Decode.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, width, height, batch_size, seed, temperature, top_k, top_p, guidance,
                temperature_per_scale="", top_k_per_scale="", top_p_per_scale="", condition=None, window_stride=0):
        grid = grid_for(check_handle(model), width, height)
        bridge.report_warnings(cls.hidden.unique_id, size_warnings(model, grid, int(batch_size)))
        out, _ = sample(model, width, height, batch_size, seed, temperature, top_k, top_p, guidance,
                        temperature_per_scale, top_k_per_scale, top_p_per_scale, condition,
                        window_stride=window_stride)
        return io.NodeOutput(out)


class ImageBARTMaskedRefine(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageBARTMaskedRefine", display_name="ImageBART Masked Refine", category=CATEGORY,
            description="Inpainting / local editing: regenerates the masked area of an encoded image so that it fits "
                        "the rest (and the condition, if given). Codes outside the mask stay exactly as they were.",
            inputs=[
                ModelSocket.Input("model", tooltip="The ImageBART model."),
                CodesSocket.Input("codes", tooltip="Level-1 codes of the image (from Encode)."),
                io.Mask.Input("mask", tooltip="Where to regenerate (1 / white = regenerate). Any size: it is stretched "
                                              "to the encoded image; a code is redone if any of its pixels is >= 0.5."),
                seed_input(),
                io.Int.Input("start_level", default=0, min=0, max=64,
                             tooltip="Level the masked area restarts from: 0 = the top (pure noise, biggest change); "
                                     "lower levels keep more of the original content under the mask."),
                io.Int.Input("passes", default=0, min=0, max=16,
                             tooltip="Refinement passes per level (re-noise and redraw the masked codes); more "
                                     "passes blend better but take longer. 0 = the model's default."),
                *sampling_inputs(),
                io.Boolean.Input("composite", default=False,
                                 tooltip="Paste the result into the original 'image' at its own size: the decoded "
                                         "area is stretched back to it and the original pixels are kept outside the "
                                         "mask, so unmasked areas keep full detail (needs 'image')."),
                cond_input(),
                io.Image.Input("image", optional=True, tooltip="The original image, for 'composite': the output image "
                                                               "has its size (exact placement for 'resize' and "
                                                               "'keep size' encodes; a cropped encode does not line "
                                                               "up)."),
                window_stride_input(),
            ],
            outputs=[
                CodesSocket.Output(display_name="codes", tooltip="Level-1 codes with the masked area regenerated, on "
                                                                 "the grid of the input codes."),
                io.Image.Output(display_name="image",
                                tooltip="The decoded result. With 'composite': at the size of 'image' (the result "
                                        "stretched back to it, original pixels outside the mask). Without: at the "
                                        "encoded size (the codes' grid x the VQGAN factor, e.g. 64x64 px for the "
                                        "bundled emoji models)."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, codes, mask, seed, start_level, passes, temperature, top_k, top_p, guidance,
                composite, condition=None, image=None, window_stride=0):
        check_codes(check_handle(model), codes)
        bridge.report_warnings(cls.hidden.unique_id, mask_warnings(model, codes, mask))
        out, decoded, _ = masked_refine(model, codes, mask, seed, start_level, passes, temperature, top_k, top_p,
                                        guidance, condition, composite, image, window_stride)
        return io.NodeOutput(out, decoded)
