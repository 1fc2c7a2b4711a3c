"""The public chain API: seeds, chaining, masked refinement, variations, conditions, errors, cancel."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import imagebart_core as ib
from imagebart_core.chain.sampling import TokenFilter


def test_same_seed_same_codes_per_item_whatever_the_batch(tiny_model):
    batch = tiny_model.sample(3, seed=10)
    alone = tiny_model.sample(1, seed=11)  # item 1 of a batch seeded 10 uses seed 11
    assert torch.equal(batch.tokens[1], alone.tokens[0])
    listed = tiny_model.sample(2, seed=[12, 10])
    assert torch.equal(listed.tokens[0], batch.tokens[2]) and torch.equal(listed.tokens[1], batch.tokens[0])
    again = tiny_model.sample(3, seed=10)
    assert torch.equal(again.tokens, batch.tokens)
    other = tiny_model.sample(3, seed=99)
    assert not torch.equal(other.tokens, batch.tokens)


def test_chaining_single_steps_equals_the_whole_chain(tiny_model):
    whole = tiny_model.sample(2, seed=4, temperature=[1.0, 0.8, 1.2], top_k=25)
    codes = tiny_model.random_codes(2, seed=4)
    assert codes.level == tiny_model.num_levels == 4
    for expected_level in (3, 2, 1):
        codes = tiny_model.reverse_step(codes, seed=4, temperature=[1.0, 0.8, 1.2], top_k=25)
        assert codes.level == expected_level
    assert torch.equal(codes.tokens, whole.tokens)
    two_then_one = tiny_model.reverse_step(tiny_model.random_codes(2, seed=4), steps=2, seed=4,
                                           temperature=[1.0, 0.8, 1.2], top_k=25)
    assert torch.equal(tiny_model.reverse_step(two_then_one, seed=4, temperature=[1.0, 0.8, 1.2], top_k=25).tokens,
                       whole.tokens)


def test_decode_encode_shapes_and_ranges(tiny_model):
    codes = tiny_model.sample(2, seed=0)
    images = tiny_model.decode(codes)
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.float32
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    again = tiny_model.encode(images)
    assert again.level == 1 and again.grid == (4, 4) and again.codebook_id == codes.codebook_id


def test_masked_refinement_never_changes_a_known_token_at_any_level(tiny_model):
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    codes = tiny_model.encode(images)
    mask = torch.zeros(2, 16, 16)
    mask[0, 2:9, 3:11] = 1.0  # free-form-ish: a rectangle on item 0
    mask[1, 10:, :5] = 1.0
    mask[1, 0, 15] = 1.0  # a single pixel regenerates its whole token
    token_mask = tiny_model.token_mask(mask, codes)
    assert bool(token_mask[1, 0, 3]) and int(token_mask.sum()) > 0
    seen = []
    result = tiny_model.masked_refine(codes, mask, seed=3, passes=[2, 3, 2],
                                      callback=lambda p: seen.append(p) if p.level_codes is not None else None)
    known = ~token_mask
    assert len(seen) == 2 + 3 + 2  # one finished pass per (level, pass)
    for p in seen:
        assert torch.equal(p.level_codes[known], codes.tokens[known]), p.scale
    assert result.level == 1
    assert torch.equal(result.tokens[known], codes.tokens[known])
    assert not torch.equal(result.tokens[token_mask], codes.tokens[token_mask])  # something was regenerated
    again = tiny_model.masked_refine(codes, mask, seed=3, passes=[2, 3, 2])
    assert torch.equal(again.tokens, result.tokens)


def test_masked_refinement_from_a_lower_start_level_and_upper_half(tiny_model):
    codes = tiny_model.encode(torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)))
    mask = ib.upper_half_mask(1, 16, 16)
    out = tiny_model.masked_refine(codes, mask, start_level=2, passes=1, seed=0)
    assert torch.equal(out.tokens[:, 2:], codes.tokens[:, 2:])
    nothing = tiny_model.masked_refine(codes, torch.zeros(1, 16, 16), seed=0)
    assert torch.equal(nothing.tokens, codes.tokens)


def test_a_mask_of_any_size_follows_the_one_token_rule(tiny_model):
    """Grid 4x4, factor 4 (image 16x16): the documented rule of ImageBART.token_mask for every size and layout."""
    codes = tiny_model.sample(2, seed=0)
    one = torch.zeros(2, 4, 4, dtype=torch.bool)
    one[:, 1, 1] = True
    image_size = torch.zeros(16, 16)
    image_size[5, 6] = 0.7  # one pixel >= 0.5 regenerates the token covering it: (5 // 4, 6 // 4)
    assert torch.equal(tiny_model.token_mask(image_size, codes), one)
    assert torch.equal(tiny_model.token_mask(image_size[None, None].expand(2, 1, 16, 16), codes), one)  # [B,1,H,W]
    grid_size = torch.zeros(1, 4, 4)
    grid_size[0, 1, 1], grid_size[0, 2, 3] = 0.5, 0.49  # at the grid: each token by its own value
    assert torch.equal(tiny_model.token_mask(grid_size, codes), one)
    # another size is stretched (bilinear) to the image first: the left half of a 40x40 mask is the left half
    half = torch.zeros(40, 40)
    half[:, :20] = 1.0
    left = torch.zeros(2, 4, 4, dtype=torch.bool)
    left[:, :, :2] = True
    assert torch.equal(tiny_model.token_mask(half, codes), left)
    odd = torch.rand(2, 23, 37, generator=torch.Generator().manual_seed(4)) ** 3  # mostly < 0.5
    stretched = F.interpolate(odd[:, None], size=(16, 16), mode="bilinear", align_corners=False)[:, 0].clamp(0, 1)
    got = tiny_model.token_mask(odd, codes)
    assert torch.equal(got, tiny_model.token_mask(stretched, codes)) and 0 < int(got.sum()) < got.numel()
    # masked refinement takes it as it is: the 40x40 mask and the same mask at image size give the same tokens
    a = tiny_model.masked_refine(codes, half, seed=2)
    b = tiny_model.masked_refine(codes, half[::5, ::5].repeat_interleave(2, 0).repeat_interleave(2, 1), seed=2)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.tokens[:, :, 2:], codes.tokens[:, :, 2:])
    # bad masks are still refused, naming the problem
    nan = torch.zeros(16, 16)
    nan[0, 0] = float("nan")
    for bad, match in [(nan, "NaN"), (torch.ones(3, 16, 16), "batch"), (torch.ones(0, 16), "empty"),
                       (torch.ones(2, 16, 0), "empty"), (torch.ones(2, 2, 16, 16), r"\[B, 1, H, W\]"),
                       (torch.ones(16), r"\[H, W\]"), ([[1.0]], "tensor")]:
        with pytest.raises(ValueError, match=match):
            tiny_model.token_mask(bad, codes)
        with pytest.raises(ValueError, match=match):
            tiny_model.masked_refine(codes, bad, seed=0)


def test_mask_and_codes_errors(tiny_model, class_model):
    codes = tiny_model.sample(2, seed=0)
    with pytest.raises(ValueError, match="batch"):
        tiny_model.masked_refine(codes, torch.ones(3, 16, 16))
    foreign = class_model.sample(1, cond=class_model.class_condition(0), seed=0)
    with pytest.raises(ValueError, match="another model"):
        tiny_model.decode(foreign)
    noisy = tiny_model.random_codes(1, seed=0)
    with pytest.raises(ValueError, match="level-1"):
        tiny_model.decode(noisy)
    with pytest.raises(ValueError, match="steps"):
        tiny_model.reverse_step(codes)  # already clean
    with pytest.raises(ValueError, match="grid"):
        tiny_model.random_codes(1, grid=(3, 4))
    with pytest.raises(ValueError, match="one per scale"):
        tiny_model.sample(1, temperature=[1.0, 1.0])
    with pytest.raises(ValueError, match="temperature"):
        tiny_model.sample(1, temperature=0.0)
    with pytest.raises(ValueError, match="multiples|multiple"):
        tiny_model.encode(torch.rand(1, 3, 15, 16))


def test_noise_for_variations(tiny_model):
    codes = tiny_model.encode(torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)))
    same = tiny_model.noise(codes, 1, seed=0)
    assert torch.equal(same.tokens, codes.tokens)
    half = tiny_model.noise(codes, 3, seed=0)
    assert half.level == 3 and torch.equal(half.tokens, tiny_model.noise(codes, 3, seed=0).tokens)
    variation = tiny_model.reverse_step(half, steps=2, seed=1)
    assert variation.level == 1
    with pytest.raises(ValueError, match="noise"):
        tiny_model.noise(half, 2)


def test_conditions_are_checked_and_guidance_runs(class_model, text_model, tiny_model):
    with pytest.raises(ValueError, match="unconditional"):
        tiny_model.sample(1, cond=class_model.class_condition(0))
    unconditional = class_model.sample(1, seed=0)  # trained with condition dropout: the null condition
    assert torch.equal(unconditional.tokens, class_model.sample(1, cond=class_model.null_condition(1), seed=0).tokens)
    strict = ib.build_model(ib.tiny_config(conditioning="class"), seed=0)
    strict.config.conditioning.null_condition = False
    with pytest.raises(ValueError, match="class-conditional"):
        strict.sample(1)
    with pytest.raises(ValueError, match="class condition"):
        class_model.sample(1, cond=text_model.text_condition("a red circle"))
    with pytest.raises(ValueError):
        class_model.class_condition(17)  # out of range
    with pytest.raises(ValueError, match="empty"):
        text_model.text_condition("   ")
    cond = class_model.class_condition(["class_1", 3])
    plain = class_model.sample(2, cond=cond, seed=0)
    guided = class_model.sample(2, cond=cond, seed=0, guidance=3.0)
    assert plain.level == guided.level == 1
    one = class_model.sample(1, cond=class_model.class_condition(3), seed=1, guidance=3.0)
    assert torch.equal(one.tokens[0], guided.tokens[1])  # per-item seeds hold under guidance too
    text = text_model.sample(2, cond=text_model.text_condition(["a red circle", "a blue square"]), seed=0,
                             guidance=2.0)
    assert text.grid == (4, 4)


def test_top_k_one_is_greedy(tiny_model):
    a = tiny_model.sample(2, seed=0, top_k=1)
    b = tiny_model.sample(2, seed=123, top_k=1)
    assert torch.equal(a.tokens, b.tokens)
    c = tiny_model.sample(2, seed=5, top_p=1e-6)
    assert torch.equal(a.tokens, c.tokens)


def test_token_filter_top_p_keeps_the_smallest_set_over_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(TokenFilter(top_p=0.7)(logits))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(TokenFilter(top_k=3)(logits))
    assert kept.tolist() == [[True, True, True, False]]


def test_progress_reports_every_token_and_cancel_stops(tiny_model):
    events = []
    tiny_model.sample(1, seed=0, callback=events.append)
    assert len(events) == 3 * 16 and events[-1].done == events[-1].total == 48
    assert [e.scale for e in events if e.level_codes is not None] == [3, 2, 1]

    class Cancelled(Exception):
        pass

    def cancel_at_five(p):
        if p.done == 5:
            raise Cancelled

    with pytest.raises(Cancelled):
        tiny_model.sample(1, seed=0, callback=cancel_at_five)
