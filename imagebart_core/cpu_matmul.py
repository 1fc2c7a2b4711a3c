"""Matrix products of half-size (bfloat16 / float16) weights on CPUs that have no fast kernels for them.

A bfloat16 or float16 load halves the transformers' memory. Where oneDNN has kernels for that dtype on this CPU
(bfloat16: AVX-512 or AMX, see :func:`native`), products run in it. Elsewhere, notably on AVX2-only CPUs (most
desktop and many server CPUs), PyTorch falls back to a reference GEMM that is many times slower than float32:
on a 2-core AVX2 EPYC (2026-12-05, docs/performance.md), 256 rows times a 752x3008 matrix took 62 ms in bfloat16
on a row-major weight and 497 ms on a column-major one, against 8.9 ms in float32; a scale's encoder ran for
minutes. The one exception is a single row times a row-major matrix, a vectorised matrix-vector kernel that is
faster than float32 (0.24 ms against 0.46 ms): the bytes read halve.

:func:`linear` is ``F.linear`` that, for such weights, multiplies in float32 instead: both operands are widened
for the product, which accumulates in float32 and is rounded back to the input's dtype, as the native kernels do;
the weights stay half-size in memory and only one matrix is widened at a time. :class:`Linear` is ``nn.Linear``
with that product (the transformers are built from it; training under autocast keeps float32 weights and is
unaffected).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .packed import bf16_supported

HALF_DTYPES = (torch.bfloat16, torch.float16)


@functools.cache
def native(dtype: torch.dtype) -> bool:
    """oneDNN has CPU kernels for products in ``dtype`` on this machine (always true for float32/float64)."""
    if dtype not in HALF_DTYPES:
        return True
    if dtype == torch.bfloat16:
        return bf16_supported()
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())


def lacks_kernels(weight: torch.Tensor) -> bool:
    """``weight`` is a bfloat16/float16 CPU tensor that this CPU has no :func:`native` product kernels for."""
    return weight.device.type == "cpu" and weight.dtype in HALF_DTYPES and not native(weight.dtype)


def widens(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`linear` multiplies x [..., in] by ``weight`` [out, in] in float32: weights that
    :func:`lacks_kernels`, unless x is one row and the weight row-major (the fast matrix-vector case)."""
    return lacks_kernels(weight) and (x.numel() != x.shape[-1] or not weight.is_contiguous())


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``: x [..., in] @ weight.T + bias -> [..., out] in x's dtype; in float32
    arithmetic where :func:`widens` says so (result rounded to x's dtype)."""
    if not widens(x, weight):
        return F.linear(x, weight, bias)
    y = F.linear(x.float(), weight.float(), None if bias is None else bias.float())  # [..., out] float32
    return y.to(x.dtype)


class Linear(nn.Linear):
    """``nn.Linear`` whose product is :func:`linear` (same parameters, state dict and initialisation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
