"""Half-size weights on CPUs without kernels for them: products and attention run in float32 (imagebart_core.cpu_matmul)."""

from __future__ import annotations

import pytest
import torch
from _token_steps import decode_logits
from torch.utils._python_dispatch import TorchDispatchMode

from imagebart_core import cpu_matmul, fast_decode, packed
from imagebart_core.config import tiny_config
from imagebart_core.random_init import random_model
from imagebart_core.transformer import PLAIN

PRODUCTS = {"aten.mm", "aten.addmm", "aten.mv", "aten.addmv", "aten.bmm", "aten.baddbmm", "aten.dot", "aten.linear",
            "aten.matmul"}


class ProductDtypes(TorchDispatchMode):
    """Records the dtypes of the operands of every matrix product that runs."""

    def __init__(self):
        super().__init__()
        self.dtypes: list[torch.dtype] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func.overloadpacket) in PRODUCTS:
            self.dtypes += [a.dtype for a in args if isinstance(a, torch.Tensor)]
        return func(*args, **(kwargs or {}))


def products_in(fn) -> set[torch.dtype]:
    with ProductDtypes() as rec:
        fn()
    assert rec.dtypes, "no matrix product ran"
    return set(rec.dtypes)


@pytest.fixture
def no_half_kernels(monkeypatch):
    monkeypatch.setattr(cpu_matmul, "native", lambda dtype: dtype not in cpu_matmul.HALF_DTYPES)


@pytest.fixture
def half_kernels(monkeypatch):
    monkeypatch.setattr(cpu_matmul, "native", lambda dtype: True)


def _operands(rows: int, dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 24, generator=g).to(dtype)
    w = torch.randn(40, 24, generator=g).to(dtype)
    b = torch.randn(40, generator=g).to(dtype)
    return x, w, b


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_several_rows_multiply_in_float32_and_round_back(no_half_kernels, dtype):
    x, w, b = _operands(5, dtype)
    assert products_in(lambda: cpu_matmul.linear(x, w, b)) == {torch.float32}
    y = cpu_matmul.linear(x, w, b)
    assert y.dtype == dtype and y.shape == (5, 40)
    assert torch.equal(y, torch.nn.functional.linear(x.float(), w.float(), b.float()).to(dtype))


def test_one_row_keeps_the_half_matrix_vector_kernel_on_row_major_weights(no_half_kernels):
    x, w, b = _operands(1)
    assert products_in(lambda: cpu_matmul.linear(x, w, b)) == {torch.bfloat16}
    column_major = w.t().contiguous().t()
    assert products_in(lambda: cpu_matmul.linear(x, column_major, b)) == {torch.float32}


def test_native_kernels_and_float32_weights_are_left_alone(half_kernels):
    x, w, b = _operands(5)
    assert products_in(lambda: cpu_matmul.linear(x, w, b)) == {torch.bfloat16}
    xf, wf, bf = (t.float() for t in (x, w, b))
    assert torch.equal(cpu_matmul.linear(xf, wf, bf), torch.nn.functional.linear(xf, wf, bf))


def test_the_transformers_linear_layers_use_it(no_half_kernels):
    model = random_model(tiny_config(n_scales=2, conditioning="class", residual=True), dtype=torch.bfloat16, seed=3)
    layer = model.scales[0].decoder[0].ff.fc1
    assert isinstance(layer, cpu_matmul.Linear)
    x = torch.randn(2, 3, layer.in_features).bfloat16()
    with torch.inference_mode():
        assert products_in(lambda: layer(x)) == {torch.float32}
        assert torch.equal(layer(x), cpu_matmul.linear(x, layer.weight, layer.bias))


@pytest.mark.parametrize("static", [False, True])
def test_steps_without_half_kernels_match_the_plain_steps(monkeypatch, static):
    model = random_model(tiny_config(n_scales=2, conditioning="class", residual=True), dtype=torch.bfloat16, seed=3)
    net = model.scales[0]
    monkeypatch.setattr(cpu_matmul, "native", lambda dtype: True)
    with torch.inference_mode():
        fast_decode.step_kernels(net, rows=2)  # the native layout first: column-major, fused q/k/v
    assert any(not m.weight.is_contiguous() for m in net.modules() if isinstance(m, torch.nn.Linear))
    monkeypatch.setattr(cpu_matmul, "native", lambda dtype: dtype not in cpu_matmul.HALF_DTYPES)
    with torch.inference_mode():
        kernels = fast_decode.step_kernels(net, rows=2)
    assert all(m.weight.is_contiguous() for m in net.modules() if isinstance(m, torch.nn.Linear))
    assert kernels.fused == {} and kernels.cache_dtype(torch.bfloat16) == torch.float32
    # batched steps multiply by float32 packed copies of the step matrices (q/k/v fused), the weights stay bf16
    assert kernels.packed is not None and kernels.packed.dtype == torch.float32
    assert {id(m) for m in net.step_modules()} == set(kernels.packed.table)
    assert all(p.weight.dtype == torch.float32 for p in kernels.packed.table.values())
    assert all(p.dtype == torch.bfloat16 for p in net.parameters())

    rows = []
    real = packed.PackedLinear.__call__
    monkeypatch.setattr(packed.PackedLinear, "__call__", lambda self, x: rows.append(x.dtype) or real(self, x))
    fast, state = decode_logits(model, lambda n: fast_decode.step_kernels(n, rows=2), batch=2, static=static)
    assert rows and set(rows) == {torch.bfloat16}  # bf16 activations in and out
    assert all(c.k.dtype == torch.float32 for c in state.caches)
    assert all(kv[0].dtype == torch.float32 for kv in state.cross_kv)
    plain, plain_state = decode_logits(model, lambda n: PLAIN, batch=2)
    assert plain_state.caches[0].k.dtype == torch.bfloat16
    # bfloat16 activations either way; float32 attention and products round differently, within bf16's precision
    assert (fast - plain).abs().max() <= 0.05 * max(1.0, plain.abs().max().item())


def test_decoder_only_prefix_and_steps_without_half_kernels(no_half_kernels):
    model = random_model(tiny_config(n_scales=2, conditioning="class", residual=True), dtype=torch.bfloat16, seed=3)
    net = model.scales[-1]
    cond = model.class_condition([2, 2]).tokens
    x_in = torch.zeros(2, net.cfg.target_len, dtype=torch.long)
    scale = model.config.n_scales
    with torch.inference_mode():
        state = net.prepare(x_in, scale, cond, kernels=fast_decode.step_kernels(net, rows=2))
        assert state.caches[0].k.dtype == torch.float32
        plain = net.prepare(x_in, scale, cond, kernels=PLAIN)
        logits, ref = net.step(state, 1, x_in[:, 0], scale), net.step(plain, 1, x_in[:, 0], scale)
    assert logits.dtype == torch.bfloat16
    assert (logits.float() - ref.float()).abs().max() <= 0.05 * max(1.0, ref.float().abs().max().item())


def test_unpacked_batched_steps_without_half_kernels_widen_each_product(no_half_kernels):
    model = random_model(tiny_config(n_scales=2, conditioning="class", residual=True), dtype=torch.bfloat16, seed=3)
    with torch.inference_mode():
        kernels = fast_decode.step_kernels(model.scales[0], rows=2, pack=False)
    assert kernels.packed is None and kernels.cache_dtype(torch.bfloat16) == torch.float32
    fast, _ = decode_logits(model, lambda n: fast_decode.step_kernels(n, rows=2, pack=False), batch=2)
    plain, _ = decode_logits(model, lambda n: PLAIN, batch=2)
    assert (fast - plain).abs().max() <= 0.05 * max(1.0, plain.abs().max().item())
