"""Token grids larger than the trained grid: sliding attention windows (paper Sec. 4.2).

Every token of a big ``H x W`` grid is written by the scale's network looking at a trained-size
``h x w`` window that contains it: the encoder reads that window of the coarser level (bidirectional)
and the decoder sees the window's already-written tokens of its own level in the window's raster
order, at the positions it was trained with. Windows are roughly centred on the token, snapped to a
stride (so neighbouring tokens share a window and its KV cache) and clamped inside the grid; no
position ever sees more than the model was trained on.

Reuse: the encoder output (and its cross-attention keys/values) of a window is kept while the window can
still be needed (windows are visited band by band, so a band's windows are dropped once the rows move
below it), up to ``cache_bytes`` in all; a window beyond that budget runs its encoder again when it is
revisited (same result, more compute). So memory does not grow with the grid. While consecutive tokens
stay in one window the decoder continues from its KV cache; on a window change the window's known prefix
is fed in one causal pass. On a grid of exactly the trained size there is one window and the computation
is the same as the normal path's, token for token.

Conditions may vary along the image: a :class:`ConditionBlend` mixes the logits of several conditions
(a product of experts) with weights that depend on the window's horizontal centre, e.g. prompt A on the
left blending into prompt B on the right.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..conditioning import Condition
from ..transformer import SOS_TOKEN, DecoderOnlyScale
from .sampling import Known, ProbabilityCheck, TokenFilter, TokenSampler


@dataclass
class ConditionBlend:
    """Conditions whose influence varies from left to right.

    ``conditions[i]`` dominates at horizontal position ``stops[i]`` (fractions 0..1 of the image width,
    increasing; default evenly spaced, so two conditions go from the left edge to the right edge).
    Between two stops the logits are mixed linearly. All conditions have the same kind.
    """

    conditions: Sequence[Condition]
    stops: Sequence[float] | None = None

    def __post_init__(self):
        if len(self.conditions) < 1:
            raise ValueError("a blend needs at least one condition")
        kinds = {c.kind for c in self.conditions}
        if len(kinds) != 1:
            raise ValueError(f"all blended conditions must be of one kind, got {sorted(kinds)}")
        n = len(self.conditions)
        if self.stops is None:
            self.stops = [i / (n - 1) for i in range(n)] if n > 1 else [0.5]
        if len(self.stops) != n or any(b <= a for a, b in zip(self.stops, self.stops[1:])):
            raise ValueError("stops must give one increasing position per condition")

    @property
    def kind(self) -> str:
        return self.conditions[0].kind

    def weights(self, x: float) -> list[float]:
        """Mixing weights (sum 1) at horizontal fraction ``x`` in 0..1."""
        stops = list(self.stops)
        n = len(stops)
        if n == 1 or x <= stops[0]:
            return [1.0] + [0.0] * (n - 1)
        if x >= stops[-1]:
            return [0.0] * (n - 1) + [1.0]
        out = [0.0] * n
        for i in range(n - 1):
            if stops[i] <= x <= stops[i + 1]:
                f = (x - stops[i]) / (stops[i + 1] - stops[i])
                out[i], out[i + 1] = 1.0 - f, f
                return out
        return out


def window_origin(i: int, j: int, grid: tuple[int, int], window: tuple[int, int], stride: tuple[int, int]):
    """Top-left corner (r0, c0) of the window used for token (i, j).

    Roughly centred (snapped down to ``stride``) and clamped inside the grid; the token always lies inside.
    ``stride`` must be at most half the window (rounded up) along each axis.
    """
    (hh, ww), (h, w), (sh, sw) = grid, window, stride

    def place(pos: int, size: int, total: int, step: int) -> int:
        start = ((pos - size // 2) // step) * step
        return min(max(start, 0), total - size)

    return place(i, h, hh, sh), place(j, w, ww, sw)


#: Default memory for kept window encoder states (per transition); see :class:`WindowCache`.
DEFAULT_WINDOW_CACHE_BYTES = 256 * 2**20


class WindowCache:
    """Encoder states of windows that may be visited again, bounded in bytes.

    Tokens are written in raster order, so windows are visited band by band (one window row ``r0``): every
    window of a band is revisited on each of its rows, and never again once the band is left. The cache
    keeps the current band's windows in visiting order while they fit in ``max_bytes``; the rest are
    recomputed on every visit. Memory is therefore at most ``max_bytes`` whatever the grid.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.states: dict[tuple[int, int], object] = {}
        self.bytes = 0
        self.band: int | None = None

    def get(self, origin: tuple[int, int]):
        if origin[0] != self.band:  # a new band: the previous band's windows are never needed again
            self.states.clear()
            self.bytes, self.band = 0, origin[0]
        return self.states.get(origin)

    def put(self, origin: tuple[int, int], state) -> None:
        size = state_bytes(state)
        if self.bytes + size <= self.max_bytes:
            self.states[origin] = state
            self.bytes += size


def state_bytes(state) -> int:
    """Bytes held by a decode state's tensors (decoder caches and cross-attention keys/values)."""
    total = 0
    for cache in getattr(state, "caches", []):
        total += cache.k.numel() * cache.k.element_size() + cache.v.numel() * cache.v.element_size()
    for k, v in getattr(state, "cross_kv", []):
        total += k.numel() * k.element_size() + v.numel() * v.element_size()
    return total


def default_stride(window: tuple[int, int]) -> tuple[int, int]:
    return max(1, window[0] // 4), max(1, window[1] // 4)


def run_windowed_transition(
    net: torch.nn.Module,
    x_in: torch.Tensor,
    scale: int,
    *,
    window: tuple[int, int],
    cond_sets: Sequence[torch.Tensor | None],
    weights_at: Callable[[float], Sequence[float]],
    token_filter: TokenFilter,
    sampler: TokenSampler,
    null_tokens: torch.Tensor | None = None,
    guidance: float = 1.0,
    known: Known | None = None,
    stride: tuple[int, int] | None = None,
    on_token: Callable[[int, torch.Tensor], None] | None = None,
    on_window: Callable[[tuple[int, int, int, int], int], None] | None = None,
    sampler_key: object = None,
    cache_bytes: int = DEFAULT_WINDOW_CACHE_BYTES,
) -> torch.Tensor:
    """Sample level ``scale`` over a grid of any size >= ``window`` with sliding windows.

    x_in: int64 [B, H, W] (the coarser level). cond_sets: one condition-token tensor [B, P] per blended
    condition (or ``[None]`` for an unconditional model); ``weights_at(x)`` gives their weights at the
    window centre's horizontal fraction x. known: tokens to reproduce (flattened [B, H*W]).
    ``on_window((r0, c0, h, w), m)`` is told every window the network is run on and the local position.
    ``cache_bytes`` bounds the kept window encoder states (see :class:`WindowCache`).
    Returns int64 [B, H, W].
    """
    b, hh, ww = x_in.shape
    h, w = window
    if hh < h or ww < w:
        raise ValueError(f"grid {hh}x{ww} is smaller than the trained window {h}x{w}")
    stride = stride or default_stride(window)
    if not (1 <= stride[0] <= (h + 1) // 2 and 1 <= stride[1] <= (w + 1) // 2):
        raise ValueError(f"window stride {stride} must be between 1 and half the window {window}")
    n_total = hh * ww
    guided = guidance != 1.0 and null_tokens is not None
    groups = list(cond_sets) + ([null_tokens] if guided else [])
    rows = len(groups)
    cond_all = None if groups[0] is None else torch.cat(list(groups))  # [rows * B, P]
    decoder_only = isinstance(net, DecoderOnlyScale)
    sampler.begin(b, n_total, ("scale", scale) if sampler_key is None else sampler_key)
    out = torch.zeros(b, hh, ww, dtype=torch.long, device=x_in.device)
    if known is not None:
        known_tokens = known.tokens.to(x_in.device).view(b, hh, ww)
        known_mask = known.mask.to(x_in.device).view(b, hh, ww)
        forced = torch.full((b, net.cfg.vocab_size), float("-inf"), device=x_in.device)
    encoded = WindowCache(cache_bytes)
    check = ProbabilityCheck(scale, token_filter, guidance, x_in.device)
    current, state, next_local = None, None, -1
    count = 0
    for i in range(hh):
        for j in range(ww):
            r0, c0 = window_origin(i, j, (hh, ww), window, stride)
            m = (i - r0) * w + (j - c0)  # local raster index inside the window
            local = out[:, r0 : r0 + h, c0 : c0 + w].reshape(b, h * w)  # [B, h*w] (a copy)
            if (r0, c0) != current or m != next_local:
                state = _window_state(net, decoder_only, encoded, x_in, (r0, c0), window, scale, cond_all, rows)
                _warm(net, decoder_only, state, local[:, :m].repeat(rows, 1), scale)
                current = (r0, c0)
            if on_window is not None:
                on_window((r0, c0, h, w), m)
            prev = None if m == 0 else local[:, m - 1].repeat(rows)
            logits = net.step(state, m, prev, scale).float().view(rows, b, -1)  # [rows, B, K]
            centre = (c0 + w / 2.0) / ww
            mix = torch.tensor(list(weights_at(centre)), dtype=logits.dtype, device=logits.device)
            n_sets = len(cond_sets)
            combined = (mix[:, None, None] * logits[:n_sets]).sum(0)  # [B, K]
            if guided:
                combined = logits[-1] + guidance * (combined - logits[-1])
            if known is not None:
                row = known_mask[:, i, j]
                if bool(row.any()):
                    one = forced.scatter(1, known_tokens[:, i, j, None], 0.0)
                    combined = torch.where(row[:, None], one, combined)
            probs = torch.softmax(token_filter(combined), dim=-1)
            check(count, logits, combined, probs)
            token = sampler.draw(probs, count)
            if known is not None:
                token = torch.where(known_mask[:, i, j], known_tokens[:, i, j], token)
            out[:, i, j] = token
            next_local = m + 1
            if on_token is not None:
                on_token(count, out.view(b, n_total))
            count += 1
    check.finish()
    return out


def _window_state(net, decoder_only, encoded, x_in, origin, window, scale, cond_all, rows):
    """A fresh decode state for one window; the encoder runs once per window while it is cached."""
    r0, c0 = origin
    h, w = window
    b = x_in.shape[0]
    crop = x_in[:, r0 : r0 + h, c0 : c0 + w].reshape(b, h * w).repeat(rows, 1)  # [rows*B, h*w]
    if decoder_only:
        return net.prepare(crop, scale, cond_all, h * w)
    kept = encoded.get(origin)
    if kept is None:
        state = net.prepare(crop, scale, cond_all, h * w)
        encoded.put(origin, state)
        return state
    return net.fresh_state(kept)


def _warm(net, decoder_only, state, prefix: torch.Tensor, scale: int) -> None:
    """Feed the window's already written tokens ``prefix`` [rows*B, m] so that step(m, prefix[-1]) follows."""
    m = prefix.shape[1]
    if m == 0:
        return
    if decoder_only:  # the condition prefix stands where SOS would be
        net.feed(state, prefix[:, : m - 1], scale)
    else:
        sos = torch.full_like(prefix[:, :1], SOS_TOKEN)
        net.feed(state, torch.cat([sos, prefix[:, : m - 1]], dim=1), scale)
