"""Each loss does what it claims: the KL is zero at the posterior, cross-entropy is eq. 8, the forward
process has the right marginals, and optimising on a fixed batch drives every loss down."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import imagebart_core as ib
from imagebart_core.diffusion import MultinomialDiffusion
from imagebart_core.vqgan import VQGAN
from training.optim import EMA, warmup_cosine
from training.scale_loss import StepNoise, forward_noise, make_targets, sample_categorical, scale_loss
from training.train_scale import ScaleModel
from training.vqgan_loss import (
    PatchDiscriminator,
    PerceptualWeightsMissing,
    VQGANLoss,
    adaptive_weight,
    hinge_d_loss,
    make_lpips,
)

K = 10


@pytest.fixture(autouse=True)
def _one_thread():
    from _training_fixtures import one_thread

    yield from one_thread()


def _diffusion(n_scales=3):
    return MultinomialDiffusion(ib.geometric_betas(n_scales), K)


def _noise(b, n, seed=0):
    return StepNoise.draw(torch.Generator().manual_seed(seed), b, n, K)


@pytest.mark.parametrize("scale", [2, 3])
def test_kl_is_zero_when_the_model_outputs_the_posterior(scale):
    d = _diffusion(3)
    x1 = torch.randint(0, K, (4, 16), generator=torch.Generator().manual_seed(1))
    t = make_targets(d, scale, x1, _noise(4, 16))
    logits = t.log_posterior.clone() + 3.7  # any per-position shift gives the same softmax
    loss, stats = scale_loss(logits, t, scale)
    assert abs(float(loss)) < 1e-5 and stats["kl"] < 1e-5
    worse, _ = scale_loss(torch.zeros_like(logits), t, scale)
    assert float(worse) > 0.01


def test_top_scale_posterior_is_the_marginal():
    d = _diffusion(3)
    x1 = torch.randint(0, K, (2, 16))
    t = make_targets(d, 3, x1, _noise(2, 16))
    assert torch.allclose(t.log_posterior.exp(), d.marginal_probs(x1, 3), atol=1e-6)


def test_scale_one_is_cross_entropy_to_the_clean_codes():
    d = _diffusion(2)
    x1 = torch.randint(0, K, (3, 16))
    t = make_targets(d, 1, x1, _noise(3, 16))
    assert torch.equal(t.target, x1) and t.log_posterior is None
    logits = torch.randn(3, 16, K)
    loss, stats = scale_loss(logits, t, 1, alpha=1.0)  # scale 1 ignores the KL weight: always eq. 8
    assert float(loss) == pytest.approx(float(F.cross_entropy(logits.reshape(-1, K), x1.reshape(-1))), rel=1e-6)


def test_kl_ce_mixing():
    d = _diffusion(3)
    x1 = torch.randint(0, K, (3, 16))
    t = make_targets(d, 2, x1, _noise(3, 16))
    logits = torch.randn(3, 16, K)
    mix, s = scale_loss(logits, t, 2, alpha=0.3)
    assert float(mix) == pytest.approx(0.3 * s["kl"] + 0.7 * s["ce"], rel=1e-5)
    ce, _ = scale_loss(logits, t, 2, alpha=0.0)
    assert float(ce) == pytest.approx(s["ce"], rel=1e-6)


def test_forward_noise_and_posterior_samples_have_the_right_statistics():
    d = _diffusion(3)
    x1 = torch.zeros(2000, 16, dtype=torch.long)
    nz = _noise(2000, 16, seed=5)
    x3 = forward_noise(d, x1, 3, nz)
    keep = float(d.alpha_bar[2]) + (1 - float(d.alpha_bar[2])) / K
    assert float((x3 == 0).float().mean()) == pytest.approx(keep, abs=0.01)
    logp = torch.log(torch.tensor([0.2, 0.5, 0.3])).expand(20000, 1, 3)
    u = torch.rand(20000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = sample_categorical(logp, u)
    freq = torch.bincount(s.reshape(-1), minlength=3).float() / 20000
    assert torch.allclose(freq, torch.tensor([0.2, 0.5, 0.3]), atol=0.015)


@pytest.mark.parametrize("scale,kind,precision", [(1, "ce", "fp32"), (2, "kl", "fp32"), (3, "kl-top", "fp32"),
                                                  (1, "ce", "bf16"), (3, "kl-top", "bf16")])
def test_overfitting_a_fixed_batch_drives_the_scale_loss_down(scale, kind, precision):
    from _training_fixtures import TINY_VQ

    from training.model_config import build_model_config

    cfg = build_model_config(vqgan=TINY_VQ, vocab_size=K, image_size=16, n_scales=3, size="tiny",
                             conditioning="class", class_names=["a", "b"])
    d = MultinomialDiffusion(cfg.schedule.betas, K)
    torch.manual_seed(0)
    model = ScaleModel(cfg, scale)
    x1 = torch.randint(0, K, (4, 16), generator=torch.Generator().manual_seed(2))
    t = make_targets(d, scale, x1, _noise(4, 16, seed=3))
    cond = torch.tensor([[0], [1], [0], [1]])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    from training import optim

    if precision == "bf16" and not optim.cpu_bf16_supported():
        pytest.skip("this CPU has no bf16 instructions")
    for _ in range(60):
        with optim.autocast(precision, torch.device("cpu")):  # bf16: the trainers' CPU autocast + math attention
            logits = model(t.x_in, t.target, cond)
        loss, _ = scale_loss(logits, t, scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], (kind, losses[0], losses[-1])


def _vqgan():
    from _training_fixtures import TINY_VQ

    torch.manual_seed(0)
    return VQGAN(TINY_VQ)


def test_overfitting_a_fixed_batch_drives_the_vqgan_losses_down():
    model = _vqgan()
    disc = PatchDiscriminator(n_layers=1)
    loss_fn = VQGANLoss(make_lpips("random"), perceptual_weight=1.0, disc_start=0, disc_weight=0.8, disc=disc)
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    opt_g = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.5, 0.9))
    opt_d = torch.optim.AdamW(disc.parameters(), lr=2e-3, betas=(0.5, 0.9))
    first = last = None
    d_first = d_last = None
    for step in range(40):
        rec, q, _ = model(x)
        loss, s = loss_fn.generator_loss(x, rec, q, step, model.last_decoder_layer_weight)
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        d_loss, ds = loss_fn.discriminator_loss(x, rec)
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        first = first or s
        d_first = d_first or ds
        last, d_last = s, ds
    assert last["l1"] < 0.6 * first["l1"]
    assert last["lpips"] < first["lpips"]
    assert last["nll"] < 0.7 * first["nll"]
    assert "g" in last and last["d_weight"] > 0
    assert d_last["d"] < d_first["d"]


def test_hinge_and_adaptive_weight():
    assert float(hinge_d_loss(torch.full((2, 1, 3, 3), 2.0), torch.full((2, 1, 3, 3), -2.0))) == 0.0
    assert float(hinge_d_loss(torch.zeros(1), torch.zeros(1))) == pytest.approx(1.0)
    w = torch.randn(3, 3, requires_grad=True)
    nll = (w * 2).sum()
    g = (w * 4).sum()
    assert float(adaptive_weight(nll, g, w, scale=1.0)) == pytest.approx(0.5, rel=1e-3)


def test_gan_term_waits_for_disc_start():
    model = _vqgan()
    loss_fn = VQGANLoss(None, disc_start=5, disc=PatchDiscriminator(n_layers=1))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    rec, q, _ = model(x)
    _, before = loss_fn.generator_loss(x, rec, q, 4, model.last_decoder_layer_weight)
    _, after = loss_fn.generator_loss(x, rec, q, 5, model.last_decoder_layer_weight)
    assert "g" not in before and "g" in after and "lpips" not in before


def test_squared_error_reconstruction_term():
    """--rec-loss l2: the pixel term is the mean squared error (optimises PSNR); l1 stays the default."""
    x = torch.zeros(1, 3, 4, 4)
    rec = torch.full((1, 3, 4, 4), 0.5)
    q = torch.tensor(0.0)
    l1, s1 = VQGANLoss(None, disc_weight=0).generator_loss(x, rec, q, 0, None)
    l2, s2 = VQGANLoss(None, disc_weight=0, rec_loss="l2").generator_loss(x, rec, q, 0, None)
    assert float(l1) == pytest.approx(0.5) and float(l2) == pytest.approx(0.25)
    assert s1["l1"] == s2["l1"] == pytest.approx(0.5) and s2["nll"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="rec_loss"):
        VQGANLoss(None, rec_loss="l3")


def test_lpips_without_cached_vgg_weights_stops_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(PerceptualWeightsMissing, match="--no-perceptual") as exc:
        make_lpips("vgg")
    assert "--allow-download" in str(exc.value) and str(tmp_path / "hub") in str(exc.value)


def test_train_vqgan_cli_reports_missing_vgg_weights(tmp_path, monkeypatch):
    from training.make_shapes import write_shapes
    from training.train_vqgan import run

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    write_shapes(tmp_path / "d", 4, 16)
    with pytest.raises(SystemExit, match="VGG16"):
        run(["--data", str(tmp_path / "d"), "--image-size", "16", "--preset", "tiny", "--out", str(tmp_path / "o")])


def test_ema_and_schedule():
    m = torch.nn.Linear(2, 1)
    ema = EMA(m, decay=0.9999)
    with torch.no_grad():
        m.weight.add_(1.0)
    ema.update(m)  # decay = min(0.9999, 2/11)
    d = 2 / 11
    expected = ema.weights(m)["weight"]
    assert torch.allclose(expected, (m.weight - 1.0) * d + m.weight * (1 - d), atol=1e-6)
    assert warmup_cosine(0, warmup=10, total=110, lr=1.0, lr_start=0.0, lr_min=0.0) == 0.0
    assert warmup_cosine(10, warmup=10, total=110, lr=1.0, lr_start=0.0, lr_min=0.0) == pytest.approx(1.0)
    assert warmup_cosine(60, warmup=10, total=110, lr=1.0, lr_start=0.0, lr_min=0.0) == pytest.approx(0.5)
    assert warmup_cosine(500, warmup=10, total=110, lr=1.0, lr_start=0.0, lr_min=0.1) == pytest.approx(0.1)
    assert not math.isnan(warmup_cosine(0, warmup=0, total=1, lr=1.0, lr_start=0.0, lr_min=0.0))


def test_cpu_bf16_precision_is_an_explicit_choice_and_needs_bf16_instructions(monkeypatch):
    from training import optim

    cpu = torch.device("cpu")
    assert optim.resolve_precision("auto", cpu) == "fp32"  # the CPU default does not change
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        optim.resolve_precision("fp16", cpu)
    monkeypatch.setattr(optim, "cpu_bf16_supported", lambda: False)
    with pytest.raises(ValueError, match="lacks"):
        optim.resolve_precision("bf16", cpu)
    monkeypatch.setattr(optim, "cpu_bf16_supported", lambda: True)
    assert optim.resolve_precision("bf16", cpu) == "bf16"


def test_the_quantiser_stays_fp32_under_a_trainers_bf16_autocast():
    model = _vqgan()
    gen = torch.Generator().manual_seed(1)
    codebook = model.quantize.embedding.weight
    # codes and latents that differ only below bf16's resolution around 1.0: bf16 distances pick other codes
    with torch.no_grad():
        codebook.copy_(1.0 + 1e-3 * torch.randn(codebook.shape, generator=gen))
    z = 1.0 + 1e-3 * torch.randn(2, model.cfg.embed_dim, 2, 2, generator=gen)  # [B, D, h, w]
    ref_ids = model.nearest_codes(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # [B*h*w, D]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what the distances would be without the guard
        unguarded = ((flat**2).sum(1, keepdim=True) + (codebook**2).sum(1) - 2.0 * (flat @ codebook.t())).argmin(1)
        ids = model.nearest_codes(z)
        z_q, loss, st_ids = model.quantize_st(z)
    assert not torch.equal(unguarded.reshape(ref_ids.shape), ref_ids)  # the setup is sensitive to bf16
    assert torch.equal(ids, ref_ids) and torch.equal(st_ids, ref_ids)
    assert z_q.dtype == torch.float32 and loss.dtype == torch.float32
