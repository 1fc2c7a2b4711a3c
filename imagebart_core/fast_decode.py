"""The runtime step that makes a model fast to sample from: weight layouts and the kernels of the token steps.

The networks (:mod:`~imagebart_core.transformer`, :mod:`~imagebart_core.vqgan`) are pure modules; this module is
the one place that lays their weights out for decoding and builds the kernels their token steps run on. It is
applied explicitly, never as a side effect of a query:

* :func:`step_kernels` (called by :func:`~imagebart_core.chain.transition.run_transition` once per transition,
  and passed to the scale's ``prepare``): q/k/v of every attention become views of one fused [3*H*dh, D] matrix
  (one product per token step instead of three), every other linear weight is stored column-major (streams
  fastest for the few rows of a token step), and with two or more rows on CPU the step matrices get
  oneDNN-packed copies (:mod:`~imagebart_core.packed`); bfloat16/float16 weights on a CPU without kernels for
  them stay row-major with float32 products and key/value caches instead (:func:`row_major_kernels`,
  :mod:`~imagebart_core.cpu_matmul`). The returned :class:`FastKernels` carries all of it; the
  decode states hold it, nothing is attached to the modules. Values, names, shapes and state dict are unchanged;
  the layout is found again from the parameters themselves (no flag to go stale) and re-made after ``.to()`` or
  anything else that replaces them.
* :func:`decoder_layout` (called by ``ImageBART.decode`` on CPU): the VQGAN's convolution weights in channels-last
  memory (faster NHWC convolutions on CPU); ``VQGAN.decode_latents`` follows the weights' layout.
"""

from __future__ import annotations

import torch
from torch import nn

from . import cpu_matmul
from .packed import PackedLinear, PackedWeights, params_of, wanted
from .transformer import PLAIN, Attention, StepKernels

#: (weight [3*H*dh, D] column-major, bias [3*H*dh] or None, the parameters it is made of)
FusedQKV = tuple[torch.Tensor, "torch.Tensor | None", tuple[torch.Tensor, ...]]


class FastKernels(StepKernels):
    """Token-step kernels on the decode layout: fused q/k/v products, and oneDNN-packed copies when given.

    ``fused`` maps id(attention) -> :data:`FusedQKV`; ``packed`` the packed step matrices (or None).
    ``float32_cache``: the decode states keep keys/values in float32 whatever the activations' dtype, and
    attention runs in float32 (see :func:`row_major_kernels`).
    """

    def __init__(self, fused: dict[int, FusedQKV], packed: PackedWeights | None = None, chunks: int = 1,
                 float32_cache: bool = False):
        self.fused = fused
        self.packed = packed
        self.chunks = chunks
        self.float32_cache = float32_cache
        self._unpacked = self if packed is None else FastKernels(fused, chunks=chunks, float32_cache=float32_cache)

    def cache_dtype(self, dtype: torch.dtype) -> torch.dtype:
        return torch.float32 if self.float32_cache else dtype

    def _packed_for(self, module: nn.Module, x: torch.Tensor) -> PackedLinear | None:
        return None if self.packed is None else self.packed.get(module, x)

    def _product(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x [..., in] @ weight.T + bias; one float32 row on a column-major weight runs as :func:`chunked_row`."""
        if self.chunks > 1 and x.numel() == x.shape[-1] and chunkable(weight, self.chunks) and x.dtype == torch.float32:
            return chunked_row(x, weight, bias, self.chunks)
        return cpu_matmul.linear(x, weight, bias)  # F.linear; float32 arithmetic for half weights without kernels

    def linear(self, module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        packed = self._packed_for(module, x)
        return packed(x) if packed is not None else self._product(x, module.weight, module.bias)

    def qkv(self, attn: Attention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fused = self.fused.get(id(attn))
        packed = self._packed_for(attn, x)
        if fused is None and packed is None:
            return super().qkv(attn, x)
        b, n, _ = x.shape
        out = packed(x) if packed is not None else self._product(x, fused[0], fused[1])  # [B, L, 3*H*dh]
        out = out.view(b, n, 3, attn.heads, attn.dim_head).permute(2, 0, 3, 1, 4)  # [3, B, H, L, dh]
        return out[0], out[1], out[2]

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask=None, causal=False) -> torch.Tensor:
        """One query in each of several rows (a batched token step) on CPU: two batched products and a softmax
        (full-size ffhq, 8 rows: about 1.6x faster than ``scaled_dot_product_attention`` in float32 and 2x in
        bfloat16, whose CPU kernel is tiled for long queries); otherwise the default."""
        if k.dtype != q.dtype:  # a float32 cache: attend in float32, return in the activations' dtype
            return self.attention(q.to(k.dtype), k, v, mask=mask, causal=causal).to(q.dtype)
        b, h, lq, d = q.shape
        if b == 1 or lq != 1 or mask is not None or causal or q.device.type != "cpu":
            return super().attention(q, k, v, mask=mask, causal=causal)  # one row: as fast, and one operator
        lk = k.shape[2]
        keys = k.reshape(b * h, lk, d)  # a view for cache slices and contiguous tensors
        scores = torch.bmm(q.reshape(b * h, 1, d) * d**-0.5, keys.transpose(1, 2))  # [B*H, 1, Lk]
        out = torch.bmm(torch.softmax(scores, dim=-1), v.reshape(b * h, lk, d))  # [B*H, 1, dh]
        return out.view(b, h, 1, d)

    @property
    def unpacked(self) -> FastKernels:
        return self._unpacked


def chunkable(weight: torch.Tensor, chunks: int) -> bool:
    """``weight`` [out, in] is column-major (strides (1, out)) and its outputs split into ``chunks`` equal blocks."""
    out_f = weight.shape[0]
    return weight.dim() == 2 and weight.stride() == (1, out_f) and out_f % chunks == 0


def chunked_row(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, chunks: int) -> torch.Tensor:
    """One row times a column-major matrix, its outputs in ``chunks`` blocks computed in parallel.

    x: [..., in] holding one row; weight [out, in] column-major (:func:`chunkable`); bias [out] or None.
    A one-row product runs on one thread in the BLAS; a batched product over ``chunks`` column blocks (views of
    the weight, nothing copied) runs one block per thread (752x3008, two threads: 0.42 ms against 0.74 ms;
    bit-identical results, each output is the same dot product). Returns [..., out].
    """
    out_f, in_f = weight.shape
    width = out_f // chunks
    blocks = weight.as_strided((chunks, in_f, width), (width, out_f, 1))  # [C, in, out/C], block c = W.T[:, c]
    row = x.reshape(1, 1, in_f).expand(chunks, 1, in_f)  # [C, 1, in]
    if bias is None:
        y = torch.bmm(row, blocks)  # [C, 1, out/C]
    else:
        y = torch.baddbmm(bias.view(chunks, 1, width), row, blocks)  # [C, 1, out/C]
    return y.view(*x.shape[:-1], out_f)


def step_kernels(net: nn.Module, rows: int, pack: bool = True) -> StepKernels:
    """Lay ``net`` (one scale) out for token-by-token decoding and return the kernels for its token steps.

    rows: the rows of one token step (batch x condition sets, x2 with guidance); with ``pack`` and at least
    :data:`~imagebart_core.packed.PACKED_MIN_ROWS` rows of CPU float32 the step matrices are packed for oneDNN.
    While training (gradients on and parameters that need them) or on the meta device the weights are left as
    they are and the plain kernels are returned. Idempotent and cheap when the layout is already in place.
    """
    params = list(net.parameters())
    if any(p.device.type == "meta" for p in params):
        return PLAIN
    if training(params):
        return PLAIN
    if cpu_matmul.lacks_kernels(params[0]):
        return row_major_kernels(net, rows, pack)
    fused: dict[int, FusedQKV] = {}
    qkv_linears = set()
    for m in net.modules():
        if isinstance(m, Attention):
            fused[id(m)] = fuse_qkv(m)
            qkv_linears.update(id(lin) for lin in (m.to_q, m.to_k, m.to_v))
    for m in net.modules():
        if isinstance(m, nn.Linear) and id(m) not in qkv_linears:
            column_major(m)
    packed = None
    if pack and wanted(rows, params):
        packed = PackedWeights.build(net.step_modules(), fused, rows)
    chunks = torch.get_num_threads() if rows == 1 and params[0].device.type == "cpu" else 1
    return FastKernels(fused, packed, chunks)


def row_major_kernels(net: nn.Module, rows: int = 1, pack: bool = True) -> FastKernels:
    """The decode layout for half-size CPU weights without native kernels: every linear weight row-major and
    separate q/k/v products, so that one-row products run on the fast matrix-vector kernel and products of
    several rows in float32 (:func:`~imagebart_core.cpu_matmul.linear`); keys/values cached in float32, so that
    attention, whose half-precision CPU kernels are as slow, runs in float32 too (the cache is activations, a
    few MB per row, not weights). Undoes :func:`column_major` and :func:`fuse_qkv` (values unchanged; one matrix
    copied at a time). With ``pack`` and at least :data:`~imagebart_core.packed.PACKED_MIN_ROWS` rows the step
    matrices get oneDNN-packed float32 copies (q/k/v fused), as float32 weights do: batched steps then run at
    float32's speed, for twice the bytes of the running scale's decoding weights while it runs."""
    for m in net.modules():
        if isinstance(m, nn.Linear) and not m.weight.is_contiguous():
            m.weight.data = m.weight.detach().contiguous()
    packed = None
    if pack and wanted(rows, net.parameters(), dtype=torch.float32):
        qkv = {id(m): fused_float32(m) for m in net.step_modules() if isinstance(m, Attention)}
        packed = PackedWeights.build(net.step_modules(), qkv, rows, dtype=torch.float32)
    return FastKernels({}, packed, float32_cache=True)


def fused_float32(attn: Attention) -> FusedQKV:
    """A float32 copy of ``attn``'s q/k/v weights as one [3*H*dh, D] matrix (+ bias), for packing."""
    lins = (attn.to_q, attn.to_k, attn.to_v)
    weight = torch.cat([lin.weight.detach().float() for lin in lins])  # [3*H*dh, D]
    bias = None if attn.to_q.bias is None else torch.cat([lin.bias.detach().float() for lin in lins])
    return weight, bias, qkv_params(attn)


def qkv_params(attn: Attention) -> tuple[torch.Tensor, ...]:
    """The parameters a fused q/k/v matrix of ``attn`` is made of (q's, k's, v's weight and bias)."""
    return sum((params_of(lin) for lin in (attn.to_q, attn.to_k, attn.to_v)), ())


def training(params: list[torch.Tensor]) -> bool:
    """Gradients are on and some of ``params`` need them: the weights keep their layout (see :func:`step_kernels`)."""
    return torch.is_grad_enabled() and any(p.requires_grad for p in params)


class RowReductionKernels(StepKernels):
    """Kernels for a token step compiled by ``torch.compile`` on CPU (``step_mode="compiled"``).

    A one-row product is written as a product and a sum over the inputs, ``(x * W).sum(-1)``, which Inductor
    turns into one vectorised reduction per matrix that streams the row-major weight once (752x3008 float32: about
    0.45 ms on one thread and 0.27-0.32 ms on two, against 0.52-0.58 and 0.39 ms for the best eager kernel; see
    docs/performance.md); several rows keep ``F.linear`` (Inductor's reduction would read the weight once per
    row). A single query attends through two matrix products and a float32 softmax (Inductor keeps the products
    as library calls; the fused CPU attention kernel is tiled for long queries and takes 2-4x as long for one).
    The compiled graph must keep norms and other producers out of the reductions (they would be recomputed for
    every weight element): :data:`COMPILE_OPTIONS`. Eagerly (uncompiled) these kernels are correct but slow.
    """

    def linear(self, module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return row_product(x, module.weight, module.bias)

    def qkv(self, attn: Attention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = (attn.split(row_product(x, lin.weight, lin.bias)) for lin in (attn.to_q, attn.to_k, attn.to_v))
        return q, k, v  # [B, H, L, dh] each

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask=None, causal=False) -> torch.Tensor:
        """q [B,H,1,dh], k/v [B,H,Lk,dh], ``mask`` additive float [1, Lk] or bool [1, Lk] (True = attend) ->
        [B,H,1,dh]; longer queries and causal masks go to the default."""
        if q.shape[2] != 1 or causal:
            return super().attention(q, k, v, mask=mask, causal=causal)
        scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2)).float()  # [B, H, 1, Lk]
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
        weights = torch.softmax(scores, dim=-1).to(v.dtype)  # [B, H, 1, Lk]
        return torch.matmul(weights, v)  # [B, H, 1, dh]


#: Kernels of compiled CPU token steps (stateless; see :class:`RowReductionKernels`).
ROW_REDUCTION = RowReductionKernels()

#: Inductor options for compiling a CPU token step on :data:`ROW_REDUCTION`: store every intermediate instead of
#: recomputing it inside its consumer. By default a layer norm is fused into the weight reduction that follows it
#: and recomputed for each of the weight's elements (752x3008 float32, one thread: 0.69 ms against 0.45 ms per
#: matrix; a residual chain of such layers 1.8 ms against 0.46 ms). One token's intermediates are a few KB.
COMPILE_OPTIONS = {"realize_opcount_threshold": 0}


def row_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x [..., in] @ weight.T + bias for weight [out, in]; one row (``x.numel() == in``) as ``(x * W).sum(-1)``,
    the form Inductor compiles into a streaming reduction (see :class:`RowReductionKernels`). Returns [..., out]."""
    if x.numel() != x.shape[-1]:
        return cpu_matmul.linear(x, weight, bias)
    y = (x.float().unsqueeze(-2) * weight).sum(-1)  # [..., out] float32: only the weight is widened per element
    return (y if bias is None else y + bias).to(x.dtype)


def compiled_step_kernels(net: nn.Module) -> StepKernels:
    """The kernels for a compiled token step of ``net`` (one scale): on CPU, :data:`ROW_REDUCTION` with every
    step matrix stored row-major (contiguous: the reduction reads each output's weights as one run; undoes
    :func:`column_major` and the fused q/k/v views of the eager layout, values unchanged); elsewhere (CUDA, where
    the compiled step is captured as a CUDA graph), while training, or on the meta device, :data:`PLAIN`."""
    params = list(net.parameters())
    if any(p.device.type != "cpu" for p in params):
        return PLAIN
    if training(params):
        return PLAIN
    for m in net.step_modules():
        for lin in (m.to_q, m.to_k, m.to_v) if isinstance(m, Attention) else (m,):
            if isinstance(lin, nn.Linear) and not lin.weight.is_contiguous():
                lin.weight.data = lin.weight.detach().contiguous()
    return ROW_REDUCTION


def fuse_qkv(attn: Attention) -> FusedQKV:
    """Make q/k/v weights of ``attn`` row blocks of one [3*H*dh, D] matrix (the parameters become views of it)
    and return it; when they already are, just find it again.

    The matrix is stored transposed in memory (strides (1, 3*H*dh)), which streams fastest for the few-row
    products of a token step on CPU. Values unchanged; memory-neutral (one matrix is copied at a time).
    """
    lins = (attn.to_q, attn.to_k, attn.to_v)
    sources = qkv_params(attn)
    found = fused_views(attn)
    if found is not None:
        return (*found, sources)
    q = attn.to_q.weight
    inner, dim = q.shape
    weight = torch.empty(dim, 3 * inner, dtype=q.dtype, device=q.device).t()  # [3*inner, D], column-major
    for i, lin in enumerate(lins):
        weight[i * inner : (i + 1) * inner].copy_(lin.weight.detach())
        lin.weight.data = weight[i * inner : (i + 1) * inner]  # [inner, D] view
    bias = None
    if attn.to_q.bias is not None:
        bias = torch.cat([lin.bias.detach() for lin in lins])  # [3*inner]
        for i, lin in enumerate(lins):
            lin.bias.data = bias[i * inner : (i + 1) * inner]
    return weight, bias, sources


def fused_views(attn: Attention) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The fused (weight, bias) that q/k/v of ``attn`` are consecutive views of, or None if they are not."""
    lins = (attn.to_q, attn.to_k, attn.to_v)
    q = attn.to_q.weight
    inner, dim = q.shape
    if q.stride() != (1, 3 * inner):
        return None
    storage = q.untyped_storage().data_ptr()
    for i, lin in enumerate(lins):
        w = lin.weight
        if (w.dtype != q.dtype or w.device != q.device or w.shape != q.shape or w.stride() != q.stride()
                or w.untyped_storage().data_ptr() != storage or w.storage_offset() != q.storage_offset() + i * inner):
            return None
    weight = q.detach().as_strided((3 * inner, dim), (1, 3 * inner))  # [3*inner, D]
    if attn.to_q.bias is None:
        return weight, None
    qb = attn.to_q.bias
    bstorage = qb.untyped_storage().data_ptr()
    for i, lin in enumerate(lins):
        b = lin.bias
        if (b is None or b.stride() != (1,) or b.untyped_storage().data_ptr() != bstorage
                or b.storage_offset() != qb.storage_offset() + i * inner):
            return None
    return weight, qb.detach().as_strided((3 * inner,), (1,))


def column_major(linear: nn.Linear) -> None:
    """Store ``linear.weight`` [out, in] transposed in memory (strides (1, out)); values unchanged.

    A token step's matrix products ``x @ W.T`` then stream W row by row, which on CPUs reads memory markedly
    faster for one row and is no slower for a batch of 8 (``python -m tools.bench``, docs/performance.md).
    """
    w = linear.weight
    if w.dim() == 2 and w.stride() != (1, w.shape[0]):
        w.data = w.detach().t().contiguous().t()


def decoder_layout(vqgan: nn.Module) -> None:
    """Store the convolution weights of ``vqgan``'s decoder path channels-last (faster NHWC convolutions on CPU);
    values unchanged, idempotent. ``VQGAN.decode_latents`` then decodes in channels-last memory."""
    for m in vqgan.decode_modules():
        if isinstance(m, nn.Conv2d) and not m.weight.is_contiguous(memory_format=torch.channels_last):
            m.weight.data = m.weight.detach().contiguous(memory_format=torch.channels_last)
