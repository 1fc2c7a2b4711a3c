"""What every node file shares: the core library, socket types, the model handle, tensor conventions.

ComfyUI conventions: IMAGE is float32 ``[B, H, W, C]`` in 0..1 on the CPU; MASK is float ``[B, H, W]``
(or ``[H, W]``), 1 = the area to change. The core library uses float ``[B, 3, H, W]`` images.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from comfy_api.latest import io

try:  # inside ComfyUI the pack is a package and imagebart_core a sibling sub-package
    from .. import imagebart_core as ib
except ImportError:  # repository root on sys.path (tests, pip install)
    import imagebart_core as ib

logger = logging.getLogger("imagebart.nodes")

CATEGORY = "ImageBART"
SEED_MAX = 0xFFFFFFFFFFFFFFFF

ModelSocket = io.Custom("IMAGEBART_MODEL")
CodesSocket = io.Custom("IMAGEBART_CODES")
CondSocket = io.Custom("IMAGEBART_COND")


@dataclass
class ModelHandle:
    """What travels on an IMAGEBART_MODEL socket: the model, its file, and ComfyUI's patcher (if any)."""

    model: Any  # ib.ImageBART
    name: str
    dtype: torch.dtype
    patcher: Any = None  # comfy.model_patcher.ModelPatcher inside ComfyUI, else None
    offload_idle_scales: bool = False  # scales live on the CPU and visit the device one at a time

    @property
    def config(self):
        return self.model.config

    @property
    def factor(self) -> int:
        return self.model.config.vqgan.factor

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) in pixels of the trained grid."""
        h, w = self.model.config.grid
        return h * self.factor, w * self.factor


def check_handle(model) -> ModelHandle:
    if not isinstance(model, ModelHandle):
        raise ValueError(f"expected an ImageBART model from 'Load ImageBART', got {type(model).__name__}")
    return model


def check_codes(handle: ModelHandle, codes) -> None:
    """Codes of this model (ValueError naming both codebooks otherwise)."""
    if not isinstance(codes, ib.Codes):
        raise ValueError(f"expected ImageBART codes, got {type(codes).__name__}")
    handle.model.check_codes(codes)


def image_to_core(image: torch.Tensor) -> torch.Tensor:
    """IMAGE float [B, H, W, C] (C = 1, 3 or 4) -> float32 [B, 3, H, W] in 0..1."""
    if not torch.is_tensor(image) or image.ndim not in (3, 4):
        raise ValueError(f"IMAGE must be a tensor [B, H, W, C], got {getattr(image, 'shape', type(image))}")
    if image.ndim == 3:
        image = image[None]
    c = image.shape[-1]
    if c == 1:
        image = image.expand(*image.shape[:-1], 3)
    elif c == 4:
        image = image[..., :3]
    elif c != 3:
        raise ValueError(f"IMAGE must have 1, 3 or 4 channels, got {c}")
    x = image.float()
    if x.numel() and not bool(torch.isfinite(x).all()):  # clamp would keep NaN, and NaN encodes as code 0
        raise ValueError("IMAGE contains NaN or inf values; the node before this one produced an invalid image")
    return x.clamp(0, 1).movedim(-1, 1).contiguous()


def image_from_core(x: torch.Tensor) -> torch.Tensor:
    """float [B, 3, H, W] in 0..1 -> IMAGE float32 [B, H, W, 3] on the CPU, contiguous."""
    return x.detach().float().clamp(0, 1).movedim(1, -1).cpu().contiguous()


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """MASK [B, H, W] or [H, W] (any size) -> float [B, h, w] at ``size`` (bilinear), values 0..1."""
    if not torch.is_tensor(mask) or mask.ndim not in (2, 3):
        raise ValueError(f"MASK must be a tensor [B, H, W] or [H, W], got {getattr(mask, 'shape', type(mask))}")
    m = mask.float().reshape(-1, mask.shape[-2], mask.shape[-1])
    if tuple(m.shape[-2:]) != tuple(size):
        m = F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return m.clamp(0, 1)


def cond_batch(condition) -> int:
    """Rows of a condition: a ``Condition``'s batch, or the common batch of a ``ConditionBlend``'s members."""
    if isinstance(condition, ib.ConditionBlend):
        b = 1
        for i, c in enumerate(condition.conditions):
            b = fit_batches("the blend", b, f"blended condition {i + 1}", c.batch_size())
        return b
    if not isinstance(condition, ib.Condition):
        raise ValueError(f"expected an ImageBART condition (Class / Text Condition or Condition Blend), got "
                         f"{type(condition).__name__}")
    return condition.batch_size()


def stride_arg(window_stride: int) -> int | None:
    """The window_stride widget (0 = automatic) -> the core's argument (None = automatic)."""
    window_stride = int(window_stride)
    if window_stride < 0:
        raise ValueError("window_stride must be >= 0 (0 = automatic)")
    return window_stride or None


def fit_batches(what_a: str, a: int, what_b: str, b: int) -> int:
    """The common batch of two inputs (equal, or one of them 1), else an error naming both."""
    if a == b or b == 1:
        return a
    if a == 1:
        return b
    raise ValueError(f"batch mismatch: {what_a} has {a} items but {what_b} has {b}; give 1 or {a} {what_b}s")


def parse_per_scale(text: str, n_scales: int, name: str, cast=float) -> dict[int, Any]:
    """Per-scale overrides ``"1:0.9, 3:1.1"`` (scale 1 = the last, finest step) -> {scale: value}."""
    out: dict[int, Any] = {}
    text = (text or "").strip()
    if not text:
        return out
    for part in re.split(r"[,;\n]+", text):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*[:=]\s*([-+0-9.eE]+)", part)
        if not m:
            raise ValueError(f"{name} overrides: cannot read {part!r}; write 'scale:value' pairs like '1:0.9, 3:1.1'")
        scale = int(m.group(1))
        if not 1 <= scale <= n_scales:
            raise ValueError(f"{name} overrides: scale {scale} does not exist; this model has scales 1..{n_scales}")
        try:
            out[scale] = cast(float(m.group(2)))
        except ValueError:
            raise ValueError(f"{name} overrides: {m.group(2)!r} is not a number") from None
    return out


def filter_settings(handle: ModelHandle, temperature: float, top_k: int, top_p: float,
                    temperature_per_scale: str = "", top_k_per_scale: str = "", top_p_per_scale: str = ""):
    """Node widgets -> per-scale lists (scale 1 first) for the core. top_k 0 and top_p 1.0 mean off."""
    n = handle.model.n_scales
    temps = [float(temperature)] * n
    ks = [int(top_k)] * n
    ps = [float(top_p)] * n
    for s, v in parse_per_scale(temperature_per_scale, n, "temperature").items():
        temps[s - 1] = v
    for s, v in parse_per_scale(top_k_per_scale, n, "top_k", cast=int).items():
        ks[s - 1] = v
    for s, v in parse_per_scale(top_p_per_scale, n, "top_p").items():
        ps[s - 1] = v
    # the core validates the values (before any work); here only the widgets' "off" values are translated
    return temps, [None if k <= 0 else k for k in ks], [None if p == 1.0 else p for p in ps]  # > 1: the core refuses


# -- shared widget definitions -------------------------------------------------------------------------------
def seed_input() -> io.Int.Input:
    return io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=True,
                        tooltip="Random seed. Batch item i uses seed + i, so any item can be reproduced alone; "
                                "the same seed and settings give the same image.")


def sampling_inputs() -> list:
    return [
        io.Float.Input("temperature", default=1.0, min=0.01, max=5.0, step=0.01,
                       tooltip="Softmax temperature of every token draw: < 1 sharper and safer, > 1 more varied."),
        io.Int.Input("top_k", default=0, min=0, max=100000,
                     tooltip="Keep only the k most likely codes at each draw; 0 = off."),
        io.Float.Input("top_p", default=1.0, min=0.01, max=1.0, step=0.01,
                       tooltip="Nucleus sampling: keep the smallest set of codes whose probability reaches p; "
                               "1.0 = off."),
        io.Float.Input("guidance", default=1.0, min=0.0, max=20.0, step=0.1,
                       tooltip="Classifier-free guidance for class/text conditions (1.0 = off). Needs a model "
                               "trained with condition dropout; ignored without a condition."),
    ]


def cond_input() -> Any:
    return CondSocket.Input("condition", optional=True,
                            tooltip="Class or text condition (from Class Condition / Text Condition, or several "
                                    "of them blended left to right by Condition Blend). Leave empty for "
                                    "unconditional models.")


def window_stride_input() -> io.Int.Input:
    return io.Int.Input("window_stride", default=0, min=0, max=256,
                        tooltip="Only for images larger than the model's trained size: every code is drawn "
                                "looking at a trained-size window around it, and the windows move in steps of "
                                "this many codes (at most half the trained grid). Smaller steps follow each code "
                                "more closely but are slower. 0 = automatic (a quarter of the trained grid). "
                                "No effect at the trained size.")
