"""Tests of imagebart_core.vqgan: shapes, validation, the shrink remap, straight-through training, and parity
with tensors recorded from the original CompVis/taming code (fixtures under ../shared/reference)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from imagebart_core.config import VQGANConfig, tiny_config
from imagebart_core.vqgan import VQGAN

REPO_ROOT = Path(__file__).resolve().parent.parent
REFERENCE = REPO_ROOT.parent / "shared" / "reference"
FIXTURES = REFERENCE / "official-fixtures"
LAYOUT = REFERENCE / "official-layout"


def _tiny_cfg() -> VQGANConfig:
    return tiny_config().vqgan


def _tiny_model(seed: int = 0, used: torch.Tensor | None = None) -> VQGAN:
    torch.manual_seed(seed)
    model = VQGAN(_tiny_cfg(), used=used).eval()
    with torch.no_grad():
        # spread the codebook to the scale of the encoder output so that many codes get picked
        model.quantize.embedding.weight.normal_(0.0, 1.0)
    return model


def _subset_used(n_embed: int, k: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_embed, generator=g)[:k].sort().values


def _outlier_setup():
    """A tiny model whose shrink list misses a third of the codebook, and latents with some outliers."""
    cfg = _tiny_cfg()
    used = _subset_used(cfg.n_embed, 32)
    model = _tiny_model(used=used)
    prequant = torch.randn(2, cfg.embed_dim, 6, 5, generator=torch.Generator().manual_seed(3))
    full = model.nearest_codes(prequant)
    outlier = ~torch.isin(full, used)
    assert outlier.any() and (~outlier).any()
    return model, prequant, full, outlier


# -- shapes and validation ---------------------------------------------------------------------
def test_shapes_encode_decode():
    model = _tiny_model()
    cfg = model.cfg
    f = cfg.factor
    x = torch.rand(2, 3, 16, 24) * 2 - 1
    with torch.no_grad():
        pq = model.encode_prequant(x)
        assert pq.shape == (2, cfg.embed_dim, 16 // f, 24 // f) and pq.dtype == torch.float32
        full = model.nearest_codes(pq)
        assert full.shape == (2, 4, 6) and full.dtype == torch.int64
        assert int(full.min()) >= 0 and int(full.max()) < cfg.n_embed
        codes = model.encode_to_codes(x)
        assert codes.shape == (2, 4, 6) and codes.dtype == torch.int64
        assert int(codes.min()) >= 0 and int(codes.max()) < model.vocab_size
        out = model.decode_codes(codes)
    assert out.shape == (2, 3, 16, 24) and out.dtype == torch.float32


def test_bad_image_sizes_raise():
    model = _tiny_model()
    with pytest.raises(ValueError, match="multiple"):
        model.encode_prequant(torch.zeros(1, 3, 15, 16))
    with pytest.raises(ValueError, match="multiple"):
        model.encode_to_codes(torch.zeros(1, 3, 16, 18))
    with pytest.raises(ValueError, match="channels"):
        model.encode_prequant(torch.zeros(1, 4, 16, 16))


def test_decode_out_of_range_raises():
    model = _tiny_model(used=_subset_used(48, 32))
    k = model.vocab_size
    with pytest.raises(ValueError, match="range|lie in"):
        model.decode_codes(torch.full((1, 4, 4), k, dtype=torch.int64))
    with pytest.raises(ValueError, match="range|lie in"):
        model.decode_codes(torch.full((1, 4, 4), -1, dtype=torch.int64))
    with pytest.raises(ValueError):
        model.decode_codes(torch.zeros(1, 4, 4))  # float ids


def test_used_buffer_and_names():
    used = _subset_used(48, 32)
    model = _tiny_model(used=used)
    sd = model.state_dict()
    assert torch.equal(sd["quantize.used"], used) and sd["quantize.used"].dtype == torch.int64
    assert sd["quantize.embedding.weight"].shape == (48, 8)
    assert model.last_decoder_layer_weight is model.decoder.conv_out.weight
    # a state dict with a different shrink list length loads strictly and replaces the buffer
    other = VQGAN(_tiny_cfg())
    assert other.vocab_size == 48
    other.load_state_dict(sd, strict=True)
    assert torch.equal(other.used, used)
    with pytest.raises(ValueError):
        VQGAN(_tiny_cfg(), used=torch.tensor([3, 1, 2]))


def test_state_dict_layout_matches_original_dump():
    dump = LAYOUT / "ffhq_4_scales_geometric-vqgan.txt"
    if not dump.is_file():
        pytest.skip(f"original key dump not found at {dump}")
    expected = {}
    for line in dump.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _ = line.split("\t")
        key = key.removeprefix("first_stage_model.")
        expected[key] = tuple(int(s) for s in re.findall(r"\d+", shape))
    with torch.device("meta"):
        model = VQGAN(VQGANConfig(n_embed=1024))  # the released architecture
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert set(ours) == set(expected)
    ours.pop("quantize.used")
    assert expected.pop("quantize.used") == (548,)
    assert ours == expected


# -- shrink remap ------------------------------------------------------------------------------
def test_shrink_round_trip():
    used = _subset_used(48, 32)
    model = _tiny_model(used=used)
    g = torch.Generator().manual_seed(4)
    positions = torch.randint(0, 32, (3, 5, 7), generator=g)
    full = used[positions]
    shrunk = model.to_shrunk(full)
    assert torch.equal(shrunk, positions)
    assert torch.equal(model.shrunk_to_full(shrunk), full)
    # without outliers no policy needs prequant or RNG
    assert torch.equal(model.to_shrunk(full, outlier_policy="random", generator=g), positions)


def test_nearest_used_policy_is_deterministic_and_nearest():
    model, prequant, full, outlier = _outlier_setup()
    a = model.to_shrunk(full, prequant)
    b = model.to_shrunk(full, prequant, outlier_policy="nearest_used")
    assert torch.equal(a, b)
    used = model.used
    # non-outliers: their own position in `used`
    assert torch.equal(used[a[~outlier]], full[~outlier])
    # outliers: brute-force nearest among the used codes
    emb = model.quantize.embedding.weight.detach().double()
    z = prequant.permute(0, 2, 3, 1).double()  # [B, h, w, D]
    dist = ((z[..., None, :] - emb[used]) ** 2).sum(-1)  # [B, h, w, K]
    assert torch.equal(a[outlier], dist.argmin(-1)[outlier])
    with pytest.raises(ValueError, match="prequant"):
        model.to_shrunk(full)
    with pytest.raises(ValueError, match="outlier_policy"):
        model.to_shrunk(full, prequant, outlier_policy="bogus")


def test_random_policy_replays_randint():
    model, prequant, full, outlier = _outlier_setup()
    k = model.vocab_size
    got = model.to_shrunk(full, prequant, outlier_policy="random", generator=torch.Generator().manual_seed(7))
    expected = torch.searchsorted(model.used, full)
    n = int(outlier.sum())
    expected[outlier] = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(7))
    assert torch.equal(got, expected)
    # without a generator: torch's default generator, as in the original code
    torch.manual_seed(123)
    got_global = model.to_shrunk(full, outlier_policy="random")
    torch.manual_seed(123)
    draw = torch.randint(0, k, (n,))
    assert torch.equal(got_global[outlier], draw)


# -- training ----------------------------------------------------------------------------------
def test_quantize_st_gradients():
    model = _tiny_model().train()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    pq = model.encode_prequant(x)
    z_q, loss, ids = model.quantize_st(pq, beta=0.25)
    assert z_q.shape == pq.shape and loss.dim() == 0 and ids.shape == (2, 4, 4)
    emb = model.quantize.embedding.weight
    assert torch.allclose(z_q, emb[ids].permute(0, 3, 1, 2), atol=1e-6)
    (z_q.sum() + loss).backward()
    assert model.encoder.conv_in.weight.grad is not None
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    assert emb.grad is not None and emb.grad[ids.unique()].abs().sum() > 0

    model.zero_grad()
    recon, vq_loss, ids2 = model(x)
    assert recon.shape == x.shape and vq_loss.dim() == 0 and ids2.shape == (2, 4, 4)
    (recon.square().mean() + vq_loss).backward()
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    assert model.last_decoder_layer_weight.grad.abs().sum() > 0


# -- parity with the original code -------------------------------------------------------------
PARITY_MODELS = [
    ("ffhq_4_scales_geometric", "vqgan-ffhq.ckpt", 1024),
    ("cin_5_scales_custom", "vqgan-imagenet.ckpt", 16384),
]


@pytest.mark.parametrize("name,ckpt,n_embed", PARITY_MODELS)
def test_parity_with_original(name, ckpt, n_embed):
    """Small fixture VQGANs (ch 32): the whole check takes about a second per model on a CPU."""
    if not FIXTURES.is_dir():
        pytest.skip(f"official fixtures not found at {FIXTURES}")
    from safetensors.torch import load_file

    cfg = VQGANConfig(
        base_channels=32,
        channel_mult=(2, 1, 1, 1, 1),
        num_res_blocks=1,
        z_channels=8,
        embed_dim=8,
        attn_resolutions=(16,),
        resolution=256,
        n_embed=n_embed,
    )
    model = VQGAN(cfg).eval()
    sd = torch.load(FIXTURES / name / "vqgan" / ckpt, map_location="cpu", weights_only=True)["state_dict"]
    sd = {k: v for k, v in sd.items() if not k.startswith("loss.")}
    model.load_state_dict(sd, strict=True)
    assert torch.equal(model.used, sd["quantize.used"])

    image = load_file(str(FIXTURES / "inputs.safetensors"))["vqgan.image"]  # [2, 3, 256, 256]
    exp = load_file(str(FIXTURES / name / "expected.safetensors"))
    with torch.no_grad():
        pre_quant = model.encode_prequant(image)
        torch.testing.assert_close(pre_quant, exp["vqgan.pre_quant"], rtol=0, atol=1e-4)
        nearest = model.nearest_codes(pre_quant)
        assert torch.equal(nearest, exp["vqgan.nearest_ids"])

        outlier = exp["vqgan.outlier_mask"]
        shrunk = model.to_shrunk(nearest, pre_quant)
        assert torch.equal(shrunk[~outlier], exp["vqgan.indices_shrunk"][~outlier])
        assert torch.equal(model.encode_to_codes(image), shrunk)
        replay = model.to_shrunk(
            nearest, pre_quant, outlier_policy="random", generator=torch.Generator().manual_seed(11)
        )
        assert torch.equal(replay, exp["vqgan.indices_shrunk"])

        tokens = exp["vqgan.decode_tokens"].reshape(2, 16, 16)
        assert torch.equal(model.shrunk_to_full(tokens).reshape(2, 256), exp["vqgan.decode_vq_ids"])
        decoded = model.decode_codes(tokens)
        torch.testing.assert_close(decoded, exp["vqgan.decoded"], rtol=0, atol=1e-4)
