"""What one scale learns: the forward process drawn on the fly, and the paper's losses.

Scale s models p(x_s | x_{s+1}). For a clean code grid x_1:

* x_{s+1} ~ q(x_{s+1} | x_1) (closed form: keep each token with probability abar_{s+1}, else a uniform code);
* scale 1 is trained with cross-entropy to x_1 (paper eq. 8);
* scales s > 1 with the analytic KL to the posterior q(x_s | x_{s+1}, x_1) (eq. 7), optionally mixed with
  cross-entropy to a hard sample x_s ~ q(x_s | x_{s+1}, x_1): loss = a KL + (1 - a) CE (the original FFHQ-4
  model used a = 0 on scales 1-3). For the top scale x_{S+1} is pure noise, so its posterior is q(x_S | x_1).

The draws are vectorised: one generator per optimizer step fills the whole global batch, and each process
takes its rows (so the split over processes does not change them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from imagebart_core.diffusion import MultinomialDiffusion


@dataclass
class StepNoise:
    """Uniforms for a global batch of G grids of N tokens (float64), drawn in this order."""

    flip: torch.Tensor  # [G, N] redraw decision of the forward process
    code: torch.Tensor  # [G, N] int64 replacement codes
    post: torch.Tensor  # [G, N] inverse-CDF uniforms of the hard posterior sample
    drop: torch.Tensor  # [G] condition dropout decision

    @classmethod
    def draw(cls, gen: torch.Generator, g: int, n: int, k: int) -> StepNoise:
        flip = torch.rand(g, n, generator=gen, dtype=torch.float64)
        code = torch.randint(0, k, (g, n), generator=gen)
        post = torch.rand(g, n, generator=gen, dtype=torch.float64)
        drop = torch.rand(g, generator=gen, dtype=torch.float64)
        return cls(flip, code, post, drop)

    def rows(self, rows: list[int]) -> StepNoise:
        idx = torch.tensor(rows, dtype=torch.long)
        return StepNoise(self.flip[idx], self.code[idx], self.post[idx], self.drop[idx])


def forward_noise(diffusion: MultinomialDiffusion, x1: torch.Tensor, level: int, noise: StepNoise) -> torch.Tensor:
    """x_level ~ q(x_level | x_1): int64 [B, N] -> int64 [B, N] (redraw where flip < 1 - abar_level)."""
    p = 1.0 - float(diffusion.alpha_bar[level - 1])
    flip = (noise.flip < p).to(x1.device)
    return torch.where(flip, noise.code.to(x1.device), x1)


def sample_categorical(log_probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sample of float [B, N, K] log-probabilities with uniforms [B, N] -> int64 [B, N]."""
    cdf = log_probs.double().exp().cumsum(-1)  # [B, N, K]
    idx = torch.searchsorted(cdf, (u.to(cdf.device) * cdf[..., -1]).unsqueeze(-1), right=True).squeeze(-1)
    return idx.clamp_(max=log_probs.shape[-1] - 1)


@dataclass
class ScaleTargets:
    """Inputs and targets of scale s for a batch: all [B, N] int64 except log_posterior [B, N, K] (None at s=1)."""

    x_in: torch.Tensor  # level s+1 (the network's input)
    target: torch.Tensor  # the teacher-forcing sequence (x_1 at s=1, else the hard posterior sample)
    x1: torch.Tensor
    log_posterior: torch.Tensor | None


def make_targets(diffusion: MultinomialDiffusion, scale: int, x1: torch.Tensor, noise: StepNoise) -> ScaleTargets:
    x_in = forward_noise(diffusion, x1, scale + 1, noise)  # [B, N] level s+1
    if scale == 1:
        return ScaleTargets(x_in, x1, x1, None)
    log_post = diffusion.log_posterior(x_in, x1, level=scale + 1)  # [B, N, K] = log q(x_s | x_{s+1}, x_1)
    hard = sample_categorical(log_post, noise.post)  # [B, N] x_s ~ posterior
    return ScaleTargets(x_in, hard, x1, log_post)


def default_alpha(scale: int) -> float:
    """Weight of the KL term: 0 (pure cross-entropy, eq. 8) for scale 1, 1 (pure KL, eq. 7) above."""
    return 0.0 if scale == 1 else 1.0


def scale_loss(logits: torch.Tensor, t: ScaleTargets, scale: int, alpha: float | None = None
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss of scale ``scale`` from teacher-forced logits float [B, N, K].

    Returns (scalar loss, {"ce": ..., "kl": ...} floats for logging). Scale 1 is always CE to x_1.
    """
    a = default_alpha(scale) if alpha is None else float(alpha)
    logits = logits.float()
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), t.target.reshape(-1))  # mean over B*N
    if scale == 1 or t.log_posterior is None:
        return ce, {"ce": float(ce.detach())}
    kl = MultinomialDiffusion.kl(t.log_posterior.to(logits.device), logits).mean()  # mean over B*N
    if a >= 1.0:
        loss = kl
    elif a <= 0.0:
        loss = ce
    else:
        loss = a * kl + (1.0 - a) * ce
    return loss, {"ce": float(ce.detach()), "kl": float(kl.detach())}
