"""The fast decoding path (KV cache, precomputed cross-attention, fused/relaid weights) equals plain math.

The reference recomputes every token step from scratch: a teacher-forced forward over the whole
growing prefix (no cache, the parameters as built), takes the logits of the current position and
draws with the same sampler and seeds. The fast path must give logits within 1e-5 and equal tokens.
"""

from __future__ import annotations

import copy

import pytest
import torch

import imagebart_core as ib
from imagebart_core import rng
from imagebart_core.chain.sampling import Known, PerItemSampler, TokenFilter
from imagebart_core.chain.transition import run_transition
from imagebart_core.fast_decode import fused_views, step_kernels
from imagebart_core.transformer import PLAIN, Attention


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads; one thread keeps the test fast on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(conditioning: str, residual: bool, n_scales: int = 3) -> ib.ImageBART:
    cfg = ib.tiny_config(n_scales=n_scales, conditioning=conditioning, residual=residual)
    return ib.build_model(cfg, seed=1)


def _cond(model: ib.ImageBART, batch: int):
    kind = model.config.conditioning.kind
    if kind == "class":
        return model.class_condition([i % 4 for i in range(batch)]).tokens
    if kind == "text":
        return model.text_condition(["a red circle", "a blue square", "x"][:batch]).tokens
    return None


def reference_transition(net, x_in, scale, cond_tokens, null_tokens, guidance, token_filter, seeds, known=None):
    """Token by token with a full teacher-forced forward over the prefix at every step (no cache)."""
    b, n_tokens = x_in.shape
    guided = guidance != 1.0 and null_tokens is not None
    sampler = PerItemSampler(seeds)
    sampler.begin(b, n_tokens, ("scale", scale))
    out = torch.zeros(b, n_tokens, dtype=torch.long)
    all_logits = []
    for n in range(n_tokens):
        if guided:
            logits = net(torch.cat([x_in, x_in]), torch.cat([out, out]), scale,
                         torch.cat([cond_tokens, null_tokens]))[:, n].float()  # [2B, K]
            all_logits.append(logits)
            logits = logits[b:] + guidance * (logits[:b] - logits[b:])
        else:
            logits = net(x_in, out, scale, cond_tokens)[:, n].float()  # [B, K]
            all_logits.append(logits)
        if known is not None:
            forced = torch.full_like(logits, float("-inf")).scatter(1, known.tokens[:, n : n + 1], 0.0)
            logits = torch.where(known.mask[:, n : n + 1], forced, logits)
        token = sampler.draw(torch.softmax(token_filter(logits), dim=-1), n)
        if known is not None:
            token = torch.where(known.mask[:, n], known.tokens[:, n], token)
        out[:, n] = token
    return out, torch.stack(all_logits, 1)


def fast_transition(net, x_in, scale, cond_tokens, null_tokens, guidance, token_filter, seeds, known=None):
    """run_transition (the production path), recording the logits of every step."""
    recorded = []
    step = net.step

    def recording_step(*args, **kwargs):
        logits = step(*args, **kwargs)
        recorded.append(logits.float().clone())
        return logits

    net.step = recording_step
    try:
        b, n = x_in.shape
        grid = (4, 4)  # tiny_config's trained grid (N = 16 tokens)
        out = run_transition(net, x_in.view(b, *grid), scale, window=grid, cond_sets=[cond_tokens],
                             token_filter=token_filter, sampler=PerItemSampler(seeds), null_tokens=null_tokens,
                             guidance=guidance, known=known).view(b, n)
    finally:
        del net.step
    return out, torch.stack(recorded, 1)


CASES = [
    ("none", False, 1.0),
    ("none", True, 1.0),
    ("class", True, 1.0),
    ("class", False, 3.0),
    ("text", True, 1.0),
    ("text", False, 2.5),
]


@pytest.mark.parametrize("conditioning,residual,guidance", CASES)
def test_fast_path_equals_full_recomputation(conditioning, residual, guidance):
    model = _model(conditioning, residual)
    reference = copy.deepcopy(model)  # the parameters as built: contiguous, no fused q/k/v
    b, n = 3, 16
    cond = _cond(model, b)
    null = model.null_condition(b).tokens if guidance != 1.0 else None
    seeds = [7, 8, 9]
    filt = TokenFilter(temperature=0.9, top_k=20)
    with torch.no_grad():
        for scale in range(1, model.n_scales + 1):
            x_in = rng.randint(rng.generators(seeds, "x", scale), model.config.vocab_size, n)  # [B, N]
            want, want_logits = reference_transition(reference.scales[scale - 1], x_in, scale, cond, null,
                                                     guidance, filt, seeds)
            got, got_logits = fast_transition(model.scales[scale - 1], x_in, scale, cond, null, guidance, filt,
                                              seeds)
            assert torch.equal(got, want), f"scale {scale}: tokens differ"
            torch.testing.assert_close(got_logits, want_logits, atol=1e-5, rtol=0)
    # the fast layout really was in use
    assert all(fused_views(m) is not None for m in model.modules() if isinstance(m, Attention))
    assert not any(fused_views(m) is not None for m in reference.modules() if isinstance(m, Attention))


def test_fast_path_with_known_tokens():
    model = _model("class", True)
    reference = copy.deepcopy(model)
    b, n = 2, 16
    cond = _cond(model, b)
    seeds = [3, 4]
    known = Known(torch.randint(0, model.config.vocab_size, (b, n), generator=torch.Generator().manual_seed(0)),
                  torch.rand(b, n, generator=torch.Generator().manual_seed(1)) < 0.5)
    filt = TokenFilter()
    with torch.no_grad():
        x_in = torch.randint(0, model.config.vocab_size, (b, n), generator=torch.Generator().manual_seed(2))
        want, want_logits = reference_transition(reference.scales[0], x_in, 1, cond, None, 1.0, filt, seeds, known)
        got, got_logits = fast_transition(model.scales[0], x_in, 1, cond, None, 1.0, filt, seeds, known)
    assert torch.equal(got, want)
    assert torch.equal(got[known.mask], known.tokens[known.mask])
    torch.testing.assert_close(got_logits, want_logits, atol=1e-5, rtol=0)


def test_layout_keeps_parameters_and_state_dict():
    model = _model("class", True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for scale in model.scales:
        with torch.no_grad():
            step_kernels(scale, 1)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    attn = model.scales[0].decoder[0].self_attn
    assert fused_views(attn) is not None and attn.to_q.weight.shape == before["scales.0.decoder.0.self_attn.to_q.weight"].shape
    # teacher-forced logits are unchanged by the layout
    ref = _model("class", True)
    x = torch.randint(0, model.config.vocab_size, (2, 16))
    cond = model.class_condition([0, 1])
    torch.testing.assert_close(model.scale_logits(1, x, x, cond), ref.scale_logits(1, x, x, cond), atol=1e-5, rtol=0)


def test_batched_sampling_equals_one_item_at_a_time():
    """A batch shares the token steps (and their weight reads) but each item gets what it would get alone."""
    model = _model("none", True)
    batch = 5
    together = model.sample(batch, seed=11)
    for i in (0, batch - 1):
        alone = model.sample(1, seed=11 + i)
        assert torch.equal(alone.tokens[0], together.tokens[i])


def test_layout_survives_dtype_round_trip_and_sample_is_reproducible(monkeypatch):
    from imagebart_core import fast_decode

    model = _model("none", True)
    attn = model.scales[0].decoder[0].self_attn
    assert fused_views(attn) is None  # building or loading a model leaves its weights as they are
    first = model.sample(2, seed=5)
    assert fused_views(attn) is not None  # sampling laid the scale out for decoding
    model.to_runtime("cpu", torch.float64).to_runtime("cpu", torch.float32)  # replaces every parameter
    assert fused_views(attn) is None  # the fused matrix went with the old parameters
    second = model.sample(2, seed=5)
    assert fused_views(attn) is not None
    assert torch.equal(first.tokens, second.tokens)
    # a model that never took the fast layout (plain kernels: separate projections) samples the same tokens
    plain = _model("none", True)
    monkeypatch.setattr(fast_decode, "step_kernels", lambda net, rows, pack=True: PLAIN)
    third = plain.sample(2, seed=5)
    assert fused_views(plain.scales[0].decoder[0].self_attn) is None
    assert torch.equal(first.tokens, third.tokens)


def test_layout_is_skipped_while_training():
    model = _model("none", False)
    scale = model.scales[0]
    for p in scale.parameters():
        p.requires_grad_(True)
    with torch.enable_grad():
        assert step_kernels(scale, 4) is PLAIN
    assert not any(fused_views(m) is not None for m in scale.modules() if isinstance(m, Attention))
    assert scale.decoder[0].self_attn.to_q.weight.is_contiguous()


def test_offload_idle_scales_moves_one_scale_at_a_time():
    """CPU -> CPU offloading: same tokens, and each scale is moved in just before it runs and out after."""
    model = _model("class", True)
    cond = model.class_condition([1, 2])
    want = model.sample(2, cond, seed=3)
    events = []
    for s, net in enumerate(model.scales, start=1):
        original_to = net.to

        def spy(*args, s=s, original_to=original_to, **kwargs):
            events.append((s, str(args[0]) if args else str(kwargs)))
            return original_to(*args, **kwargs)

        net.to = spy
        prepare = net.prepare

        def prepare_spy(*args, s=s, prepare=prepare, **kwargs):
            events.append((s, "run"))
            return prepare(*args, **kwargs)

        net.prepare = prepare_spy
    model.offload_idle_scales("cpu", "cpu")
    assert events == [(s, "cpu") for s in (1, 2, 3)]
    events.clear()
    got = model.sample(2, cond, seed=3)
    assert torch.equal(got.tokens, want.tokens)
    assert events == [e for s in (3, 2, 1) for e in ((s, "cpu"), (s, "run"), (s, "cpu"))]
    events.clear()
    model.offload_idle_scales(None)
    model.sample(2, cond, seed=3)
    assert events == [(s, "cpu") for s in (1, 2, 3)] + [(s, "run") for s in (3, 2, 1)]


def test_batched_steps_use_packed_weights_with_the_same_result(monkeypatch):
    """From PACKED_MIN_ROWS rows a CPU step runs on oneDNN-packed weights; tokens equal the dense kernels'."""
    from imagebart_core import packed as packing

    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN")
    model = _model("class", True)
    cond = model.class_condition([0, 1, 2, 3, 0])
    rows = []
    call = packing.PackedLinear.__call__
    monkeypatch.setattr(packing.PackedLinear, "__call__", lambda self, x: rows.append(x.shape[0]) or call(self, x))
    packed = model.sample(5, cond, seed=3, guidance=2.0)
    assert rows and min(rows) >= packing.PACKED_MIN_ROWS
    monkeypatch.setattr(packing, "PACKED_MIN_ROWS", 10**9)  # dense kernels only
    n_packed_calls = len(rows)
    dense = model.sample(5, cond, seed=3, guidance=2.0)
    assert len(rows) == n_packed_calls
    assert torch.equal(packed.tokens, dense.tokens)


def test_packed_weights_are_made_per_call_renewed_after_an_update_and_freed():
    import gc
    import weakref

    from imagebart_core import packed as packing

    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN")
    model = _model("none", False)
    net = model.scales[0]
    x = torch.randint(0, model.config.vocab_size, (packing.PACKED_MIN_ROWS, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        kernels = step_kernels(net, packing.PACKED_MIN_ROWS)
        first = net.prepare(x, 1, kernels=kernels)
        second = net.prepare(x, 1, kernels=kernels)
        assert first.kernels.packed is not None and second.kernels.packed is first.kernels.packed  # shared
        assert kernels.packed.valid()
        net.decoder[0].ff.fc1.weight.mul_(1.5)  # e.g. a training step: the packed copy is stale
        assert not kernels.packed.valid()
        renewed = step_kernels(net, packing.PACKED_MIN_ROWS)
        third = net.prepare(x, 1, kernels=renewed)
        assert renewed.packed is not kernels.packed and renewed.packed.valid()
        got = net.step(third, 0, None, 1)
        want = net(x, torch.zeros_like(x), 1)[:, 0]  # teacher-forced, dense, updated weights
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        assert step_kernels(net, 1).packed is None  # a single row streams faster without packing
        assert step_kernels(net, packing.PACKED_MIN_ROWS, pack=False).packed is None
        assert not any(isinstance(v, packing.PackedWeights) for v in vars(net).values())  # nothing attached
    gone = weakref.ref(renewed.packed)
    del kernels, first, second, third, renewed
    gc.collect()
    assert gone() is None  # freed with the last state that used it


def test_packed_steps_can_be_turned_off(monkeypatch):
    from imagebart_core import packed as packing

    model = _model("none", False)
    built = []
    build = packing.PackedWeights.build
    monkeypatch.setattr(packing.PackedWeights, "build",
                        classmethod(lambda cls, mods, fused, rows: built.append(1) or build(mods, fused, rows)))
    assert model.packed_steps
    model.packed_steps = False
    off = model.sample(3, seed=2)
    assert not built and not model.packed_steps
    model.packed_steps = True
    on = model.sample(3, seed=2)
    assert built or not torch.backends.mkldnn.is_available()
    assert torch.equal(on.tokens, off.tokens)
