"""What the VQGAN trainer measures besides its losses: codebook usage and colour fidelity.

* **codebook usage** of a set of code ids: how many distinct codes occur (``codes_used``) and the perplexity
  ``exp(entropy)`` of their histogram (``perplexity``: the number of equally used codes that would give the
  same entropy; far below ``codes_used`` when a few codes dominate).
* **reconstruction** of images ``x`` by ``x_rec`` (both ``[-1, 1]``, the reconstruction clamped): ``psnr`` in dB
  on the 0..1 scale (mean over images of ``10 log10(1 / mse)``), ``mae`` the mean absolute RGB error in 0..255
  steps, and ``colour_err`` the same after averaging both images over 8x8-pixel cells, i.e. the error of the
  regional colours, which stays small for a blurred but correctly coloured reconstruction and grows when
  colours shift.

:func:`evaluate_vqgan` computes both on an image folder (the held-out split), in fixed order, batch by batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

COLOUR_CELL = 8  # pixels per side of the cells whose mean colours colour_err compares


def code_usage(ids: torch.Tensor, n_embed: int) -> dict[str, float]:
    """ids: int64 (any shape) in ``[0, n_embed)`` -> ``{"codes_used", "perplexity"}``."""
    counts = torch.bincount(ids.reshape(-1).cpu(), minlength=n_embed).double()  # [n_embed]
    return usage_from_counts(counts)


def usage_from_counts(counts: torch.Tensor) -> dict[str, float]:
    """counts: ``[n_embed]`` occurrences per code -> ``{"codes_used", "perplexity"}``."""
    counts = counts.double()
    total = float(counts.sum())
    if total <= 0:
        return {"codes_used": 0.0, "perplexity": 0.0}
    p = counts[counts > 0] / total
    return {"codes_used": float((counts > 0).sum()), "perplexity": math.exp(float(-(p * p.log()).sum()))}


def reconstruction_errors(x: torch.Tensor, x_rec: torch.Tensor) -> dict[str, torch.Tensor]:
    """x, x_rec float ``[B, 3, H, W]`` in ``[-1, 1]`` -> per-image ``psnr``, ``mae``, ``colour_err``, each ``[B]``."""
    a = (x.float().clamp(-1, 1) + 1) / 2  # [B, 3, H, W] in 0..1
    b = (x_rec.float().clamp(-1, 1) + 1) / 2
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)  # [B]
    cell = min(COLOUR_CELL, a.shape[-1], a.shape[-2])
    colour = (F.avg_pool2d(a, cell) - F.avg_pool2d(b, cell)).abs().flatten(1).mean(1)  # [B]
    return {"psnr": 10 * torch.log10(1.0 / mse), "mae": (a - b).abs().flatten(1).mean(1) * 255.0,
            "colour_err": colour * 255.0}


@torch.no_grad()
def evaluate_vqgan(model, dataset, batch_size: int = 32, max_images: int | None = None,
                   device: torch.device | str = "cpu") -> dict[str, float]:
    """Reconstruct the first ``max_images`` images of ``dataset`` (a training.data.ImageFolder; centre crops, no
    augmentation) through the full codebook and return the mean ``psnr``, ``mae``, ``colour_err``, the
    usage (``codes_used``, ``perplexity``) of all their codes, ``codebook_share`` = codes_used / n_embed, and
    ``images``. The model's train/eval mode is restored afterwards."""
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    if n < 1:
        raise ValueError("evaluate_vqgan needs at least one image")
    was = model.training
    model.eval()
    sums = {"psnr": 0.0, "mae": 0.0, "colour_err": 0.0}
    n_embed = model.cfg.n_embed
    counts = torch.zeros(n_embed, dtype=torch.float64)
    try:
        for start in range(0, n, batch_size):
            x = torch.stack([dataset.load(i, 0) for i in range(start, min(n, start + batch_size))]).to(device)
            prequant = model.encode_prequant(x)  # [b, D, h, w]
            ids = model.nearest_codes(prequant)  # [b, h, w] full ids
            rec = model.decode_full_ids(ids)  # [b, 3, H, W]
            for k, v in reconstruction_errors(x, rec).items():
                sums[k] += float(v.sum())
            counts += torch.bincount(ids.reshape(-1).cpu(), minlength=n_embed).double()
    finally:
        model.train(was)
    out = {k: v / n for k, v in sums.items()}
    out.update(usage_from_counts(counts))
    out["codebook_share"] = out["codes_used"] / n_embed
    out["images"] = float(n)
    return out
