"""oneDNN-packed weights for batched token steps on CPU.

A token step multiplies a few rows (the batch) by every weight matrix of a scale's decoder. For one row the
default kernels stream the (column-major) weights near the memory bandwidth, but for two or more rows they are
markedly slower than oneDNN's inner-product kernels on weights converted to oneDNN's own layout (full-size
ffhq scales: 0.55-0.6x the step time at batch 2-8 with two threads, no gain at batch 1; see
docs/performance.md). Classifier-free guidance doubles the rows, so guided batch-1 sampling packs too.

:class:`PackedWeights` holds such copies of the matrices one scale's token steps use; it is made by the
scale's ``prepare`` when the batch is large enough (CPU, float32, inference) and shared by every decode state
of that scale, and it is freed with the last of them: the extra memory is one scale's decoding weights, while
that scale runs (``ImageBART.packed_steps = False`` turns packing off where memory is tight). Results agree
with the default kernels to float rounding.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

#: Token steps with at least this many rows use packed weights (one row: the default kernels are as fast).
PACKED_MIN_ROWS = 2

_active = threading.local()


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


def _params_of(linear: nn.Linear) -> tuple[torch.Tensor, ...]:
    """The parameters a packed copy of ``linear`` depends on (weight, and bias if any)."""
    return (linear.weight,) if linear.bias is None else (linear.weight, linear.bias)


class PackedWeights:
    """Packed copies of the matrices a scale's token step uses, keyed by the module that owns each one.

    Use as a context manager around a step: inside it :func:`linear` and :func:`fused_qkv` use the packed
    copies for inputs of at least :data:`PACKED_MIN_ROWS` rows.
    """

    def __init__(self, table: dict[int, PackedLinear]):
        self.table = table

    @classmethod
    def build(cls, modules: Iterable[nn.Module]) -> PackedWeights:
        """Pack every ``nn.Linear`` and every fused q/k/v matrix (an attention with ``fast`` set) in ``modules``."""
        table: dict[int, PackedLinear] = {}
        for m in modules:
            if isinstance(m, nn.Linear):
                table[id(m)] = PackedLinear(m.weight, m.bias, _params_of(m))
            elif getattr(m, "fast", False):  # an Attention whose q/k/v are views of one fused matrix
                sources = _params_of(m.to_q) + _params_of(m.to_k) + _params_of(m.to_v)
                table[id(m)] = PackedLinear(m._qkv_weight, m._qkv_bias, sources)
        return cls(table)

    def valid(self) -> bool:
        """False once any packed parameter was changed in place or replaced (then pack again)."""
        return all(p.valid() for p in self.table.values())

    def __enter__(self) -> PackedWeights:
        self._previous = getattr(_active, "table", None)
        _active.table = self.table
        return self

    def __exit__(self, *exc) -> None:
        _active.table = self._previous


def wanted(rows: int, params: Iterable[torch.Tensor]) -> bool:
    """Packing pays off: enough rows, CPU float32 weights, inference, oneDNN present."""
    if rows < PACKED_MIN_ROWS or torch.is_grad_enabled() or not torch.backends.mkldnn.is_available():
        return False
    first = next(iter(params), None)
    return first is not None and first.device.type == "cpu" and first.dtype == torch.float32


def shared(owner: nn.Module, modules: Iterable[nn.Module]) -> PackedWeights:
    """The packed weights of ``owner`` (a scale): reused while some decode state still holds them and they are
    valid, otherwise packed anew. Freed when the last state that holds them is gone."""
    ref = getattr(owner, "_packed_ref", None)
    packed = ref() if ref is not None else None
    if packed is None or not packed.valid():
        packed = PackedWeights.build(modules)
        owner._packed_ref = weakref.ref(packed)
    return packed


def _lookup(module: nn.Module, x: torch.Tensor) -> PackedLinear | None:
    table = getattr(_active, "table", None)
    if table is None or x.dtype != torch.float32 or x.numel() < PACKED_MIN_ROWS * x.shape[-1]:
        return None
    return table.get(id(module))


def linear(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``, on packed weights inside an active :class:`PackedWeights` with enough rows."""
    packed = _lookup(module, x)
    return packed(x) if packed is not None else module(x)


def fused_qkv(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x [..., D] @ the fused q/k/v matrix of ``attn`` (+ bias) -> [..., 3*H*dh]."""
    packed = _lookup(attn, x)
    return packed(x) if packed is not None else F.linear(x, attn._qkv_weight, attn._qkv_bias)
