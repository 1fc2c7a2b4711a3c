"""The reverse chain of one model: noise codes, reverse steps, the whole chain, masked refinement, noising.

These are the chain operations :class:`~imagebart_core.model.ImageBART` offers as methods; each takes the model
first (its parts: config, diffusion, scales, identity, request checks) and is bound to the class there, so
``model.sample(...)`` is :func:`sample`. Here live the per-scale settings (every documented form, expanded and
validated once), the mask -> token rule, the masked-refinement schedule and the progress count; a transition
itself is :func:`~.transition.run_transition` and a token :class:`~.sampling.TokenStep`.

Per-scale arguments (temperature, top_k, top_p, passes) accept a scalar (every scale), a list ordered scale 1
first, a ``{scale: value}`` dict, or ``None`` (the model's defaults).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from .. import rng, validate
from ..codes import Codes
from ..conditioning import Condition, ConditionBlend
from .sampling import Known, PerItemSampler, Progress, ProgressCallback, TokenFilter, TokenSampler
from .transition import run_transition

if TYPE_CHECKING:  # the facade is only named in annotations: no import arrow from the chain back to model.py
    from ..model import ImageBART

AnyCondition = Condition | ConditionBlend | None

#: The value of a per-scale setting when neither the call nor the model file gives one.
FALLBACK_SETTINGS = {"temperature": 1.0, "top_k": None, "top_p": None, "refine_passes": 1}

#: A pixel (or token) of a mask at or above this value is regenerated.
MASK_THRESHOLD = 0.5


# -- settings ---------------------------------------------------------------------------------------------
def per_scale(model: ImageBART, value: Any, name: str) -> list[Any]:
    """Expand a per-scale argument to a list ordered scale 1 first."""
    s = model.n_scales
    if value is None:
        defaults = getattr(model.config.sampling, name)
        return list(defaults) if defaults else [FALLBACK_SETTINGS[name]] * s
    if isinstance(value, dict):
        base = per_scale(model, None, name)
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


def token_filters(model: ImageBART, temperature, top_k, top_p) -> list[TokenFilter]:
    """The per-scale arguments -> one validated :class:`TokenFilter` per scale, scale 1 first."""
    filters = [
        TokenFilter(t, k, p)
        for t, k, p in zip(
            per_scale(model, temperature, "temperature"),
            per_scale(model, top_k, "top_k"),
            per_scale(model, top_p, "top_p"),
        )
    ]
    for f in filters:
        f.validate(model.config.vocab_size)
    return filters


def token_mask(model: ImageBART, mask: torch.Tensor, codes: Codes) -> torch.Tensor:
    """THE mask -> token rule. mask: float (or bool) [H, W], [B|1, H, W] or [B|1, 1, H, W] of any size, 1 =
    regenerate; -> bool [B, h, w] for ``codes`` (grid h x w, B items, factor f):

    * at the token grid (h x w): a token is regenerated where its mask value is >= 0.5;
    * at the image size (h*f x w*f): a token is regenerated if any pixel it covers is >= 0.5;
    * any other size: the mask is first stretched (bilinear, values clamped to 0..1) to the image size, then as
      above (what a ComfyUI MASK drawn at another resolution means).

    A mask of batch 1 applies to every item. NaN / inf, empty dimensions, other layouts and a batch other than 1
    or B are refused.
    """
    if not torch.is_tensor(mask):
        raise ValueError("mask must be a tensor [B, H, W] (1 = regenerate)")
    m = validate.finite_mask(mask)
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]  # [B, 1, H, W] -> [B, H, W]
    elif m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"mask must be [H, W], [B, H, W] or [B, 1, H, W], got {tuple(mask.shape)}")
    if 0 in m.shape:
        raise ValueError(f"mask is empty (shape {tuple(mask.shape)}); give at least one row and column")
    b = codes.batch_size
    if m.shape[0] not in (1, b):
        raise ValueError(f"mask batch {m.shape[0]} does not match the codes batch {b}")
    h, w = codes.grid
    f = model.config.vqgan.factor
    if tuple(m.shape[1:]) == (h, w):
        tok = m >= MASK_THRESHOLD
    else:
        if tuple(m.shape[1:]) != (h * f, w * f):  # another size: stretch to the image
            m = F.interpolate(m[:, None], size=(h * f, w * f), mode="bilinear", align_corners=False)[:, 0]
            m = m.clamp(0.0, 1.0)
        tok = F.max_pool2d((m >= MASK_THRESHOLD).float()[:, None], kernel_size=f)[:, 0] > 0  # [B, h, w]
    return tok.expand(b, h, w).to(model.device)


def rows_per_item(cond: AnyCondition, guidance: float) -> int:
    """Network rows per batch item: one per blended condition, one more for guidance's unconditional row."""
    sets = len(cond.conditions) if isinstance(cond, ConditionBlend) else 1
    return sets + (1 if guidance != 1.0 and cond is not None else 0)


def _cond_plan(model: ImageBART, cond: AnyCondition, batch: int):
    """-> (one token tensor [B, P] (or None) per condition, weights_at(x) for a horizontal blend)."""
    if isinstance(cond, ConditionBlend):
        return [model.condition_tokens(c, batch) for c in cond.conditions], cond.weights
    return [model.condition_tokens(cond, batch)], None


def _null_tokens(model: ImageBART, cond_tokens, guidance: float, batch: int):
    if guidance == 1.0 or cond_tokens is None:
        return None
    return model.null_condition(batch).tokens.to(model.device)


class _Progress:
    """Counts token steps over a whole call and reports each to the caller's callback."""

    def __init__(self, callback: ProgressCallback | None, total: int):
        self.callback, self.total, self.done = callback, total, 0

    def __call__(self, scale: int, token: int, n: int, out: torch.Tensor, grid: tuple[int, int]) -> None:
        self.done += 1
        if self.callback is None:
            return
        finished = out.view(out.shape[0], *grid).clone() if token == n - 1 else None
        self.callback(Progress(scale, scale, token, n, self.done, self.total, finished))


def _transition(model: ImageBART, scale: int, x_in: torch.Tensor, *, cond_plan, null_tokens, guidance,
                token_filter, sampler: TokenSampler, known=None, progress=None, sampler_key=None,
                window_stride=None) -> torch.Tensor:
    """x_in int64 [B, h, w] at level scale+1 -> int64 [B, h, w] at level ``scale``."""
    h, w = x_in.shape[1:]
    cond_sets, weights_at = cond_plan
    on_token = None if progress is None else (lambda i, o: progress(scale, i, h * w, o, (h, w)))
    stride = None if window_stride is None else (int(window_stride), int(window_stride))
    with model.scale_running(scale) as net:
        return run_transition(net, x_in, scale, window=tuple(model.config.grid), cond_sets=cond_sets,
                              weights_at=weights_at, token_filter=token_filter, sampler=sampler,
                              null_tokens=null_tokens, guidance=guidance, known=known, stride=stride,
                              on_token=on_token, sampler_key=sampler_key, cache_bytes=model.window_cache_bytes,
                              pack=model.packed_steps, step_mode=model.step_mode, compiled=model.compiled_steps)


# -- the operations ----------------------------------------------------------------------------------------
def random_codes(model: ImageBART, batch: int, grid: tuple[int, int] | None = None,
                 seed: int | Sequence[int] = 0) -> Codes:
    """Uniform noise codes at level T: int64 [batch, h, w]; item i uses seed + i."""
    batch = validate.as_int(batch, "batch", minimum=1)
    h, w = model.check_grid(grid or model.config.grid)
    seeds = rng.item_seeds(seed, batch)
    model.check_request("random_codes", (h, w), batch)
    tokens = rng.randint(rng.generators(seeds, "noise"), model.config.vocab_size, h * w).view(batch, h, w)
    return Codes(tokens.to(model.device), model.num_levels, model.codebook_id, model.config.vocab_size)


@torch.no_grad()
def reverse_step(model: ImageBART, codes: Codes, cond: AnyCondition = None, steps: int = 1, temperature=None,
                 top_k=None, top_p=None, seed: int | Sequence[int] = 0, guidance: float = 1.0,
                 callback: ProgressCallback | None = None, sampler: TokenSampler | None = None,
                 window_stride: int | None = None) -> Codes:
    """Run ``steps`` transitions from ``codes.level`` down (level l -> l - steps)."""
    model.check_codes(codes)
    if codes.level == 1:
        raise ValueError("these codes are already clean (level 1): no reverse steps are left. Decode them.")
    steps = validate.as_int(steps, "steps")
    if not 1 <= steps <= codes.level - 1:
        raise ValueError(f"codes at level {codes.level} allow 1..{codes.level - 1} steps, got {steps}")
    b = codes.batch_size
    model.check_grid(codes.grid)
    guidance = validate.as_float(guidance, "guidance")
    filters = token_filters(model, temperature, top_k, top_p)
    if sampler is None:
        rng.item_seeds(seed, b)  # a bad seed is refused before the size check and any work
    model.check_request("reverse_step", codes.grid, b, steps=steps, rows_per_item=rows_per_item(cond, guidance),
                        window_stride=window_stride)
    cond_plan = _cond_plan(model, cond, b)
    null_tokens = _null_tokens(model, cond_plan[0][0], guidance, b)
    sampler = sampler or PerItemSampler(rng.item_seeds(seed, b))
    progress = _Progress(callback, steps * codes.grid[0] * codes.grid[1])
    x = codes.tokens.to(model.device)
    for scale in range(codes.level - 1, codes.level - 1 - steps, -1):
        x = _transition(model, scale, x, cond_plan=cond_plan, null_tokens=null_tokens, guidance=guidance,
                        token_filter=filters[scale - 1], sampler=sampler, progress=progress,
                        window_stride=window_stride)
    return codes.with_tokens(x, codes.level - steps)


@torch.no_grad()
def sample(model: ImageBART, batch: int, cond: AnyCondition = None, grid: tuple[int, int] | None = None,
           seed: int | Sequence[int] = 0, temperature=None, top_k=None, top_p=None, guidance: float = 1.0,
           callback: ProgressCallback | None = None, window_stride: int | None = None) -> Codes:
    """The whole chain from noise: Codes at level 1. Equals random_codes + reverse_step(all) with one seed."""
    batch = validate.as_int(batch, "batch", minimum=1)
    h, w = model.check_grid(grid or model.config.grid)
    guidance = validate.as_float(guidance, "guidance")
    token_filters(model, temperature, top_k, top_p)
    rng.item_seeds(seed, batch)
    model.check_request("sample", (h, w), batch, rows_per_item=rows_per_item(cond, guidance),
                        window_stride=window_stride)
    codes = random_codes(model, batch, (h, w), seed)
    return reverse_step(model, codes, cond, steps=model.n_scales, temperature=temperature, top_k=top_k,
                        top_p=top_p, seed=seed, guidance=guidance, callback=callback, window_stride=window_stride)


@torch.no_grad()
def noise(model: ImageBART, codes: Codes, level: int, seed: int | Sequence[int] = 0) -> Codes:
    """Forward-noise codes to ``level`` (>= codes.level) with q(x_level | x_codes.level) (variations)."""
    model.check_codes(codes)
    level = validate.as_int(level, "level")
    if not codes.level <= level <= model.num_levels:
        raise ValueError(f"can noise codes at level {codes.level} to {codes.level}..{model.num_levels}, not {level}")
    seeds = rng.item_seeds(seed, codes.batch_size)
    model.check_request("noise", codes.grid, codes.batch_size)
    gens = rng.generators(seeds, "noise-to", level)
    x = model.diffusion.sample_between(codes.tokens, codes.level, level, gens)
    return codes.with_tokens(x, level)


@torch.no_grad()
def masked_refine(model: ImageBART, codes: Codes, mask: torch.Tensor, cond: AnyCondition = None,
                  start_level: int | None = None, passes=None, seed: int | Sequence[int] = 0, temperature=None,
                  top_k=None, top_p=None, guidance: float = 1.0, callback: ProgressCallback | None = None,
                  sampler: TokenSampler | None = None, window_stride: int | None = None) -> Codes:
    """Regenerate the masked tokens of clean codes, consistent with the rest (paper Sec. 4.3).

    codes: level-1 Codes of the image. mask: 1 = regenerate (see :func:`token_mask`).
    Unknown tokens start from q(x_start | x_1) (uniform noise at the top level), known tokens stay
    clean at every level. At each level the transition runs ``passes[scale]`` times; between passes
    the state is re-noised with a forward step of decreasing strength ((1 - i/n) * beta), except at
    known positions. Returns level-1 Codes; known tokens equal the input exactly.
    """
    model.check_codes(codes)
    if codes.level != 1:
        raise ValueError(f"masked_refine needs level-1 codes of an image, got level {codes.level}")
    model.check_grid(codes.grid)
    start = model.num_levels if start_level is None else validate.as_int(start_level, "start_level")
    if not 2 <= start <= model.num_levels:
        raise ValueError(f"start_level must be in 2..{model.num_levels}, got {start}")
    n_passes = [validate.as_int(p, "passes") for p in per_scale(model, passes, "refine_passes")]
    if any(p < 1 for p in n_passes):
        raise ValueError("refinement passes must be >= 1")
    filters = token_filters(model, temperature, top_k, top_p)  # settings are refused before any work
    b = codes.batch_size
    regen = token_mask(model, mask, codes)  # [B, h, w] bool
    guidance = validate.as_float(guidance, "guidance")
    seeds = rng.item_seeds(seed, b)
    model.check_request("masked_refine", codes.grid, b, steps=start - 1, passes=max(n_passes),
                        rows_per_item=rows_per_item(cond, guidance), window_stride=window_stride)
    x1 = codes.tokens.to(model.device)
    known_mask = ~regen
    if not bool(regen.any()):
        return codes.with_tokens(x1.clone(), 1)
    cond_plan = _cond_plan(model, cond, b)
    null_tokens = _null_tokens(model, cond_plan[0][0], guidance, b)
    sampler = sampler or PerItemSampler(seeds)
    n = x1.shape[1] * x1.shape[2]
    progress = _Progress(callback, sum(n_passes[s - 1] for s in range(1, start)) * n)
    known = Known(x1.reshape(b, n), known_mask.reshape(b, n))
    x = model.diffusion.sample_between(x1, 1, start, rng.generators(seeds, "refine-start", start))
    x = torch.where(known_mask, x1, x)
    for scale in range(start - 1, 0, -1):
        count = n_passes[scale - 1]
        for i in range(count):
            if i > 0:
                strength = (1.0 - i / count) * float(model.diffusion.betas[scale])
                x = model.diffusion.redraw(x, strength, rng.generators(seeds, "refine-renoise", scale, i))
                x = torch.where(known_mask, x1, x)
            x = _transition(model, scale, x, cond_plan=cond_plan, null_tokens=null_tokens, guidance=guidance,
                            token_filter=filters[scale - 1], sampler=sampler, known=known, progress=progress,
                            sampler_key=("refine", scale, i), window_stride=window_stride)
    return codes.with_tokens(x, 1)
