"""Losses of the compression stage (the taming-transformers recipe, paper Sec. 3.2).

Generator: L1 reconstruction + LPIPS perceptual distance + adaptive-weight hinge GAN term (from a delayed
start) + codebook/commitment loss. Discriminator: a patch discriminator with the hinge loss.

LPIPS uses a VGG16 trunk whose ImageNet weights torchvision downloads once. :func:`make_lpips` refuses to
start a download implicitly: without cached weights it raises :class:`PerceptualWeightsMissing`, whose message
says where the file goes and how to proceed (allow the download once, copy the file, or turn the perceptual
term off). Tests build LPIPS with a random trunk on purpose (``trunk="random"``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's VGG16_Weights.IMAGENET1K_V1


class PerceptualWeightsMissing(RuntimeError):
    """LPIPS's VGG16 weights are not cached and downloading was not allowed."""


def vgg_weights_path() -> Path:
    """Where torchvision keeps the VGG16 ImageNet weights (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE


def make_lpips(trunk: str = "vgg", allow_download: bool = False) -> nn.Module:
    """A frozen LPIPS(VGG) module in eval mode. ``trunk``: ``vgg`` (ImageNet weights, the real loss) or
    ``random`` (random trunk, for tests: no download, not a perceptual metric)."""
    import lpips

    if trunk == "vgg":
        path = vgg_weights_path()
        if not path.is_file() and not allow_download:
            raise PerceptualWeightsMissing(
                f"the LPIPS perceptual loss needs torchvision's VGG16 ImageNet weights ({VGG16_FILE}, 528 MB), "
                f"and none are cached at {path}. Either run once with --allow-download (needs network; torch "
                f"downloads the file there), or copy {VGG16_FILE} to {path.parent} (or set TORCH_HOME), or train "
                "without the perceptual term with --no-perceptual (reconstructions get blurrier)."
            )
    elif trunk != "random":
        raise ValueError(f"unknown LPIPS trunk {trunk!r} (vgg | random)")
    with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        module = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=(trunk == "random"), verbose=False)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class PatchDiscriminator(nn.Module):
    """The pix2pix / taming "NLayerDiscriminator": [B, 3, H, W] -> patch logits [B, 1, h', w'].

    conv 4x4 s2 + LeakyReLU(0.2), then ``n_layers - 1`` conv 4x4 s2 + BatchNorm + LeakyReLU with doubling
    channels (at most 8x), one conv 4x4 s1 + BatchNorm + LeakyReLU, and a final conv 4x4 s1 to one channel.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * mult),
                       nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=False), nn.BatchNorm2d(ndf * mult),
                   nn.LeakyReLU(0.2, True), nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
        self.main = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """0.5 (mean relu(1 - D(x)) + mean relu(1 + D(x_rec)))."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_weight(nll: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, scale: float = 1.0,
                    eps: float = 1e-4, max_weight: float = 1e4) -> torch.Tensor:
    """||dNLL/dW|| / (||dG/dW|| + eps) at the decoder's last layer W, clamped to [0, max_weight], times ``scale``
    (detached): balances the GAN term against the reconstruction term."""
    g_nll = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    w = torch.norm(g_nll) / (torch.norm(g_gan) + eps)
    return torch.clamp(w, 0.0, max_weight).detach() * scale


class VQGANLoss(nn.Module):
    """The generator and discriminator objectives.

    Args:
        perceptual: an LPIPS module (or None = no perceptual term); perceptual_weight its weight.
        disc_start: optimizer step from which the GAN terms are on (before: weight 0, discriminator idle).
        disc_weight: scale of the adaptive GAN weight; codebook_weight: weight of the VQ loss.
        rec_loss: the pixel reconstruction term, ``l1`` (taming's |x - x_rec|) or ``l2`` ((x - x_rec)^2, which
            optimises PSNR directly).
    """

    def __init__(self, perceptual: nn.Module | None, perceptual_weight: float = 1.0, disc_start: int = 10_000,
                 disc_weight: float = 0.8, codebook_weight: float = 1.0, disc: PatchDiscriminator | None = None,
                 rec_loss: str = "l1"):
        super().__init__()
        if rec_loss not in ("l1", "l2"):
            raise ValueError(f"rec_loss must be 'l1' or 'l2', got {rec_loss!r}")
        self.rec_loss = rec_loss
        self.perceptual = perceptual
        self.perceptual_weight = perceptual_weight if perceptual is not None else 0.0
        self.disc_start, self.disc_weight, self.codebook_weight = disc_start, disc_weight, codebook_weight
        self.disc = disc if disc is not None else PatchDiscriminator()

    def gan_active(self, step: int) -> bool:
        return self.disc_weight > 0 and step >= self.disc_start

    def generator_loss(self, x: torch.Tensor, x_rec: torch.Tensor, q_loss: torch.Tensor, step: int,
                       last_layer: torch.Tensor | None, disc: nn.Module | None = None
                       ) -> tuple[torch.Tensor, dict[str, float]]:
        """x, x_rec float [B, 3, H, W] in [-1, 1]; q_loss scalar. -> (loss, stats)."""
        x, x_rec = x.float(), x_rec.float()
        diff = x - x_rec  # [B, 3, H, W]
        rec = diff.abs() if self.rec_loss == "l1" else diff.square()
        stats = {"l1": float(diff.abs().mean().detach())}
        if self.perceptual is not None and self.perceptual_weight > 0:
            p = self.perceptual(x.contiguous(), x_rec.contiguous())  # [B, 1, 1, 1]
            rec = rec + self.perceptual_weight * p
            stats["lpips"] = float(p.mean().detach())
        nll = rec.mean()
        loss = nll + self.codebook_weight * q_loss.float()
        stats["vq"] = float(q_loss.detach())
        if self.gan_active(step):
            logits_fake = (disc or self.disc)(x_rec)
            g_loss = -logits_fake.float().mean()
            d_w = adaptive_weight(nll, g_loss, last_layer, self.disc_weight) if last_layer is not None \
                else torch.tensor(self.disc_weight)
            loss = loss + d_w * g_loss
            stats.update({"g": float(g_loss.detach()), "d_weight": float(d_w)})
        stats["nll"] = float(nll.detach())
        return loss, stats

    def discriminator_loss(self, x: torch.Tensor, x_rec: torch.Tensor, disc: nn.Module | None = None
                           ) -> tuple[torch.Tensor, dict[str, float]]:
        d = disc or self.disc
        real, fake = d(x.detach()), d(x_rec.detach())
        loss = hinge_d_loss(real.float(), fake.float())
        return loss, {"d": float(loss.detach()), "logits_real": float(real.detach().float().mean()),
                      "logits_fake": float(fake.detach().float().mean())}
