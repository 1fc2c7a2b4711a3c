"""The CPU token-step kernels of imagebart_core.fast_decode / packed: same numbers as the plain modules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _token_steps import decode_logits

from imagebart_core import fast_decode, packed
from imagebart_core.config import tiny_config
from imagebart_core.random_init import random_model
from imagebart_core.transformer import PLAIN, StepKernels


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("chunks", [2, 3, 4])
@pytest.mark.parametrize("with_bias", [False, True])
def test_chunked_row_equals_linear(chunks, with_bias):
    gen = torch.Generator().manual_seed(chunks)
    weight = torch.randn(96, 40, generator=gen).t().contiguous().t()  # [out, in], column-major
    bias = torch.randn(96, generator=gen) if with_bias else None
    x = torch.randn(1, 1, 40, generator=gen)
    assert fast_decode.chunkable(weight, chunks)
    got = fast_decode.chunked_row(x, weight, bias, chunks)
    assert got.shape == (1, 1, 96)
    torch.testing.assert_close(got, F.linear(x, weight, bias), rtol=1e-6, atol=1e-6)


def test_chunkable_refuses_row_major_and_uneven_blocks():
    w = torch.randn(96, 40)
    assert not fast_decode.chunkable(w, 2)  # row-major
    assert not fast_decode.chunkable(w.t().contiguous().t(), 5)  # 96 outputs do not split in 5


def test_one_query_attention_matches_sdpa_on_cache_slices(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(3, 4, 1, 8, generator=gen)
    cache_k = torch.randn(3, 4, 20, 8, generator=gen)
    cache_v = torch.randn(3, 4, 20, 8, generator=gen)
    k, v = cache_k[:, :, :13], cache_v[:, :, :13]  # what LayerCache.append returns: strided views
    fast = fast_decode.FastKernels({})
    fused_calls = []
    fused = StepKernels.attention
    monkeypatch.setattr(StepKernels, "attention", lambda self, *a, **kw: fused_calls.append(1) or fused(self, *a, **kw))
    got = fast.attention(q, k, v)
    assert not fused_calls, "three rows should run as batched products"
    fast.attention(q[:1], k[:1], v[:1])
    assert fused_calls, "one row should keep the fused kernel (one operator)"
    monkeypatch.undo()
    torch.testing.assert_close(got, F.scaled_dot_product_attention(q, k, v), rtol=1e-5, atol=1e-6)
    # several queries, masks and causal attention keep the fused kernel
    q2 = torch.randn(3, 4, 2, 8, generator=gen)
    torch.testing.assert_close(fast.attention(q2, k, v), PLAIN.attention(q2, k, v))


def _step_logits(model, kernels_for):
    return decode_logits(model, kernels_for)[0]


def test_two_thread_row_products_match_the_plain_step(two_threads):
    model = random_model(tiny_config(n_scales=2, conditioning="class", residual=True), seed=3)
    with torch.inference_mode():
        kernels = fast_decode.step_kernels(model.scales[0], rows=1)
    assert kernels.chunks == 2
    calls = []
    real = fast_decode.chunked_row

    def counting(*args):
        calls.append(1)
        return real(*args)

    fast_decode.chunked_row = counting
    try:
        fast = _step_logits(model, lambda net: fast_decode.step_kernels(net, rows=1))
    finally:
        fast_decode.chunked_row = real
    plain = _step_logits(model, lambda net: PLAIN)
    assert calls, "the one-row products did not run in column blocks"
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not packed.bf16_supported(), reason="oneDNN has no bfloat16 kernels on this CPU")
def test_bfloat16_steps_run_on_packed_weights_for_one_row():
    model = random_model(tiny_config(n_scales=2, conditioning="class", residual=True), dtype=torch.bfloat16, seed=3)
    assert packed.rows_wanted(1, torch.bfloat16) and not packed.rows_wanted(1, torch.float32)
    with torch.inference_mode():
        kernels = fast_decode.step_kernels(model.scales[0], rows=1)
    assert kernels.packed is not None
    rows = []
    real = packed.PackedLinear.__call__
    packed.PackedLinear.__call__ = lambda self, x: rows.append(x.shape[0]) or real(self, x)
    try:
        fast = _step_logits(model, lambda net: fast_decode.step_kernels(net, rows=1))
    finally:
        packed.PackedLinear.__call__ = real
    plain = _step_logits(model, lambda net: PLAIN)
    assert rows and all(r == 1 for r in rows)
    # bfloat16 activations either way; the packed products round differently, within bfloat16's precision
    assert (fast - plain).abs().max() <= 0.05 * max(1.0, plain.abs().max().item())
