"""Static-shape token steps (imagebart_core.chain.static_step): the same tokens and logits as the eager step and
as recomputation, on every path; compiled with torch.compile (slow)."""

from __future__ import annotations

import pytest
import torch

from imagebart_core.chain.static_step import STEP_MODES, StaticStepper
from imagebart_core.config import tiny_config
from imagebart_core.fast_decode import ROW_REDUCTION, compiled_step_kernels, step_kernels
from imagebart_core.random_init import random_model
from imagebart_core.transformer import PLAIN, SOS_TOKEN


def _model(conditioning="class", residual=True, n_scales=3, seed=4):
    model = random_model(tiny_config(n_scales=n_scales, conditioning=conditioning, residual=residual), seed=seed)
    if conditioning == "class":
        model.config.conditioning.null_condition = True  # a null class exists: guidance is allowed
    return model


def _with_mode(model, mode, fn):
    before = model.step_mode
    model.step_mode = mode
    try:
        return fn()
    finally:
        model.step_mode = before


@pytest.mark.parametrize("conditioning,residual", [("class", True), ("none", False)])
def test_static_steps_equal_eager_steps_on_every_path(conditioning, residual):
    model = _model(conditioning, residual)
    cond = model.class_condition([0, 3]) if conditioning == "class" else None
    guided = {"guidance": 2.5} if conditioning == "class" else {}
    mask = torch.zeros(2, 32, 32)
    mask[:, 8:24, 4:20] = 1.0

    def run():
        plain = model.sample(2, cond, seed=7, **guided)
        wide = model.sample(2, cond, grid=(4, 7), seed=8, window_stride=1)  # sliding windows, warm prefixes
        refined = model.masked_refine(plain, mask, cond, seed=9, top_k=5)  # known tokens
        return plain.tokens, wide.tokens, refined.tokens

    eager = _with_mode(model, "eager", run)
    static = _with_mode(model, "static", run)
    for a, b in zip(eager, static):
        assert torch.equal(a, b)


def _recomputed_and_static_logits(model, scale, batch=2, kernels=PLAIN, mode="static"):
    """Teacher-forced logits (recomputation over the whole prefix) and static-step logits along the same tokens,
    the static steps run on ``kernels`` (eagerly, or compiled with ``mode="compiled"``)."""
    net = model.scales[scale - 1]
    gen = torch.Generator().manual_seed(scale)
    n = model.config.grid[0] * model.config.grid[1]
    x_in = torch.randint(0, model.config.vocab_size, (batch, n), generator=gen)
    target = torch.randint(0, model.config.vocab_size, (batch, n), generator=gen)
    cond = model.class_condition([1] * batch).tokens
    with torch.inference_mode():
        full = net(x_in, target, scale, cond)  # [B, N, K]
        state = net.prepare(x_in, scale, cond, n, kernels=kernels)
        stepper = StaticStepper(net, mode)
        steps, prev = [], None
        for i in range(n):
            steps.append(stepper(state, i, prev))
            prev = target[:, i]
    return full, torch.stack(steps, dim=1)


@pytest.mark.parametrize("scale", [1, 3])  # encoder-decoder, decoder-only
def test_static_step_logits_match_recomputation(scale):
    model = _model("class", True)
    full, static = _recomputed_and_static_logits(model, scale)
    torch.testing.assert_close(static, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale", [1, 3])
@pytest.mark.parametrize("batch", [1, 2])  # one row: the (x * W).sum(-1) reductions; two: F.linear
def test_row_reduction_kernels_match_recomputation(scale, batch):
    """The kernels of compiled CPU steps, run eagerly: the same logits as recomputation within 1e-5."""
    model = _model("class", True)
    kernels = compiled_step_kernels(model.scales[scale - 1])
    assert kernels is ROW_REDUCTION
    full, static = _recomputed_and_static_logits(model, scale, batch, kernels)
    torch.testing.assert_close(static, full, rtol=1e-5, atol=1e-5)


def test_compiled_step_kernels_store_step_matrices_row_major_with_values_unchanged():
    model = _model("class", True)
    net = model.scales[0]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        step_kernels(net, rows=1)  # the eager layout: fused column-major q/k/v, column-major matrices
        assert not net.decoder[0].ff.fc1.weight.is_contiguous()
        assert compiled_step_kernels(net) is ROW_REDUCTION
    for m in net.step_modules():
        for lin in (m.to_q, m.to_k, m.to_v) if hasattr(m, "to_q") else (m,):
            assert lin.weight.is_contiguous()
    after = net.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    net.requires_grad_(True)  # while training (gradients on) the modules' own products are used
    assert compiled_step_kernels(net) is PLAIN


def test_static_step_keeps_shapes_and_writes_one_position():
    model = _model("class", True)
    net = model.scales[0]
    x_in = torch.randint(0, model.config.vocab_size, (1, 16))
    with torch.inference_mode():
        state = net.prepare(x_in, 1, model.class_condition([2]).tokens, 16, kernels=PLAIN)
        before = [c.k.clone() for c in state.caches]
        sos = torch.full((1,), SOS_TOKEN, dtype=torch.long)
        net.step_at(state, torch.tensor([0]), sos)
    for cache, old in zip(state.caches, before):
        assert cache.k.shape == old.shape
        changed = (cache.k != old).flatten(0, 1).any(dim=-1).any(dim=0)  # [capacity]: positions written
        assert changed.nonzero().flatten().tolist() == [0]


def test_unknown_step_mode_is_refused():
    model = _model("none", False, n_scales=2)
    assert STEP_MODES == ("eager", "static", "compiled")
    model.step_mode = "fast"
    with pytest.raises(ValueError, match="step_mode must be one of"):
        model.sample(1, seed=0)


def test_cpu_compiler_is_inductors_choice_or_none(monkeypatch):
    from torch._inductor import cpp_builder

    from imagebart_core.chain import static_step

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", lambda: "clang++")
    assert static_step.cpu_compiler() == "clang++"

    def none_found():
        raise RuntimeError("no working C++ compiler")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", none_found)
    assert static_step.cpu_compiler() is None


def test_compiled_mode_without_a_compiler_is_refused_before_anything_changes(monkeypatch):
    """No C++ compiler: a clear error naming the fix, raised before the weights are re-laid out or anything
    is compiled; the eager mode still samples."""
    from imagebart_core.chain import static_step

    monkeypatch.setattr(static_step, "cpu_compiler", lambda: None)
    model = _model("class", True, n_scales=2)
    cond = model.class_condition([1])
    eager = model.sample(1, cond, seed=3).tokens
    layout = {name: (p.stride(), p.data_ptr()) for name, p in model.named_parameters()}
    compiled_calls = []
    monkeypatch.setattr(torch, "compile", lambda *a, **k: compiled_calls.append(a) or a[0])
    with pytest.raises(RuntimeError, match="need a C\\+\\+ compiler.*apt install g\\+\\+.*eager step mode"):
        _with_mode(model, "compiled", lambda: model.sample(1, cond, seed=3))
    assert compiled_calls == [] and model.compiled_steps == {}
    assert {name: (p.stride(), p.data_ptr()) for name, p in model.named_parameters()} == layout
    assert torch.equal(model.sample(1, cond, seed=3).tokens, eager)
    # several rows on CPU run eagerly in compiled mode and need no compiler
    guided = _with_mode(model, "compiled", lambda: model.sample(1, cond, seed=3, guidance=2.0).tokens)
    assert torch.equal(guided, model.sample(1, cond, seed=3, guidance=2.0).tokens)


@pytest.mark.slow
def test_compiled_steps_equal_eager_steps():
    pytest.importorskip("torch._inductor")
    model = _model("class", True, n_scales=2)
    cond = model.class_condition([1])
    eager = _with_mode(model, "eager", lambda: model.sample(1, cond, seed=3).tokens)
    compiled = _with_mode(model, "compiled", lambda: model.sample(1, cond, seed=3).tokens)
    assert torch.equal(eager, compiled)
    assert len(model.compiled_steps) == 2  # one compiled step per scale, kept for the next call
    again = _with_mode(model, "compiled", lambda: model.sample(1, cond, seed=3).tokens)
    assert torch.equal(again, eager)


def test_compiled_mode_runs_several_rows_eagerly_on_cpu():
    """Batch 2 or guidance on CPU: the eager packed kernels, nothing compiled, the eager tokens."""
    model = _model("class", True, n_scales=2)
    cond = model.class_condition([1, 2])
    eager = _with_mode(model, "eager", lambda: model.sample(2, cond, seed=3, guidance=2.0).tokens)
    compiled = _with_mode(model, "compiled", lambda: model.sample(2, cond, seed=3, guidance=2.0).tokens)
    assert torch.equal(eager, compiled)
    assert model.compiled_steps == {}


@pytest.mark.slow
@pytest.mark.parametrize("scale", [1, 3])
def test_compiled_one_row_steps_match_recomputation_and_eager_tokens(scale):
    """Batch 1 without guidance: one row per step, the path where the compiled step runs the row reductions."""
    pytest.importorskip("torch._inductor")
    model = _model("class", True)
    full, compiled = _recomputed_and_static_logits(model, scale, 1, compiled_step_kernels(model.scales[scale - 1]),
                                                   mode="compiled")
    torch.testing.assert_close(compiled, full, rtol=1e-5, atol=1e-5)
    cond = model.class_condition([3])
    eager = _with_mode(model, "eager", lambda: model.sample(1, cond, seed=5).tokens)
    compiled_tokens = _with_mode(model, "compiled", lambda: model.sample(1, cond, seed=5).tokens)
    assert torch.equal(eager, compiled_tokens)
