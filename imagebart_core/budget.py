"""How much memory and time a request will take, known before any work starts.

:func:`estimate_request` computes, from the model's config alone (no tensor is allocated, so it answers
in microseconds even for absurd sizes), the peak memory a call needs *beyond the model's own weights*
and a rough running time on a device. :func:`check_request` compares it with what the device has and
raises :class:`RequestTooLarge` (a ``ValueError``) with the estimate and the largest grid that fits.
Every public :class:`~imagebart_core.ImageBART` method that does real work calls it first.

Memory (bytes) counts, for the biggest transition of the chain:

* the token grids a call holds (input, output, known tokens and mask, the per-item uniforms of the draws,
  the progress copy): ``TOKEN_BYTES`` per token per batch item;
* one decode state: every decoder layer's self-attention keys/values and cross-attention keys/values, for
  ``rows`` = batch x (conditions + 1 with guidance) sequences of one trained-size window;
* the largest transient of a full pass (the encoder, or a window's causal prefix feed): activations and,
  where a mask makes attention materialise its scores, the score matrix;
* on grids larger than the trained one, the kept window states (at most the window cache budget,
  :data:`~imagebart_core.chain.windows.DEFAULT_WINDOW_CACHE_BYTES`);
* on the CPU with two or more rows, the packed copy of one scale's step weights;
* for ``encode`` / ``decode``: the image and the VQGAN's activations at full resolution, and for encode
  the nearest-code distance matrix.

Time is a rough figure (expect a factor of 2-3 either way) from a per-device profile
(:data:`DEVICE_PROFILES`): a token step is bound by reading the step weights (memory bandwidth), by its
arithmetic, and by a fixed per-layer overhead; each window change on a large grid costs an encoder pass
and a causal prefix pass. It is meant to tell minutes from days, not to time a benchmark.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from .chain.windows import DEFAULT_WINDOW_CACHE_BYTES, default_stride
from .config import DECODER_ONLY, ModelConfig, TransformerConfig

#: Bytes per token per batch item of the grids a chain call holds (int64 in, out, known, uniforms (float64),
#: the progress copy, a bool mask and the noise draws).
TOKEN_BYTES = 56
#: Only this fraction of the available memory is planned for (the rest is headroom for the allocator).
FIT_FRACTION = 0.9
#: Requests estimated to run longer than this are refused by default (``max_seconds=None`` lifts it).
DEFAULT_MAX_SECONDS = 24 * 3600.0

OPERATIONS = ("sample", "reverse_step", "masked_refine", "noise", "random_codes", "encode", "decode")


@dataclass(frozen=True)
class DeviceProfile:
    """Throughput figures for the time estimate (deliberately round numbers)."""

    bandwidth: float  # bytes/s for reading weights in a token step
    flops: float  # multiply-adds x 2 per second in large batched passes
    layer_overhead: float  # seconds per layer per token step (kernel launches, Python)
    token_overhead: float  # seconds per token step outside the layers (sampling, bookkeeping)
    pass_overhead: float  # seconds per layer of a full pass (a window change: encoder + prefix feed)


#: CPU: calibrated against docs/performance.md (ffhq / cin on CPU: 13 ms per encoder-decoder token step, 0.45 s
#: per encoder pass) and a busy 2-core machine (tiny and demo models: 3-4 ms per token step, 20-35 ms per window
#: change). The accelerator figures are round guesses of the same kind.
DEVICE_PROFILES: dict[str, DeviceProfile] = {
    "cpu": DeviceProfile(bandwidth=20e9, flops=100e9, layer_overhead=0.3e-3, token_overhead=1.5e-3,
                         pass_overhead=3e-3),
    "cuda": DeviceProfile(bandwidth=500e9, flops=20e12, layer_overhead=0.1e-3, token_overhead=1e-3,
                          pass_overhead=0.3e-3),
    "mps": DeviceProfile(bandwidth=100e9, flops=3e12, layer_overhead=0.2e-3, token_overhead=1.5e-3,
                         pass_overhead=0.6e-3),
}


class RequestTooLarge(ValueError):
    """A request the device cannot serve (memory, or time beyond the limit); the message gives the estimate
    and the largest grid that fits. ``estimate`` holds the :class:`RequestEstimate`."""

    def __init__(self, message: str, estimate: RequestEstimate):
        super().__init__(message)
        self.estimate = estimate


@dataclass(frozen=True)
class RequestEstimate:
    """What one call will need. ``peak_bytes`` excludes the model's weights; ``seconds`` is rough."""

    grid: tuple[int, int]
    batch: int
    operation: str
    device: str
    dtype: str
    peak_bytes: int
    seconds: float
    tokens: int  # token steps the call takes (0 for operations without a chain)

    def describe(self) -> str:
        """Short human text, e.g. ``"about 3.8 GB and 40 min on cpu"``."""
        return f"about {format_bytes(self.peak_bytes)} and {format_seconds(self.seconds)} on {self.device}"


def format_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def format_seconds(s: float) -> str:
    if s < 1:
        return "under a second"
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if s >= size:
            return f"{s / size:.1f} {unit}" if s < 10 * size else f"{s / size:.0f} {unit}"
    return f"{s:.0f} s"


# -- the estimate ------------------------------------------------------------------------------------------------
def _config(model) -> ModelConfig:
    return model if isinstance(model, ModelConfig) else model.config


def _device_of(model, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    if isinstance(model, ModelConfig):
        return torch.device("cpu")
    offload = getattr(model, "_offload", None)
    return offload[1] if offload is not None else model.device


def _dtype_of(model, dtype) -> torch.dtype:
    if dtype is not None:
        return dtype
    if isinstance(model, ModelConfig) or len(model.scales) == 0:
        return torch.float32
    return next(model.scales[0].parameters()).dtype


def _attn_width(sc: TransformerConfig) -> int:
    return sc.heads * sc.dim_head


def _layer_params(sc: TransformerConfig, cross: bool) -> int:
    a, d = _attn_width(sc), sc.dim
    return 4 * a * d * (2 if cross else 1) + 2 * sc.ff_mult * d * d


def _step_params(sc: TransformerConfig) -> int:
    """Weights one token step multiplies by."""
    a, d = _attn_width(sc), sc.dim
    if sc.kind == DECODER_ONLY:
        return sc.depth * _layer_params(sc, cross=False) + d * sc.vocab_size
    return sc.decoder_depth * (4 * a * d + 2 * a * d + 2 * sc.ff_mult * d * d) + d * sc.vocab_size


def _pass_params(sc: TransformerConfig) -> int:
    """Weights of a full (encoder + decoder) pass."""
    if sc.kind == DECODER_ONLY:
        return sc.depth * _layer_params(sc, cross=False)
    return sc.depth * _layer_params(sc, cross=False) + sc.decoder_depth * _layer_params(sc, cross=True)


def _transition_bytes(sc: TransformerConfig, prefix: int, rows: int, window: int, elt: int,
                      windows_kept: int, device: torch.device) -> int:
    """Peak bytes of one transition beyond the token grids (one trained-size window of ``window`` tokens)."""
    a, d = _attn_width(sc), sc.dim
    if sc.kind == DECODER_ONLY:
        layers = sc.depth
        state = layers * 2 * rows * a * (prefix + window) * elt
    else:
        layers = sc.decoder_depth
        state = layers * 2 * rows * a * (window + (window + prefix)) * elt
    length = window + prefix
    activations = rows * length * d * (3 + sc.ff_mult) * elt
    scores = 2 * rows * sc.heads * length * length * elt  # masked (causal prefix) passes materialise them
    transient = activations + scores
    kept = min(windows_kept * state, DEFAULT_WINDOW_CACHE_BYTES) if windows_kept else 0
    packed = _step_params(sc) * elt if device.type == "cpu" and rows >= 2 else 0
    logits = 6 * rows * sc.vocab_size * 4
    return state + transient + kept + packed + logits


def _vqgan_bytes(cfg: ModelConfig, grid: tuple[int, int], batch: int, encode: bool) -> int:
    vq = cfg.vqgan
    f = vq.factor
    pixels = grid[0] * grid[1] * f * f
    widest = max(vq.base_channels * m * pixels // (4 ** i) for i, m in enumerate(vq.channel_mult))
    image = 2 * 3 * pixels * 4
    activations = 4 * widest * 4  # input, output, residual and a normalised copy of the widest level
    total = batch * (image + activations)
    if encode:
        total += batch * grid[0] * grid[1] * (vq.n_embed * 4 * 2 + 64)  # distances + argmin bookkeeping
    return total


def _vqgan_flops(cfg: ModelConfig, grid: tuple[int, int], batch: int) -> float:
    vq = cfg.vqgan
    pixels = grid[0] * grid[1] * vq.factor ** 2
    total = 0.0
    for i, m in enumerate(vq.channel_mult):
        c = vq.base_channels * m
        total += 2 * 9 * c * c * (2 * vq.num_res_blocks + 2) * pixels / (4 ** i)
    return batch * total


def estimate_request(model, *, grid, batch, device=None, dtype=None, operation: str = "sample",
                     steps: int | None = None, rows_per_item: int = 1, passes: int = 1,
                     window_stride: int | None = None) -> RequestEstimate:
    """Memory and time of one call, from the config alone (nothing is allocated).

    model: an :class:`~imagebart_core.ImageBART` or a :class:`~imagebart_core.ModelConfig`.
    grid: (h, w) tokens; batch: items. device / dtype: where the transformers run (default: the model's).
    operation: one of :data:`OPERATIONS`. steps: transitions taken (default all scales).
    rows_per_item: sequences per item (conditions of a blend, plus one with guidance).
    passes: transitions per level (masked refinement). Sizes are plain ints; any size is accepted here.
    """
    if operation not in OPERATIONS:
        raise ValueError(f"operation must be one of {OPERATIONS}, got {operation!r}")
    cfg = _config(model)
    dev = _device_of(model, device)
    dt = _dtype_of(model, dtype)
    elt = torch.empty((), dtype=dt).element_size()
    h, w = int(grid[0]), int(grid[1])
    b = int(batch)
    n = h * w
    th, tw = cfg.grid
    window = th * tw
    profile = DEVICE_PROFILES.get(dev.type, DEVICE_PROFILES["cuda"])
    prefix = 1 + cfg.conditioning.prefix_length
    peak = 0
    seconds = 0.0
    tokens = 0
    if operation in ("random_codes", "noise"):
        peak = b * n * 8 * 4  # per-item draws, their stack, the result (and the uniforms of the redraw)
        seconds = b * n * 20e-9
    elif operation in ("encode", "decode"):
        peak = _vqgan_bytes(cfg, (h, w), b, operation == "encode")
        seconds = _vqgan_flops(cfg, (h, w), b) / profile.flops * (2 if dev.type == "cpu" else 1)
    else:
        rows = b * max(1, int(rows_per_item))
        windowed = (h, w) != (th, tw) or rows_per_item > 1
        sw = default_stride((th, tw))[1] if window_stride is None else max(1, int(window_stride))
        kept = (math.ceil(max(0, w - tw) / sw) + 1) if windowed else 0
        changes = h * math.ceil(w / sw) if windowed else 1  # window changes per transition (about)
        n_steps = max(1, min(cfg.n_scales, cfg.n_scales if steps is None else int(steps)))
        scales = range(cfg.n_scales, cfg.n_scales - n_steps, -1)  # the top ones (the costliest, usually)
        grid_bytes = b * n * TOKEN_BYTES + (b * n * 16 if operation != "reverse_step" else 0)
        worst = 0
        for s in scales:
            sc = cfg.scales[s - 1]
            worst = max(worst, _transition_bytes(sc, prefix, rows, window, elt, kept, dev))
            layers = sc.depth if sc.kind == DECODER_ONLY else sc.decoder_depth
            step = max(_step_params(sc) * elt / profile.bandwidth, 2 * _step_params(sc) * rows / profile.flops)
            per_token = step + layers * profile.layer_overhead + profile.token_overhead
            all_layers = sc.depth + (0 if sc.kind == DECODER_ONLY else sc.decoder_depth)
            full_pass = 2 * _pass_params(sc) * rows * (window + prefix) / profile.flops + all_layers * profile.pass_overhead
            seconds += passes * (n * per_token + changes * full_pass)
            tokens += passes * n
        peak = grid_bytes + worst
    return RequestEstimate(grid=(h, w), batch=b, operation=operation, device=dev.type,
                           dtype=str(dt).replace("torch.", ""), peak_bytes=int(peak), seconds=float(seconds),
                           tokens=int(tokens))


# -- what the device has ------------------------------------------------------------------------------------------
def available_memory(device: torch.device | str) -> int | None:
    """Bytes free on ``device`` now: MemAvailable for the CPU, the free memory of a CUDA device, else None."""
    dev = torch.device(device)
    if dev.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    if dev.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(dev)
        return int(free)
    return None


def check_request(model, *, grid, batch, device=None, dtype=None, available_bytes: int | None = None,
                  max_seconds: float | None = DEFAULT_MAX_SECONDS, **kwargs) -> RequestEstimate:
    """:func:`estimate_request`, then raise :class:`RequestTooLarge` if it needs more than ``FIT_FRACTION`` of
    ``available_bytes`` (default: what the device has free now) or longer than ``max_seconds`` (None: no limit).

    The message gives the estimate, what is available and the largest grid (same aspect, same batch) that
    fits. Returns the estimate when the request fits.
    """
    est = estimate_request(model, grid=grid, batch=batch, device=device, dtype=dtype, **kwargs)
    avail = available_memory(_device_of(model, device)) if available_bytes is None else int(available_bytes)
    too_big = avail is not None and est.peak_bytes > FIT_FRACTION * avail
    too_long = max_seconds is not None and est.seconds > max_seconds
    if not (too_big or too_long):
        return est

    def fits(g: tuple[int, int]) -> bool:
        e = estimate_request(model, grid=g, batch=batch, device=device, dtype=dtype, **kwargs)
        return (avail is None or e.peak_bytes <= FIT_FRACTION * avail) and (max_seconds is None or e.seconds <= max_seconds)

    reasons = []
    if too_big:
        reasons.append(f"only {format_bytes(FIT_FRACTION * avail)} of memory is usable on {est.device}")
    if too_long:
        reasons.append(f"the limit is {format_seconds(max_seconds)} (max_seconds)")
    best = largest_fitting_grid(_config(model), est.grid, fits, est.operation)
    if best is None:
        advice = "even the smallest grid does not fit: use a smaller batch"
        if est.batch > 1:
            advice += f" (now {est.batch})"
    else:
        f = _config(model).vqgan.factor
        advice = f"the largest grid that fits is {best[0]}x{best[1]} tokens ({best[0] * f}x{best[1] * f} px)"
    op = est.operation.replace("_", " ")
    raise RequestTooLarge(
        f"{op} of a {est.grid[0]}x{est.grid[1]} grid, batch {est.batch}, needs {est.describe()} "
        f"({est.dtype}); {' and '.join(reasons)}. Refused before starting: {advice}.", est)


def largest_fitting_grid(cfg: ModelConfig, grid: tuple[int, int], fits, operation: str) -> tuple[int, int] | None:
    """The largest grid with ``grid``'s aspect ratio (at least the trained grid for chain operations) for
    which ``fits(grid)`` holds, by bisection on the height; None if the smallest does not fit."""
    h, w = grid
    chain = operation not in ("encode", "decode")
    min_h, min_w = cfg.grid if chain else (1, 1)

    def at(height: int) -> tuple[int, int]:
        return height, max(min_w, min(w, (w * height) // max(h, 1)))

    lo, hi = min(min_h, h), h
    if not fits(at(lo)):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(at(mid)):
            lo = mid
        else:
            hi = mid - 1
    return at(lo)
