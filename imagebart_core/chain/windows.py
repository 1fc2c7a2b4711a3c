"""Window geometry and reuse for grids larger than the trained grid (paper Sec. 4.2).

Every token of a big ``H x W`` grid is written by the scale's network looking at a trained-size
``h x w`` window that contains it: the encoder reads that window of the coarser level (bidirectional)
and the decoder sees the window's already-written tokens of its own level in the window's raster
order, at the positions it was trained with. Windows are roughly centred on the token, snapped to a
stride (so neighbouring tokens share a window and its KV cache) and clamped inside the grid; no
position ever sees more than the model was trained on. The loop that visits them is
:func:`~.transition.run_transition`; a grid of exactly the trained size is its one-window case.

Reuse: the encoder output (and its cross-attention keys/values) of a window is kept while the window can
still be needed (windows are visited band by band, so a band's windows are dropped once the rows move
below it), up to ``cache_bytes`` in all; a window beyond that budget runs its encoder again when it is
revisited (same result, more compute). So memory does not grow with the grid.
"""

from __future__ import annotations


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
    """A quarter window along each axis (at least 1)."""
    return max(1, window[0] // 4), max(1, window[1] // 4)


def check_stride(stride: tuple[int, int], window: tuple[int, int]) -> None:
    """ValueError unless the stride is between 1 and half the window (rounded up) along each axis."""
    h, w = window
    if not (1 <= stride[0] <= (h + 1) // 2 and 1 <= stride[1] <= (w + 1) // 2):
        raise ValueError(f"window stride {stride} must be between 1 and half the window {window}")
