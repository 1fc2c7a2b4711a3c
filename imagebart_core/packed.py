"""oneDNN-packed weights for batched token steps on CPU.

A token step multiplies a few rows (the batch) by every weight matrix of a scale's decoder. For one row the
default kernels stream the (column-major) weights near the memory bandwidth, but for two or more rows they are
markedly slower than oneDNN's inner-product kernels on weights converted to oneDNN's own layout (full-size
ffhq scales: 0.55-0.6x the step time at batch 2-8 with two threads, no gain at batch 1; see
docs/performance.md). Classifier-free guidance doubles the rows, so guided batch-1 sampling packs too.

:class:`PackedWeights` holds such copies of the matrices one scale's token steps use; it is made by
:func:`imagebart_core.fast_decode.step_kernels` once per transition when the batch is large enough (CPU,
float32, inference), is held by that transition's decode states and is freed with them: the extra memory is
one scale's decoding weights, while that scale runs (``ImageBART.packed_steps = False`` turns packing off where
memory is tight). Results agree with the default kernels to float rounding.
"""

from __future__ import annotations

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
    """One matrix in oneDNN layout (+ bias), remembering which parameter version it copies."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, sources: tuple[torch.Tensor, ...]):
        self.weight = weight.detach().contiguous().to_mkldnn()  # [out, in]
        self.bias = bias.detach().contiguous().to_mkldnn() if bias is not None else None
        self.out_features = weight.shape[0]
        self.sources = [(t, t.data_ptr(), tensor_version(t)) for t in sources]

    def valid(self) -> bool:
        return all(t.data_ptr() == ptr and tensor_version(t) == version for t, ptr, version in self.sources)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] float32 -> [..., out]."""
        rows = x.reshape(-1, x.shape[-1]).contiguous()  # [R, in]
        y = torch._C._nn.mkldnn_linear(rows.to_mkldnn(), self.weight, self.bias).to_dense()  # [R, out]
        return y.view(*x.shape[:-1], self.out_features)


def params_of(linear: nn.Linear) -> tuple[torch.Tensor, ...]:
    """The parameters a packed copy of ``linear`` depends on (weight, and bias if any)."""
    return (linear.weight,) if linear.bias is None else (linear.weight, linear.bias)


class PackedWeights:
    """Packed copies of the matrices a scale's token step uses, keyed by the id of the module that owns each one
    (an ``nn.Linear``, or an attention whose fused q/k/v matrix is packed)."""

    def __init__(self, table: dict[int, PackedLinear]):
        self.table = table

    @classmethod
    def build(cls, modules: Iterable[nn.Module],
              fused: Mapping[int, tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, ...]]]) -> PackedWeights:
        """Pack every ``nn.Linear`` in ``modules`` and the fused q/k/v matrix (weight [3*H*dh, D], bias, the
        parameters it is made of) of every attention in ``modules`` that ``fused`` lists by id."""
        table: dict[int, PackedLinear] = {}
        for m in modules:
            if isinstance(m, nn.Linear):
                table[id(m)] = PackedLinear(m.weight, m.bias, params_of(m))
            elif id(m) in fused:
                weight, bias, sources = fused[id(m)]
                table[id(m)] = PackedLinear(weight, bias, sources)
        return cls(table)

    def valid(self) -> bool:
        """False once any packed parameter was changed in place or replaced (then pack again)."""
        return all(p.valid() for p in self.table.values())

    def get(self, module: nn.Module, x: torch.Tensor) -> PackedLinear | None:
        """The packed copy of ``module``'s matrix for the input x [..., in], if it has one and x has at least
        :data:`PACKED_MIN_ROWS` float32 rows; else None (use the default kernels)."""
        if x.dtype != torch.float32 or x.numel() < PACKED_MIN_ROWS * x.shape[-1]:
            return None
        return self.table.get(id(module))


def wanted(rows: int, params: Iterable[torch.Tensor]) -> bool:
    """Packing pays off: enough rows, CPU float32 weights, inference, oneDNN present."""
    if rows < PACKED_MIN_ROWS or torch.is_grad_enabled() or not torch.backends.mkldnn.is_available():
        return False
    first = next(iter(params), None)
    return first is not None and first.device.type == "cpu" and first.dtype == torch.float32
