"""Sliding-window sampling and editing on grids larger than the trained one."""

from __future__ import annotations

import pytest
import torch
from test_fast_path import reference_transition

import imagebart_core as ib
from imagebart_core.chain.sampling import Known, PerItemSampler, TokenFilter
from imagebart_core.chain.transition import run_transition
from imagebart_core.chain.windows import window_origin
from imagebart_core.conditioning import ConditionBlend


@pytest.fixture(scope="module")
def model():
    return ib.build_model(ib.tiny_config(n_scales=2, residual=True), seed=11)


@pytest.fixture(scope="module")
def text_model():
    return ib.build_model(ib.tiny_config(n_scales=2, conditioning="text"), seed=12)


def test_window_origin_keeps_the_token_inside_a_trained_size_window():
    for grid in [(4, 12), (9, 13), (4, 4)]:
        for stride in [(1, 1), (2, 2)]:
            for i in range(grid[0]):
                for j in range(grid[1]):
                    r0, c0 = window_origin(i, j, grid, (4, 4), stride)
                    assert 0 <= r0 <= grid[0] - 4 and 0 <= c0 <= grid[1] - 4
                    assert r0 <= i < r0 + 4 and c0 <= j < c0 + 4


def spy_on(net, seen):
    """Record the input lengths and positions the network is run on."""
    original_prepare, original_feed, original_step = net.prepare, net.feed, net.step

    def prepare(x_in, scale, cond_tokens=None, n_tokens=None, **kwargs):
        seen.append(("input", x_in.shape[1]))
        return original_prepare(x_in, scale, cond_tokens, n_tokens, **kwargs)

    def feed(state, inputs, scale):
        seen.append(("position", state.caches[0].length + inputs.shape[1] - 1))
        return original_feed(state, inputs, scale)

    def step(state, n, prev, scale):
        seen.append(("position", n))
        return original_step(state, n, prev, scale)

    net.prepare, net.feed, net.step = prepare, feed, step
    return lambda: [net.__dict__.pop(k) for k in ("prepare", "feed", "step")]


def test_every_window_is_at_most_the_trained_size_on_a_three_times_wider_grid(model):
    n_trained = model.config.grid[0] * model.config.grid[1]
    seen: list = []
    undo = [spy_on(net, seen) for net in model.scales]
    try:
        codes = model.sample(2, grid=(4, 12), seed=0)
        images = model.decode(codes)
        assert images.shape == (2, 3, 16, 48)
        mask = torch.zeros(2, 16, 48)
        mask[:, 4:12, 14:40] = 1
        model.masked_refine(codes, mask, seed=1, passes=[2, 1])
    finally:
        for u in undo:
            u()
    inputs = [v for kind, v in seen if kind == "input"]
    positions = [v for kind, v in seen if kind == "position"]
    assert inputs and max(inputs) <= n_trained  # the encoder never sees more than one trained grid
    assert max(positions) < n_trained  # and no decoder position beyond the trained ones


@pytest.mark.parametrize("scale", [1, 2])
def test_a_trained_size_grid_gives_exactly_the_normal_result(model, scale):
    """The one-window case of the sliding-window loop draws exactly the tokens of the plain chain: token by
    token, each from a full teacher-forced forward over what is written so far (no cache, no windows)."""
    net = model.scales[scale - 1]
    g = torch.Generator().manual_seed(4)
    x_in = torch.randint(0, model.config.vocab_size, (3, 4, 4), generator=g)
    known = Known(torch.randint(0, model.config.vocab_size, (3, 16), generator=g), torch.rand(3, 16, generator=g) < 0.3)
    flt = TokenFilter(temperature=1.1, top_k=20)
    with torch.no_grad():
        normal, _ = reference_transition(net, x_in.view(3, 16), scale, None, None, 1.0, flt, [1, 2, 3], known)
        windowed = run_transition(net, x_in, scale, window=(4, 4), cond_sets=[None], token_filter=flt,
                                  sampler=PerItemSampler([1, 2, 3]), known=known)
    assert torch.equal(windowed.view(3, 16), normal)


def test_masked_refinement_on_a_large_grid_keeps_every_known_token(model):
    images = torch.rand(2, 3, 24, 48, generator=torch.Generator().manual_seed(0))
    codes = model.encode(images)
    assert codes.grid == (6, 12)
    mask = torch.zeros(2, 24, 48)
    mask[0, 3:15, 10:30] = 1
    mask[1, 12:, 30:] = 1
    levels = []
    out = model.masked_refine(codes, mask, seed=2, passes=[2, 2],
                              callback=lambda p: levels.append(p.level_codes) if p.level_codes is not None else None)
    known = ~model.token_mask(mask, codes)
    assert len(levels) == 4
    for level_codes in levels:
        assert torch.equal(level_codes[known], codes.tokens[known])
    assert torch.equal(out.tokens[known], codes.tokens[known])
    again = model.masked_refine(codes, mask, seed=2, passes=[2, 2])
    assert torch.equal(again.tokens, out.tokens)


def test_large_grid_sampling_is_deterministic_per_item(model):
    a = model.sample(2, grid=(5, 9), seed=3)
    b = model.sample(1, grid=(5, 9), seed=4)
    assert torch.equal(a.tokens[1], b.tokens[0])
    c = model.sample(2, grid=(5, 9), seed=3, window_stride=1)
    assert c.grid == (5, 9)


def test_condition_blend_weights_and_sampling(text_model):
    left = text_model.text_condition(["a red circle"])
    right = text_model.text_condition(["a blue square"])
    blend = ConditionBlend([left, right])
    assert blend.weights(0.0) == [1.0, 0.0] and blend.weights(1.0) == [0.0, 1.0]
    assert blend.weights(0.25) == pytest.approx([0.75, 0.25])
    wide = text_model.sample(1, cond=blend, grid=(4, 12), seed=0, guidance=2.0)
    assert wide.grid == (4, 12)
    single = text_model.sample(1, cond=ConditionBlend([left]), grid=(4, 12), seed=0)
    plain = text_model.sample(1, cond=left, grid=(4, 12), seed=0)
    assert torch.equal(single.tokens, plain.tokens)
    with pytest.raises(ValueError, match="increasing"):
        ConditionBlend([left, right], stops=[0.5, 0.2])
