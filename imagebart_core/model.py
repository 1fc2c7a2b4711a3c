"""The ImageBART model: VQGAN + multinomial diffusion + one transformer per scale, and its public API.

Images at the API are float ``[B, 3, H, W]`` in 0..1; codes are :class:`~imagebart_core.codes.Codes`.
:class:`ImageBART` is a facade: it owns the parts (VQGAN, diffusion, one network per scale), the model's identity,
devices, conditions, encode / decode and the checks; the chain operations (``sample``, ``reverse_step``,
``masked_refine``, ``noise``, ...) are defined in :mod:`imagebart_core.chain.reverse` and bound here.
Per-scale arguments (temperature, top_k, top_p, passes) accept a scalar (every scale), a list
ordered scale 1 first, a ``{scale: value}`` dict, or ``None`` (the model's defaults).
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn

from . import budget, fast_decode, validate
from . import conditioning as conditioning_lib
from .chain import reverse
from .chain.windows import DEFAULT_WINDOW_CACHE_BYTES
from .codes import Codes, codebook_identity
from .conditioning import Condition
from .config import ModelConfig
from .diffusion import MultinomialDiffusion
from .packed import tensor_version
from .schedule import residual_alpha
from .transformer import build_scale, init_weights
from .vqgan import VQGAN


class ImageBART(nn.Module):
    """A whole ImageBART chain. Build with random weights via ``ImageBART(config)``; load files with
    :func:`imagebart_core.load_model`."""

    def __init__(self, config: ModelConfig, used: torch.Tensor | None = None, init: bool = True):
        super().__init__()
        config.validate()
        self.config = config
        if used is None:
            used = torch.arange(config.vocab_size, dtype=torch.long)
        if used.numel() != config.vocab_size:
            raise ValueError(f"shrink list has {used.numel()} entries, config vocab_size is {config.vocab_size}")
        self.vqgan = VQGAN(config.vqgan, used)
        betas = config.schedule.betas
        self.diffusion = MultinomialDiffusion(betas, config.vocab_size)
        self.scales = nn.ModuleList(
            build_scale(sc, config.conditioning, residual_alpha=residual_alpha(betas, s))
            for s, sc in enumerate(config.scales, start=1)
        )
        if init:
            for scale in self.scales:
                init_weights(scale)
        self._identity_cache: tuple[Any, str] | None = None
        self._offload: tuple[torch.device, torch.device] | None = None  # (storage, compute), see offload_idle_scales
        #: Requests estimated to run longer than this (seconds) are refused up front; None: no limit.
        self.max_request_seconds: float | None = budget.DEFAULT_MAX_SECONDS
        #: Memory for kept window encoder states on grids larger than the trained one (per transition).
        self.window_cache_bytes: int = DEFAULT_WINDOW_CACHE_BYTES
        #: Batched CPU token steps run on oneDNN-packed copies of the running scale's weights: faster from two
        #: rows per step (a batch of two, or one item with guidance), at the cost of one scale's decoding weights
        #: of extra memory while that scale runs; set False where memory is tight (see imagebart_core.fast_decode).
        self.packed_steps: bool = True
        #: How token steps run: "eager" (default), "static" or "compiled" (torch.compile; CUDA graphs on CUDA),
        #: see imagebart_core.chain.static_step. Compiled steps are kept here, per scale network.
        self.step_mode: str = "eager"
        self.compiled_steps: dict[int, Callable] = {}

    # -- identity, devices ---------------------------------------------------------------------------
    @property
    def n_scales(self) -> int:
        return self.config.n_scales

    @property
    def num_levels(self) -> int:
        return self.config.num_levels

    @property
    def device(self) -> torch.device:
        return self.vqgan.quantize.embedding.weight.device

    @property
    def codebook_id(self) -> str:
        """A short hash of the codebook and shrink list: codes are only valid for models sharing it."""
        emb = self.vqgan.quantize.embedding.weight
        used = self.vqgan.quantize.used
        key = (emb.data_ptr(), tensor_version(emb), used.data_ptr(), tensor_version(used), emb.dtype)
        if self._identity_cache is None or self._identity_cache[0] != key:
            self._identity_cache = (key, codebook_identity(used, emb))
        return self._identity_cache[1]

    def to_runtime(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> ImageBART:
        """Move to ``device``; transformers in ``dtype``, the VQGAN always float32 (never fp16)."""
        self.vqgan.to(device=device, dtype=torch.float32)
        for scale in self.scales:
            scale.to(device=device, dtype=dtype)
            if hasattr(scale, "residual_alpha"):
                scale.residual_alpha = scale.residual_alpha.float()
        self.eval()
        return self

    def reset_residual_alphas(self, device: torch.device | str | None = None) -> None:
        """Re-create each scale's residual alpha, a non-persistent float32 buffer that construction on the meta
        device leaves empty (see :func:`~imagebart_core.diffusion.residual_alpha`)."""
        for s, scale in enumerate(self.scales, start=1):
            if hasattr(scale, "residual_alpha"):
                alpha = residual_alpha(self.config.schedule.betas, s)
                scale.residual_alpha = torch.tensor(alpha, dtype=torch.float32, device=device)

    def offload_idle_scales(self, storage: torch.device | str | None = "cpu",
                            compute: torch.device | str | None = None) -> ImageBART:
        """Keep the scales that are not running on ``storage``; move each to ``compute`` only while it runs.

        For devices with less memory than the whole model: peak memory on ``compute`` is then the VQGAN
        plus one scale. ``compute`` defaults to the VQGAN's device. ``storage=None`` turns it off and
        moves every scale back to ``compute``. Results are the same as without offloading.
        """
        compute = torch.device(compute) if compute is not None else self.device
        if storage is None:
            self._offload = None
            for scale in self.scales:
                scale.to(compute)
            return self
        self._offload = (torch.device(storage), compute)
        for scale in self.scales:
            scale.to(self._offload[0])
        return self

    @contextlib.contextmanager
    def scale_running(self, scale: int):
        """The network of ``scale`` (1-based), on the compute device for the duration of the block."""
        net = self.scales[scale - 1]
        if self._offload is None:
            yield net
            return
        storage, compute = self._offload
        net.to(compute)
        try:
            yield net
        finally:
            net.to(storage)

    # -- conditions ------------------------------------------------------------------------------------
    def class_condition(self, values: Sequence[int | str] | int | str) -> Condition:
        """Class labels (indices or names) -> Condition with tokens int64 [B, 1]."""
        if isinstance(values, (numbers.Integral, str)):
            values = [values]
        return conditioning_lib.class_condition(self.config.conditioning, list(values))

    def text_condition(self, prompts: Sequence[str] | str) -> Condition:
        """Prompts -> Condition with CLIP tokens int64 [B, text_length]."""
        if isinstance(prompts, str):
            prompts = [prompts]
        return conditioning_lib.text_condition(self.config.conditioning, list(prompts))

    def null_condition(self, batch: int) -> Condition:
        return conditioning_lib.null_condition(self.config.conditioning, batch)

    def condition_tokens(self, cond: Condition | None, batch: int) -> torch.Tensor | None:
        """A condition (or None) -> its tokens int64 [batch, P] on this model's device (None: unconditional model)."""
        kind = self.config.conditioning.kind
        if kind == "none":
            if cond is not None:
                raise ValueError("this model is unconditional; remove the condition")
            return None
        if cond is None:
            if self.config.conditioning.null_condition:  # trained with condition dropout: sample unconditionally
                return self.null_condition(batch).tokens.to(self.device)
            raise ValueError(f"this model is {kind}-conditional and has no unconditional mode: give a {kind} condition")
        if cond.kind != kind:
            raise ValueError(f"this model takes a {kind} condition, got a {cond.kind} condition")
        self._check_condition_range(cond)
        return cond.repeat_to(batch).tokens.to(self.device)

    def _check_condition_range(self, cond: Condition) -> None:
        """Condition tokens must index this model's condition table (a hand-made Condition may not)."""
        c = self.config.conditioning
        if cond.kind == "class":
            high = c.num_classes + (1 if c.null_condition and not c.shared_class_embedding else 0)
            what = f"class indices 0..{c.num_classes - 1}" + (f" (and {c.num_classes} for null)"
                                                              if high > c.num_classes else "")
        else:
            high = c.text_vocab_size
            what = f"text token ids 0..{high - 1}"
        t = cond.tokens
        if cond.kind == "text" and t.shape[1] != c.text_length:
            raise ValueError(f"cond: text tokens have length {t.shape[1]}; this model takes {c.text_length}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= high):
            raise ValueError(f"cond: token values {int(t.min())}..{int(t.max())} are out of range; "
                             f"this model takes {what}. Make conditions with model.class_condition / text_condition")

    # -- encode / decode ---------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: torch.Tensor, outlier_policy: str = "nearest_used", generator=None) -> Codes:
        """images float [B, 3, H, W] in 0..1 (H, W multiples of the VQGAN factor) -> Codes at level 1.

        uint8 images (0..255) are accepted and divided by 255. Float values outside 0..1, NaN / inf and other
        dtypes are refused (ValueError naming ``images``), as is a size the device cannot serve
        (:class:`~imagebart_core.budget.RequestTooLarge`).
        """
        if torch.is_tensor(images) and images.ndim == 4:  # the size first: the value checks below copy the images
            f = self.config.vqgan.factor
            self.check_request("encode", (images.shape[2] // f, images.shape[3] // f), images.shape[0])
        images = validate.images_0_1(images)
        x = images.to(self.device, torch.float32) * 2.0 - 1.0
        tokens = self.vqgan.encode_to_codes(x, outlier_policy=outlier_policy, generator=generator)
        return Codes(tokens.long(), 1, self.codebook_id, self.config.vocab_size)

    @torch.no_grad()
    def decode(self, codes: Codes) -> torch.Tensor:
        """Codes at level 1 -> images float32 [B, 3, H, W] in 0..1 (clamped)."""
        self.check_codes(codes)
        if codes.level != 1:
            raise ValueError(f"decode needs level-1 (clean) codes; these are at level {codes.level}: "
                             "run the remaining reverse steps first")
        self.check_request("decode", codes.grid, codes.batch_size)
        if self.device.type == "cpu":
            fast_decode.decoder_layout(self.vqgan)  # faster NHWC convolutions on CPU (idempotent)
        x = self.vqgan.decode_codes(codes.tokens.to(self.device))
        return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)

    def check_codes(self, codes: Codes) -> None:
        """Raise ValueError unless ``codes`` belong to this model's codebook and chain."""
        if not isinstance(codes, Codes):
            raise ValueError(f"expected Codes, got {type(codes).__name__}")
        if codes.codebook_id != self.codebook_id or codes.vocab_size != self.config.vocab_size:
            raise ValueError(
                f"these codes come from another model (codebook {codes.codebook_id}, K={codes.vocab_size}); "
                f"this model's codebook is {self.codebook_id}, K={self.config.vocab_size}. "
                "Encode the image again with this model."
            )
        if not 1 <= codes.level <= self.num_levels:
            raise ValueError(f"codes level {codes.level} outside this model's chain 1..{self.num_levels}")
        t = codes.tokens
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.config.vocab_size):
            raise ValueError(f"code ids must lie in [0, {self.config.vocab_size})")

    def check_grid(self, grid: tuple[int, int]) -> tuple[int, int]:
        """Grids at least the trained size along both axes are allowed (larger ones use sliding windows)."""
        if isinstance(grid, (str, bytes)) or not hasattr(grid, "__len__") or len(grid) != 2:
            raise ValueError(f"grid must be (height, width) in tokens, got {grid!r}")
        h, w = validate.as_int(grid[0], "grid height"), validate.as_int(grid[1], "grid width")
        th, tw = self.config.grid
        if h < th or w < tw:
            f = self.config.vqgan.factor
            raise ValueError(
                f"grid {h}x{w} tokens ({h * f}x{w * f} px) is smaller than the trained grid {th}x{tw} "
                f"({th * f}x{tw * f} px); use images at least that large"
            )
        return h, w

    def check_request(self, operation: str, grid: tuple[int, int], batch: int, **kwargs) -> budget.RequestEstimate:
        """Refuse (RequestTooLarge) what this device cannot serve, before any work; see :mod:`.budget`."""
        return budget.check_request(self, grid=grid, batch=batch, operation=operation,
                                    max_seconds=self.max_request_seconds, **kwargs)

    # -- the chain (defined in chain/reverse.py, the model as first argument) -------------------------------
    random_codes = reverse.random_codes
    per_scale = reverse.per_scale
    token_mask = reverse.token_mask
    reverse_step = reverse.reverse_step
    sample = reverse.sample
    noise = reverse.noise
    masked_refine = reverse.masked_refine

    # -- teacher forcing -----------------------------------------------------------------------------------
    def scale_logits(self, scale: int, x_in: torch.Tensor, target: torch.Tensor, cond: Condition | None = None):
        """Teacher-forced logits of scale ``scale``: x_in (level scale+1) and target (level scale), int64 [B, N]
        (or [B, h, w]) -> float [B, N, K]."""
        if not 1 <= scale <= self.n_scales:
            raise ValueError(f"scale must be in 1..{self.n_scales}")
        b = target.shape[0]
        cond_tokens = self.condition_tokens(cond, b)
        with self.scale_running(scale) as net:
            return net(x_in.reshape(b, -1), target.reshape(b, -1), scale, cond_tokens)


def upper_half_mask(batch: int, height: int, width: int) -> torch.Tensor:
    """Pixel mask float [B, H, W] that regenerates the upper half (1 = regenerate): upper-half completion."""
    mask = torch.zeros(batch, height, width)
    mask[:, : height // 2] = 1.0
    return mask
