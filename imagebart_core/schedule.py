"""The noise schedule maths, once: betas per level, float32 like the original code.

``betas[l - 1]`` belongs to level ``l`` (``betas[0] = 0`` for the clean codes, ``betas[T - 1] = 1`` for uniform
noise); ``alpha_l = 1 - beta_l`` and ``abar_l = prod_{m<=l} alpha_m``. Used by the diffusion
(:class:`~imagebart_core.diffusion.MultinomialDiffusion`), the model and the trainer (:func:`residual_alpha`),
the tiny test configs, the released presets and the converter (geometric schedules). The original release's
metric-curve pickles and ``alphacum:`` strings are read by ``original/schedule.py``, which reproduces the
original's float64 arithmetic bit for bit for converted models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def geometric_betas(n_scales: int) -> list[float]:
    """The original "geometric" schedule: beta_s = 1 / (S - s + 1), so the last beta is 1."""
    if n_scales < 1:
        raise ValueError("n_scales must be >= 1")
    tail = 1.0 / torch.arange(n_scales, 0, -1, dtype=torch.float32)
    return [0.0] + tail.tolist()


def betas_from_alpha_bar(alpha_bar: Sequence[float]) -> list[float]:
    """Betas from an explicit alpha-bar list ``[1, abar_2, ..., 0]`` (one entry per level)."""
    abar = torch.tensor(list(alpha_bar), dtype=torch.float32)
    if abar.ndim != 1 or abar.numel() < 2:
        raise ValueError("alpha_bar needs at least two entries (levels 1 and T)")
    if abar[0] != 1.0 or abar[-1] != 0.0:
        raise ValueError("alpha_bar must start at 1 (clean codes) and end at 0 (uniform noise)")
    if bool((abar[1:] > abar[:-1]).any()):
        raise ValueError("alpha_bar must not increase along the chain")
    beta = 1.0 - abar[1:] / abar[:-1]
    beta = torch.nan_to_num(beta, nan=1.0)  # 0/0 after the chain already reached noise
    return [0.0] + beta.tolist()


def betas_from_metric_curve(alpha_bar_grid: Sequence[float], metric: Sequence[float], n_scales: int) -> list[float]:
    """The original "custom" schedules: equal steps of an image-quality metric.

    ``metric[i]`` is the metric (e.g. perceptual distance) measured after corrupting codes to
    ``alpha_bar_grid[i]``. The chain's ``n_scales + 1`` alpha-bars are where the piecewise-linear
    metric curve crosses ``n_scales + 1`` values equally spaced between its minimum and maximum.
    """
    grid = np.asarray(alpha_bar_grid, dtype=np.float64)
    values = np.asarray(metric, dtype=np.float64)
    if grid.shape != values.shape or grid.ndim != 1:
        raise ValueError("alpha_bar_grid and metric must be 1-D of the same length")
    targets = np.linspace(values.min(), values.max(), n_scales + 1)
    abar = []
    for target in targets:
        abar.append(_first_crossing(grid, values, target))
    abar[0], abar[-1] = 1.0, 0.0
    return betas_from_alpha_bar(np.asarray(abar, dtype=np.float32).tolist())


def _first_crossing(grid: np.ndarray, values: np.ndarray, target: float) -> float:
    """alpha-bar where the polyline (grid, values) first reaches ``target`` (linear interpolation)."""
    for i in range(len(values) - 1):
        lo, hi = values[i], values[i + 1]
        if min(lo, hi) <= target <= max(lo, hi):
            if hi == lo:
                return float(grid[i])
            w = (target - lo) / (hi - lo)
            return float(grid[i] + w * (grid[i + 1] - grid[i]))
    return float(grid[int(np.argmin(np.abs(values - target)))])


def residual_alpha(betas: Sequence[float], scale: int) -> float:
    """alpha_s = 1 - beta_s of the step into level s + 1, in float32 like all schedule arithmetic (equal to
    ``MultinomialDiffusion(betas, K).alphas[s]``): the weight of the input token in scale s's residual term.
    Every place that builds a scale (model, loader, random init, trainer) takes it from here."""
    return float(1.0 - torch.tensor(float(betas[scale]), dtype=torch.float32, device="cpu"))  # cpu: also under meta
