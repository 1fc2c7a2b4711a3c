"""One transition of the reverse chain: level ``scale + 1`` -> level ``scale`` with one scale's network.

Tokens are written in raster order over a grid of any size at least the trained one. Every token is written
by the network looking at a trained-size window that contains it (:func:`~.windows.window_origin`); a grid of
exactly the trained size is the one-window case: the window never changes, the encoder runs once and the
decoder continues from its KV cache token after token. On larger grids (paper Sec. 4.2) a window change
starts a fresh decode state (the encoder output is kept in a :class:`~.windows.WindowCache` while the band of
windows lasts) and feeds the window's already written prefix in one causal pass.

Each token goes through the one :class:`~.sampling.TokenStep` (condition blend, guidance, known tokens,
filtering, the draw). The network's token steps run on the kernels that
:func:`~imagebart_core.fast_decode.step_kernels` makes for the transition (the decode layout, packed weights).
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence

import torch

from .. import fast_decode
from .sampling import Known, TokenFilter, TokenSampler, TokenStep
from .static_step import StaticStepper, check_step_mode, require_compiler, runs_compiled
from .windows import DEFAULT_WINDOW_CACHE_BYTES, WindowCache, check_stride, default_stride, window_origin


def run_transition(
    net: torch.nn.Module,
    x_in: torch.Tensor,
    scale: int,
    *,
    window: tuple[int, int],
    cond_sets: Sequence[torch.Tensor | None],
    token_filter: TokenFilter,
    sampler: TokenSampler,
    weights_at: Callable[[float], Sequence[float]] | None = None,
    null_tokens: torch.Tensor | None = None,
    guidance: float = 1.0,
    known: Known | None = None,
    stride: tuple[int, int] | None = None,
    on_token: Callable[[int, torch.Tensor], None] | None = None,
    sampler_key: object = None,
    cache_bytes: int = DEFAULT_WINDOW_CACHE_BYTES,
    pack: bool = True,
    step_mode: str = "eager",
    compiled: MutableMapping | None = None,
) -> torch.Tensor:
    """Sample level ``scale`` from ``x_in``, the codes of level ``scale + 1``.

    x_in: int64 [B, H, W] with H, W at least the trained ``window`` (h, w). cond_sets: one condition-token
    tensor int64 [B, P] per blended condition (``[None]`` for an unconditional model); ``weights_at(x)``
    gives their weights at the window centre's horizontal fraction x (needed with several sets).
    null_tokens: int64 [B, P] unconditional tokens, used when ``guidance != 1`` (classifier-free guidance).
    known: tokens to reproduce (flattened [B, H*W]). stride: how far windows move (default a quarter window).
    ``on_token(n, out)`` is called after each token with out int64 [B, H*W] (progress, cancel).
    ``sampler_key`` names the transition's random stream (default ``("scale", scale)``).
    ``cache_bytes`` bounds the kept window encoder states (see :class:`~.windows.WindowCache`).
    ``pack``: batched CPU steps may use oneDNN-packed weights (see :func:`~imagebart_core.fast_decode.step_kernels`).
    ``step_mode``: "eager", "static" or "compiled" (see :mod:`.static_step`; on CPU only one-row steps are
    compiled); ``compiled`` keeps compiled steps between calls. Returns int64 [B, H, W].
    """
    b, hh, ww = x_in.shape
    h, w = window
    if hh < h or ww < w:
        raise ValueError(f"grid {hh}x{ww} is smaller than the trained window {h}x{w}")
    stride = stride or default_stride(window)
    check_stride(stride, window)
    one_window = (hh, ww) == (h, w)
    n_total = hh * ww
    n_sets = len(cond_sets)
    if n_sets > 1 and weights_at is None:
        raise ValueError("several condition sets need weights_at")
    guided = guidance != 1.0 and null_tokens is not None
    groups = list(cond_sets) + ([null_tokens] if guided else [])
    rows = len(groups)
    cond_all = None if groups[0] is None else torch.cat(list(groups))  # [rows * B, P]
    if check_step_mode(step_mode) == "compiled" and not runs_compiled(step_mode, x_in.device.type, rows * b):
        step_mode = "eager"  # several rows on CPU: the packed eager kernels beat any compiled step
    if step_mode == "compiled":
        require_compiler(x_in.device.type)  # before any weight is re-laid out for the compiled kernels
        kernels = fast_decode.compiled_step_kernels(net)  # row reductions on CPU, the modules' products elsewhere
    else:
        kernels = fast_decode.step_kernels(net, rows * b, pack=pack)  # the decode layout, once per transition
    static = None if step_mode == "eager" else StaticStepper(net, step_mode, compiled)
    sampler.begin(b, n_total, ("scale", scale) if sampler_key is None else sampler_key)
    out = torch.zeros(b, hh, ww, dtype=torch.long, device=x_in.device)
    flat = out.view(b, n_total)  # [B, H*W], shares out's memory
    token_step = TokenStep(scale=scale, vocab_size=net.cfg.vocab_size, n_sets=n_sets, guided=guided,
                           guidance=guidance, token_filter=token_filter, sampler=sampler, batch=b,
                           device=x_in.device)
    if known is not None:
        known_tokens = known.tokens.to(x_in.device).reshape(b, n_total)
        known_mask = known.mask.to(x_in.device).reshape(b, n_total)
        any_known = known_mask.any(0).tolist()  # per position; one device sync per transition, not per token
    encoded = WindowCache(cache_bytes)
    current, state, next_local, prev, mix = None, None, -1, None, None
    for i in range(hh):
        for j in range(ww):
            n = i * ww + j
            r0, c0 = (0, 0) if one_window else window_origin(i, j, (hh, ww), window, stride)
            m = (i - r0) * w + (j - c0)  # local raster index inside the window
            if (r0, c0) != current or m != next_local:  # a new window, or a jump inside one
                written = out[:, r0 : r0 + h, c0 : c0 + w].reshape(b, h * w)[:, :m].repeat(rows, 1)  # [rows*B, m]
                state = _window_state(net, encoded, x_in, (r0, c0), window, scale, cond_all, rows, one_window,
                                      kernels)
                net.warm(state, written, scale)
                prev = written[:, -1] if m > 0 else None
                if n_sets > 1:
                    centre = (c0 + w / 2.0) / ww
                    mix = torch.tensor(list(weights_at(centre)), dtype=torch.float32, device=x_in.device)
                current = (r0, c0)
            raw = net.step(state, m, prev, scale) if static is None else static(state, m, prev)  # [rows*B, K]
            logits = raw.float().view(rows, b, -1)  # [rows, B, K]
            at = (known_tokens[:, n], known_mask[:, n]) if known is not None and any_known[n] else None
            token = token_step(logits, n, mix, at)  # [B]
            flat[:, n] = token
            prev = token if rows == 1 else token.repeat(rows)  # [rows*B]
            next_local = m + 1
            if on_token is not None:
                on_token(n, flat)
    token_step.finish()
    return out


def _window_state(net, encoded: WindowCache, x_in, origin, window, scale, cond_all, rows, one_window, kernels):
    """A fresh decode state for one window; an encoder runs once per window while the window is cached."""
    r0, c0 = origin
    h, w = window
    b = x_in.shape[0]
    crop = x_in[:, r0 : r0 + h, c0 : c0 + w].reshape(b, h * w).repeat(rows, 1)  # [rows*B, h*w]
    if one_window or not net.keeps_encoder_state:  # never revisited, or nothing worth keeping
        return net.prepare(crop, scale, cond_all, h * w, kernels=kernels)
    kept = encoded.get(origin)
    if kept is None:
        state = net.prepare(crop, scale, cond_all, h * w, kernels=kernels)
        encoded.put(origin, state)
        return state
    return net.fresh_state(kept)
