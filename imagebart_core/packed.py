"""oneDNN-packed weights for token steps on CPU.

A token step multiplies a few rows (the batch) by every weight matrix of a scale's decoder. For one float32 row
the default kernels stream the (column-major) weights fastest, but for two or more rows they are markedly slower
than oneDNN's inner-product kernels on weights reordered to oneDNN's own blocked layout
(``torch.ops.mkldnn._reorder_linear_weight`` + ``_linear_pointwise``, the pair PyTorch's own compiler uses on
CPU; 752x3008 matrices, 8 rows, two threads: 0.54 ms against 1.31 ms for the default kernels and 0.82 ms for the
older ``mkldnn_linear`` on an ``to_mkldnn`` copy). Classifier-free guidance doubles the rows, so guided batch-1
sampling packs too. bfloat16 weights are packed for every row count: the default bfloat16 kernels read at a
third of the bandwidth (same matrices, one row, two threads: 0.32 ms packed against 0.88 ms), see
docs/performance.md.

:class:`PackedWeights` holds such copies of the matrices one scale's token steps use; it is made by
:func:`imagebart_core.fast_decode.step_kernels` once per transition when the batch is large enough (CPU,
float32, inference), is held by that transition's decode states and is freed with them: the extra memory is
one scale's decoding weights, while that scale runs (``ImageBART.packed_steps = False`` turns packing off where
memory is tight). Results agree with the default kernels to float rounding.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping

import torch
from torch import nn

#: Token steps with at least this many rows use packed weights (one row: the default kernels are as fast).
PACKED_MIN_ROWS = 2


def tensor_version(t: torch.Tensor) -> int | None:
    """In-place modification counter; None for inference tensors (made under ``torch.inference_mode``, as in
    ComfyUI), which keep none and cannot change outside inference mode: for those only a replaced tensor (new
    data pointer) is detected. Caches of values derived from a tensor key on (data pointer, this)."""
    return None if t.is_inference() else t._version


class PackedLinear:
    """One matrix in oneDNN layout (+ bias), remembering which parameter version it copies; ``dtype`` (default
    the weight's) is the dtype of the copy: float32 copies of half-size weights multiply inputs of any dtype in
    float32 and return the input's dtype."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, sources: tuple[torch.Tensor, ...],
                 rows: int, dtype: torch.dtype | None = None):
        dtype = dtype or weight.dtype
        # [out, in] in oneDNN's blocked layout for about ``rows`` rows per product
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(dtype).contiguous(), rows)
        self.bias = bias.detach().to(dtype).contiguous() if bias is not None else None
        self.out_features = weight.shape[0]
        self.sources = [(t, t.data_ptr(), tensor_version(t)) for t in sources]

    def valid(self) -> bool:
        return all(t.data_ptr() == ptr and tensor_version(t) == version for t, ptr, version in self.sources)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] -> [..., out] in x's dtype (computed in the copy's dtype)."""
        rows = x.reshape(-1, x.shape[-1]).to(self.weight.dtype).contiguous()  # [R, in]
        y = torch.ops.mkldnn._linear_pointwise(rows, self.weight, self.bias, "none", [], "")  # [R, out]
        return y.view(*x.shape[:-1], self.out_features).to(x.dtype)


def params_of(linear: nn.Linear) -> tuple[torch.Tensor, ...]:
    """The parameters a packed copy of ``linear`` depends on (weight, and bias if any)."""
    return (linear.weight,) if linear.bias is None else (linear.weight, linear.bias)


class PackedWeights:
    """Packed copies of the matrices a scale's token step uses, keyed by the id of the module that owns each one
    (an ``nn.Linear``, or an attention whose fused q/k/v matrix is packed)."""

    def __init__(self, table: dict[int, PackedLinear], dtype: torch.dtype | None = None):
        self.table = table
        self.dtype = dtype  # the copies' dtype when it differs from the inputs' (float32 copies of half weights)

    @classmethod
    def build(cls, modules: Iterable[nn.Module],
              fused: Mapping[int, tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, ...]]],
              rows: int, dtype: torch.dtype | None = None) -> PackedWeights:
        """Pack every ``nn.Linear`` in ``modules`` and the fused q/k/v matrix (weight [3*H*dh, D], bias, the
        parameters it is made of) of every attention in ``modules`` that ``fused`` lists by id, for products of
        about ``rows`` rows; copies in ``dtype`` (default: the weights' own)."""
        table: dict[int, PackedLinear] = {}
        for m in modules:
            if isinstance(m, nn.Linear):
                table[id(m)] = PackedLinear(m.weight, m.bias, params_of(m), rows, dtype)
            elif id(m) in fused:
                weight, bias, sources = fused[id(m)]
                table[id(m)] = PackedLinear(weight, bias, sources, rows, dtype)
        return cls(table, dtype)

    def valid(self) -> bool:
        """False once any packed parameter was changed in place or replaced (then pack again)."""
        return all(p.valid() for p in self.table.values())

    def get(self, module: nn.Module, x: torch.Tensor) -> PackedLinear | None:
        """The packed copy of ``module``'s matrix for the input x [..., in], if it has one and x is worth it
        (:func:`rows_wanted`); else None (use the default kernels)."""
        if not rows_wanted(x.numel() // max(x.shape[-1], 1), self.dtype or x.dtype):
            return None
        return self.table.get(id(module))


def rows_wanted(rows: int, dtype: torch.dtype) -> bool:
    """Products of ``rows`` rows in ``dtype`` run faster on packed weights: float32 from
    :data:`PACKED_MIN_ROWS` rows, bfloat16 always (where oneDNN has bfloat16 kernels)."""
    if dtype == torch.float32:
        return rows >= PACKED_MIN_ROWS
    return dtype == torch.bfloat16 and rows >= 1 and bf16_supported()


@functools.cache
def bf16_supported() -> bool:
    """oneDNN has native bfloat16 kernels on this CPU (AVX512-BF16 / AMX, or emulation on AVX-512)."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def wanted(rows: int, params: Iterable[torch.Tensor], dtype: torch.dtype | None = None) -> bool:
    """Packing pays off: rows worth it for the copies' ``dtype`` (default the weights' own; :func:`rows_wanted`),
    CPU weights, inference, oneDNN present."""
    if torch.is_grad_enabled() or not torch.backends.mkldnn.is_available():
        return False
    first = next(iter(params), None)
    return first is not None and first.device.type == "cpu" and rows_wanted(rows, dtype or first.dtype)
