"""Cached autoregressive decoding equals full recomputation, for both scale kinds."""

from __future__ import annotations

import pytest
import torch

import imagebart_core as ib
from imagebart_core.chain.sampling import PerItemSampler, TokenFilter
from imagebart_core.chain.transition import run_transition


def reference_transition(net, x_in, scale, cond_tokens, token_filter, seeds):
    """Sample without any cache: recompute the teacher-forced logits over the whole prefix each step."""
    b, n = x_in.shape
    sampler = PerItemSampler(seeds)
    sampler.begin(b, n, ("scale", scale))
    out = torch.zeros(b, n, dtype=torch.long)
    for i in range(n):
        logits = net(x_in, out, scale, cond_tokens)[:, i].float()  # causal: positions > i are irrelevant
        out[:, i] = sampler.draw(torch.softmax(token_filter(logits), -1), i)
    return out


def cached_logits(net, x_in, target, scale, cond_tokens):
    state = net.prepare(x_in, scale, cond_tokens, target.shape[1])
    rows, prev = [], None
    for i in range(target.shape[1]):
        rows.append(net.step(state, i, prev, scale))
        prev = target[:, i]
    return torch.stack(rows, 1)


CASES = [
    ("none", False),
    ("none", True),
    ("class", False),
    ("text", False),
]


@pytest.mark.parametrize("conditioning,residual", CASES)
def test_cached_logits_equal_full_recomputation(conditioning, residual):
    model = ib.build_model(ib.tiny_config(n_scales=3, conditioning=conditioning, residual=residual), seed=5)
    g = torch.Generator().manual_seed(0)
    b, n, k = 3, 16, model.config.vocab_size
    cond = None
    if conditioning == "class":
        cond = model.class_condition([0, 1, 3]).tokens
    elif conditioning == "text":
        cond = model.text_condition(["a red circle", "two", "a blue square"]).tokens
    for scale in (1, 2, 3):  # 3 is the decoder-only top scale
        net = model.scales[scale - 1]
        x_in = torch.randint(0, k, (b, n), generator=g)
        target = torch.randint(0, k, (b, n), generator=g)
        with torch.no_grad():
            full = net(x_in, target, scale, cond)
            cached = cached_logits(net, x_in, target, scale, cond)
        assert full.shape == (b, n, k)
        assert torch.allclose(cached, full, atol=1e-5, rtol=1e-5), (scale, (cached - full).abs().max())


@pytest.mark.parametrize("conditioning", ["none", "class"])
def test_cached_sampling_draws_the_same_tokens_as_recomputation(conditioning):
    model = ib.build_model(ib.tiny_config(n_scales=2, conditioning=conditioning, residual=True), seed=6)
    k = model.config.vocab_size
    x_in = torch.randint(0, k, (2, 16), generator=torch.Generator().manual_seed(3))
    cond = model.class_condition([2, 0]).tokens if conditioning == "class" else None
    flt = TokenFilter(temperature=0.9, top_k=20, top_p=0.95)
    for scale in (1, 2):
        net = model.scales[scale - 1]
        with torch.no_grad():
            fast = run_transition(net, x_in.view(2, 4, 4), scale, window=(4, 4), cond_sets=[cond], token_filter=flt,
                                  sampler=PerItemSampler([11, 12])).view(2, 16)
            slow = reference_transition(net, x_in, scale, cond, flt, [11, 12])
        assert torch.equal(fast, slow), scale


def test_decoder_only_prefix_sees_itself_bidirectionally():
    from imagebart_core.transformer import prefix_mask

    m = prefix_mask(5, 2)
    assert m[0, 1] and m[1, 0] and not m[1, 2] and m[4, 0] and not m[2, 3]


def test_sequences_longer_than_trained_are_refused():
    model = ib.build_model(ib.tiny_config(n_scales=2), seed=0)
    net = model.scales[0]
    x = torch.zeros(1, 40, dtype=torch.long)
    with pytest.raises(ValueError, match="exceeds the trained"):
        net(x, x, 1, None)
