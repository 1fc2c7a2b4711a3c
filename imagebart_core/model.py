"""The ImageBART model: VQGAN + multinomial diffusion + one transformer per scale, and its public API.

Images at the API are float ``[B, 3, H, W]`` in 0..1; codes are :class:`~imagebart_core.codes.Codes`.
Per-scale arguments (temperature, top_k, top_p, passes) accept a scalar (every scale), a list
ordered scale 1 first, a ``{scale: value}`` dict, or ``None`` (the model's defaults).
"""

from __future__ import annotations

import contextlib
import hashlib
import numbers
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import budget, rng, validate
from . import conditioning as conditioning_lib
from .chain.sampling import (
    Known,
    PerItemSampler,
    Progress,
    ProgressCallback,
    TokenFilter,
    TokenSampler,
    run_transition,
)
from .chain.windows import DEFAULT_WINDOW_CACHE_BYTES, ConditionBlend, run_windowed_transition
from .codes import Codes
from .conditioning import Condition
from .config import ModelConfig
from .diffusion import MultinomialDiffusion
from .transformer import build_scale, init_weights
from .vqgan import VQGAN

AnyCondition = Condition | ConditionBlend | None


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
            build_scale(sc, config.conditioning, residual_alpha=float(self.diffusion.alphas[s]))
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
        key = (emb.data_ptr(), _version(emb), used.data_ptr(), _version(used), emb.dtype)
        if self._identity_cache is None or self._identity_cache[0] != key:
            h = hashlib.sha256()
            h.update(used.detach().cpu().numpy().tobytes())
            h.update(emb.detach().float().cpu().numpy().tobytes())
            self._identity_cache = (key, h.hexdigest()[:16])
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

    @property
    def packed_steps(self) -> bool:
        """Batched CPU token steps run on oneDNN-packed copies of the running scale's weights (default True).

        Faster from two rows per step (a batch of two, or one item with guidance), at the cost of one scale's
        decoding weights of extra memory while that scale runs; set False where memory is tight.
        See :mod:`imagebart_core.packed`.
        """
        return all(getattr(net, "pack_steps", True) for net in self.scales)

    @packed_steps.setter
    def packed_steps(self, enabled: bool) -> None:
        for net in self.scales:
            net.pack_steps = bool(enabled)
            if not enabled:
                net._packed_ref = None

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
    def _scale_running(self, scale: int):
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

    def _cond_plan(self, cond: AnyCondition, batch: int):
        """-> (one token tensor [B, P] (or None) per condition, weights_at(x) for a horizontal blend)."""
        if isinstance(cond, ConditionBlend):
            return [self._cond_tokens(c, batch) for c in cond.conditions], cond.weights
        return [self._cond_tokens(cond, batch)], _single_weight

    def _cond_tokens(self, cond: Condition | None, batch: int) -> torch.Tensor | None:
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
            self._check_request("encode", (images.shape[2] // f, images.shape[3] // f), images.shape[0])
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
        self._check_request("decode", codes.grid, codes.batch_size)
        if self.device.type == "cpu" and not self.vqgan.channels_last_decoding:
            self.vqgan.use_channels_last_decoding()  # faster NHWC convolutions on CPU
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

    def _check_grid(self, grid: tuple[int, int]) -> tuple[int, int]:
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

    def _check_request(self, operation: str, grid: tuple[int, int], batch: int, **kwargs) -> budget.RequestEstimate:
        """Refuse (RequestTooLarge) what this device cannot serve, before any work; see :mod:`.budget`."""
        return budget.check_request(self, grid=grid, batch=batch, operation=operation,
                                    max_seconds=self.max_request_seconds, **kwargs)

    @staticmethod
    def _rows_per_item(cond: AnyCondition, guidance: float) -> int:
        sets = len(cond.conditions) if isinstance(cond, ConditionBlend) else 1
        return sets + (1 if guidance != 1.0 and cond is not None else 0)

    # -- the chain ---------------------------------------------------------------------------------------
    def random_codes(self, batch: int, grid: tuple[int, int] | None = None, seed: int | Sequence[int] = 0) -> Codes:
        """Uniform noise codes at level T: int64 [batch, h, w]; item i uses seed + i."""
        batch = validate.as_int(batch, "batch", minimum=1)
        h, w = self._check_grid(grid or self.config.grid)
        seeds = rng.item_seeds(seed, batch)
        self._check_request("random_codes", (h, w), batch)
        tokens = rng.randint(rng.generators(seeds, "noise"), self.config.vocab_size, h * w).view(batch, h, w)
        return Codes(tokens.to(self.device), self.num_levels, self.codebook_id, self.config.vocab_size)

    def per_scale(self, value: Any, name: str) -> list[Any]:
        """Expand a per-scale argument to a list ordered scale 1 first."""
        s = self.n_scales
        if value is None:
            defaults = getattr(self.config.sampling, name)
            fallback = {"temperature": 1.0, "top_k": None, "top_p": None, "refine_passes": 1}[name]
            return list(defaults) if defaults else [fallback] * s
        if isinstance(value, dict):
            base = self.per_scale(None, name)
            for k, v in value.items():
                if not 1 <= int(k) <= s:
                    raise ValueError(f"{name}: scale {k} outside 1..{s}")
                base[int(k) - 1] = v
            return base
        if isinstance(value, (list, tuple)):
            if len(value) != s:
                raise ValueError(f"{name} needs {s} values (one per scale, scale 1 first), got {len(value)}")
            return list(value)
        return [value] * s

    def _filters(self, temperature, top_k, top_p) -> list[TokenFilter]:
        filters = [
            TokenFilter(t, k, p)
            for t, k, p in zip(
                self.per_scale(temperature, "temperature"),
                self.per_scale(top_k, "top_k"),
                self.per_scale(top_p, "top_p"),
            )
        ]
        for f in filters:
            f.validate(self.config.vocab_size)
        return filters

    def _null_tokens(self, cond_tokens, guidance: float, batch: int):
        if guidance == 1.0 or cond_tokens is None:
            return None
        return self.null_condition(batch).tokens.to(self.device)

    def _transition(self, scale: int, x_in: torch.Tensor, *, cond_plan, null_tokens, guidance, token_filter,
                    sampler: TokenSampler, known=None, progress=None, sampler_key=None,
                    window_stride=None) -> torch.Tensor:
        """x_in int64 [B, h, w] at level scale+1 -> int64 [B, h, w] at level ``scale``."""
        b, h, w = x_in.shape
        n = h * w
        cond_sets, weights_at = cond_plan
        on_token = None if progress is None else (lambda i, o: progress(scale, i, n, o, (h, w)))
        with self._scale_running(scale) as net:
            if (h, w) != tuple(self.config.grid) or len(cond_sets) > 1:
                stride = None if window_stride is None else (int(window_stride), int(window_stride))
                out = run_windowed_transition(
                    net, x_in, scale, window=tuple(self.config.grid), cond_sets=cond_sets,
                    weights_at=weights_at, token_filter=token_filter, sampler=sampler, null_tokens=null_tokens,
                    guidance=guidance, known=known, stride=stride, on_token=on_token, sampler_key=sampler_key,
                    cache_bytes=self.window_cache_bytes,
                )
            else:
                out = run_transition(
                    net,
                    x_in.reshape(b, n),
                    scale,
                    cond_tokens=cond_sets[0],
                    token_filter=token_filter,
                    sampler=sampler,
                    null_tokens=null_tokens,
                    guidance=guidance,
                    known=known,
                    on_token=on_token,
                    sampler_key=sampler_key,
                )
        return out.view(b, h, w)

    def _progress(self, callback: ProgressCallback | None, total: int):
        done = [0]

        def report(scale: int, token: int, n: int, out: torch.Tensor, grid: tuple[int, int]) -> None:
            done[0] += 1
            if callback is None:
                return
            finished = out.view(out.shape[0], *grid).clone() if token == n - 1 else None
            callback(Progress(scale, scale, token, n, done[0], total, finished))

        return report

    @torch.no_grad()
    def reverse_step(
        self,
        codes: Codes,
        cond: AnyCondition = None,
        steps: int = 1,
        temperature=None,
        top_k=None,
        top_p=None,
        seed: int | Sequence[int] = 0,
        guidance: float = 1.0,
        callback: ProgressCallback | None = None,
        sampler: TokenSampler | None = None,
        window_stride: int | None = None,
    ) -> Codes:
        """Run ``steps`` transitions from ``codes.level`` down (level l -> l - steps)."""
        self.check_codes(codes)
        steps = validate.as_int(steps, "steps")
        if not 1 <= steps <= codes.level - 1:
            raise ValueError(f"codes at level {codes.level} allow 1..{codes.level - 1} steps, got {steps}")
        b = codes.batch_size
        self._check_grid(codes.grid)
        guidance = validate.as_float(guidance, "guidance")
        filters = self._filters(temperature, top_k, top_p)
        if sampler is None:
            rng.item_seeds(seed, b)  # a bad seed is refused before the size check and any work
        self._check_request("reverse_step", codes.grid, b, steps=steps, rows_per_item=self._rows_per_item(cond, guidance),
                            window_stride=window_stride)
        cond_plan = self._cond_plan(cond, b)
        null_tokens = self._null_tokens(cond_plan[0][0], guidance, b)
        sampler = sampler or PerItemSampler(rng.item_seeds(seed, b))
        progress = self._progress(callback, steps * codes.grid[0] * codes.grid[1])
        x = codes.tokens.to(self.device)
        for scale in range(codes.level - 1, codes.level - 1 - steps, -1):
            x = self._transition(scale, x, cond_plan=cond_plan, null_tokens=null_tokens, guidance=guidance,
                                 token_filter=filters[scale - 1], sampler=sampler, progress=progress,
                                 window_stride=window_stride)
        return codes.with_tokens(x, codes.level - steps)

    @torch.no_grad()
    def sample(
        self,
        batch: int,
        cond: AnyCondition = None,
        grid: tuple[int, int] | None = None,
        seed: int | Sequence[int] = 0,
        temperature=None,
        top_k=None,
        top_p=None,
        guidance: float = 1.0,
        callback: ProgressCallback | None = None,
        window_stride: int | None = None,
    ) -> Codes:
        """The whole chain from noise: Codes at level 1. Equals random_codes + reverse_step(all) with one seed."""
        batch = validate.as_int(batch, "batch", minimum=1)
        h, w = self._check_grid(grid or self.config.grid)
        guidance = validate.as_float(guidance, "guidance")
        self._filters(temperature, top_k, top_p)
        rng.item_seeds(seed, batch)
        self._check_request("sample", (h, w), batch, rows_per_item=self._rows_per_item(cond, guidance),
                            window_stride=window_stride)
        codes = self.random_codes(batch, (h, w), seed)
        return self.reverse_step(codes, cond, steps=self.n_scales, temperature=temperature, top_k=top_k,
                                 top_p=top_p, seed=seed, guidance=guidance, callback=callback,
                                 window_stride=window_stride)

    @torch.no_grad()
    def noise(self, codes: Codes, level: int, seed: int | Sequence[int] = 0) -> Codes:
        """Forward-noise codes to ``level`` (>= codes.level) with q(x_level | x_codes.level) (variations)."""
        self.check_codes(codes)
        level = validate.as_int(level, "level")
        if not codes.level <= level <= self.num_levels:
            raise ValueError(f"can noise codes at level {codes.level} to {codes.level}..{self.num_levels}, not {level}")
        seeds = rng.item_seeds(seed, codes.batch_size)
        self._check_request("noise", codes.grid, codes.batch_size)
        gens = rng.generators(seeds, "noise-to", level)
        x = self.diffusion.sample_between(codes.tokens, codes.level, level, gens)
        return codes.with_tokens(x, level)

    def token_mask(self, mask: torch.Tensor, codes: Codes) -> torch.Tensor:
        """Pixel mask [B|1, H, W] (or [H, W]) at image size, or a token mask at grid size, 1 = regenerate,
        -> bool [B, h, w]. A token is regenerated if any pixel it covers is >= 0.5. NaN / inf are refused."""
        if not torch.is_tensor(mask):
            raise ValueError("mask must be a tensor [B, H, W] (1 = regenerate)")
        m = validate.finite_mask(mask)
        if m.ndim == 2:
            m = m[None]
        if m.ndim != 3:
            raise ValueError(f"mask must be [B, H, W], got {tuple(mask.shape)}")
        b = codes.batch_size
        if m.shape[0] not in (1, b):
            raise ValueError(f"mask batch {m.shape[0]} does not match the codes batch {b}")
        h, w = codes.grid
        f = self.config.vqgan.factor
        if tuple(m.shape[1:]) == (h * f, w * f):
            tok = F.max_pool2d((m >= 0.5).float()[:, None], kernel_size=f)[:, 0] > 0
        elif tuple(m.shape[1:]) == (h, w):
            tok = m >= 0.5
        else:
            raise ValueError(
                f"mask is {m.shape[1]}x{m.shape[2]}; it must match the image ({h * f}x{w * f} px) "
                f"or the token grid ({h}x{w}). Resize the mask to the image first."
            )
        return tok.expand(b, h, w).to(self.device)

    @torch.no_grad()
    def masked_refine(
        self,
        codes: Codes,
        mask: torch.Tensor,
        cond: AnyCondition = None,
        start_level: int | None = None,
        passes=None,
        seed: int | Sequence[int] = 0,
        temperature=None,
        top_k=None,
        top_p=None,
        guidance: float = 1.0,
        callback: ProgressCallback | None = None,
        sampler: TokenSampler | None = None,
        window_stride: int | None = None,
    ) -> Codes:
        """Regenerate the masked tokens of clean codes, consistent with the rest (paper Sec. 4.3).

        codes: level-1 Codes of the image. mask: 1 = regenerate (see :meth:`token_mask`).
        Unknown tokens start from q(x_start | x_1) (uniform noise at the top level), known tokens stay
        clean at every level. At each level the transition runs ``passes[scale]`` times; between passes
        the state is re-noised with a forward step of decreasing strength ((1 - i/n) * beta), except at
        known positions. Returns level-1 Codes; known tokens equal the input exactly.
        """
        self.check_codes(codes)
        if codes.level != 1:
            raise ValueError(f"masked_refine needs level-1 codes of an image, got level {codes.level}")
        self._check_grid(codes.grid)
        start = self.num_levels if start_level is None else validate.as_int(start_level, "start_level")
        if not 2 <= start <= self.num_levels:
            raise ValueError(f"start_level must be in 2..{self.num_levels}, got {start}")
        n_passes = [validate.as_int(p, "passes") for p in self.per_scale(passes, "refine_passes")]
        if any(p < 1 for p in n_passes):
            raise ValueError("refinement passes must be >= 1")
        b = codes.batch_size
        regen = self.token_mask(mask, codes)  # [B, h, w] bool
        guidance = validate.as_float(guidance, "guidance")
        seeds = rng.item_seeds(seed, b)
        self._check_request("masked_refine", codes.grid, b, steps=start - 1, passes=max(n_passes),
                            rows_per_item=self._rows_per_item(cond, guidance), window_stride=window_stride)
        x1 = codes.tokens.to(self.device)
        known_mask = ~regen
        if not bool(regen.any()):
            return codes.with_tokens(x1.clone(), 1)
        filters = self._filters(temperature, top_k, top_p)
        cond_plan = self._cond_plan(cond, b)
        null_tokens = self._null_tokens(cond_plan[0][0], guidance, b)
        sampler = sampler or PerItemSampler(seeds)
        n = x1.shape[1] * x1.shape[2]
        total = sum(n_passes[s - 1] for s in range(1, start)) * n
        progress = self._progress(callback, total)
        known = Known(x1.reshape(b, n), known_mask.reshape(b, n))
        x = self.diffusion.sample_between(x1, 1, start, rng.generators(seeds, "refine-start", start))
        x = torch.where(known_mask, x1, x)
        for scale in range(start - 1, 0, -1):
            count = n_passes[scale - 1]
            for i in range(count):
                if i > 0:
                    strength = (1.0 - i / count) * float(self.diffusion.betas[scale])
                    x = self.diffusion.redraw(x, strength, rng.generators(seeds, "refine-renoise", scale, i))
                    x = torch.where(known_mask, x1, x)
                x = self._transition(scale, x, cond_plan=cond_plan, null_tokens=null_tokens, guidance=guidance,
                                     token_filter=filters[scale - 1], sampler=sampler, known=known,
                                     progress=progress, sampler_key=("refine", scale, i),
                                     window_stride=window_stride)
        return codes.with_tokens(x, 1)

    # -- teacher forcing -----------------------------------------------------------------------------------
    def scale_logits(self, scale: int, x_in: torch.Tensor, target: torch.Tensor, cond: Condition | None = None):
        """Teacher-forced logits of scale ``scale``: x_in (level scale+1) and target (level scale), int64 [B, N]
        (or [B, h, w]) -> float [B, N, K]."""
        if not 1 <= scale <= self.n_scales:
            raise ValueError(f"scale must be in 1..{self.n_scales}")
        b = target.shape[0]
        cond_tokens = self._cond_tokens(cond, b)
        with self._scale_running(scale) as net:
            return net(x_in.reshape(b, -1), target.reshape(b, -1), scale, cond_tokens)


def _single_weight(x: float) -> list[float]:
    return [1.0]


def _version(t: torch.Tensor) -> int:
    """A tensor's in-place version counter; inference tensors (made under torch.inference_mode, as in
    ComfyUI) have none, and cannot change outside inference mode, so they count as version 0."""
    return 0 if t.is_inference() else t._version


def upper_half_mask(batch: int, height: int, width: int) -> torch.Tensor:
    """Pixel mask float [B, H, W] that regenerates the upper half (1 = regenerate): upper-half completion."""
    mask = torch.zeros(batch, height, width)
    mask[:, : height // 2] = 1.0
    return mask
