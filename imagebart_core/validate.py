"""Checks of the values a caller hands to the public API, with errors that name the argument.

One place for the rules, so that every entry point (library calls, nodes, trainers) refuses the same
things with the same words:

* integers (``batch``, ``seed``, ``steps``, ``top_k``, class indices): Python ``int`` or a NumPy integer;
  ``bool`` and floats (even ``3.0``) are refused, since a float count or seed is almost always a mistake;
* real settings (``temperature``, ``guidance``, ``top_p``): ``int`` / ``float`` / NumPy floating, finite;
* images: float in 0..1 (``uint8`` 0..255 accepted and divided by 255), nothing non-finite;
* masks: finite values;
* tensors of weights: finite (:func:`check_finite`).

Every error is a ``ValueError`` (the type the rest of the library raises for bad input).
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Mapping
from typing import Any

import torch


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not torch.is_tensor(value) else f"tensor {tuple(value.shape)}"


def as_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as a Python int (int or NumPy integer; bool and float refused), within [minimum, maximum]."""
    if isinstance(value, bool) or isinstance(value, float) or (torch.is_tensor(value) and value.is_floating_point()):
        raise ValueError(f"{name} must be an integer, got {_kind(value)}")
    try:
        number = operator.index(value)  # int, numpy integers, 0-d integer tensors
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {_kind(value)}") from None
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {number}")
    return int(number)


def as_float(value: Any, name: str) -> float:
    """``value`` as a finite Python float (int / float / NumPy scalar; bool, NaN and inf refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {_kind(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {number}")
    return number


def seeds_for(seed: Any, batch: int, name: str = "seed") -> list[int]:
    """Per-item seeds: ``seed + i`` for one integer, else one integer per item (a list, tuple or array)."""
    if isinstance(seed, (str, bytes)):
        raise ValueError(f"{name} must be an integer or one integer per batch item, got {_kind(seed)}")
    try:
        base = as_int(seed, name)
    except ValueError:
        if isinstance(seed, numbers.Number) or not hasattr(seed, "__iter__"):
            raise
    else:
        return [base + i for i in range(batch)]
    seeds = [as_int(s, f"{name}[{i}]") for i, s in enumerate(seed)]
    if len(seeds) != batch:
        raise ValueError(f"got {len(seeds)} seeds for a batch of {batch}; give one seed or {batch}")
    return seeds


def images_0_1(images: Any, name: str = "images") -> torch.Tensor:
    """Images ``[B, 3, H, W]``: float in 0..1, or uint8 0..255 (divided by 255) -> float32 in 0..1.

    Refused: other integer or bool dtypes, NaN / inf, and float values outside 0..1 (the message says
    what the range looks like: 0..255 or -1..1, and how to convert).
    """
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"{name} must be a float tensor [B, 3, H, W] in 0..1 (or uint8 0..255), got {shape}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise ValueError(f"{name} must be float in 0..1 or uint8 in 0..255, got dtype {images.dtype}")
    x = images.float()
    if x.numel() == 0:
        return x
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contain NaN or inf values; give finite values in 0..1")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        hint = ""
        if lo >= 0.0 and hi <= 255.0:
            hint = " (this looks like 0..255: divide by 255, or pass uint8)"
        elif lo >= -1.0 and hi <= 1.0:
            hint = " (this looks like -1..1: use (x + 1) / 2)"
        raise ValueError(f"{name} must lie in 0..1, got values in [{lo:g}, {hi:g}]{hint}")
    return x


def finite_mask(mask: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """A mask as float32; NaN / inf refused (a NaN would silently mean 'keep')."""
    m = mask.float()
    if m.numel() and not bool(torch.isfinite(m).all()):
        raise ValueError(f"{name} contains NaN or inf values; give values in 0..1 (1 = regenerate)")
    return m


def check_finite(tensors: Mapping[str, torch.Tensor], where: str, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` naming the first floating-point tensor with a NaN or inf value (and how many)."""
    for name, t in tensors.items():
        if not torch.is_tensor(t) or not t.is_floating_point() or t.numel() == 0:
            continue
        if t.device.type == "meta":
            continue
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            raise error(nonfinite_message(where, name, int((~finite).sum()), t.numel()))


def nonfinite_message(where: str, name: str, bad: int, numel: int) -> str:
    """The error text for a tensor ``name`` with ``bad`` of ``numel`` values NaN or inf."""
    return (f"{where}: tensor {name} has {bad} of {numel} values NaN or inf; "
            "the weights are damaged (a diverged training run or a corrupt file)")
