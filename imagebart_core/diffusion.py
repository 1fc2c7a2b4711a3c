"""The fixed multinomial diffusion over codes (paper eq. 5-7).

Levels run from 1 (clean codes) to T (uniform noise); the step into level ``l`` redraws each
token with probability ``beta_l`` uniformly from the K codes (the draw may hit the old value):

    q(x_l | x_{l-1})   = Cat((1 - beta_l) e(x_{l-1}) + beta_l / K)
    q(x_l | x_1)       = Cat(abar_l e(x_1) + (1 - abar_l) / K),   abar_l = prod_{m<=l} (1 - beta_m)
    q(x_{l-1} | x_l, x_1) proportional to q(x_l | x_{l-1}=k) q(x_{l-1}=k | x_1)

Arrays are indexed by ``level - 1``: ``betas[0] = 0`` belongs to level 1, ``betas[T-1] = 1``.
All schedule arithmetic is float32, like the original code (so e.g. the geometric alpha-bar of a
4-scale model is 0.49999997, not 0.5). Probabilities are float32 unless stated; the posterior and
the KL are computed in log space.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from . import rng


# -- the process ---------------------------------------------------------------------------------
class MultinomialDiffusion:
    """Forward process, posterior and KL for a fixed schedule over K codes."""

    def __init__(self, betas: Sequence[float], vocab_size: int):
        self.betas = torch.tensor(list(betas), dtype=torch.float32, device="cpu")  # [T]
        self.alphas = 1.0 - self.betas  # [T]
        self.alpha_bar = torch.cumprod(self.alphas, 0)  # [T], alpha_bar[0] = 1
        self.K = int(vocab_size)
        self.num_levels = int(self.betas.numel())

    def _check_level(self, level: int, lowest: int = 1) -> int:
        if not lowest <= level <= self.num_levels:
            raise ValueError(f"level {level} outside {lowest}..{self.num_levels}")
        return level - 1

    def _mix(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """keep * onehot(x) + (1 - keep) / K, float32 [..., K]."""
        onehot = F.one_hot(x, self.K).to(torch.float32)
        return keep * onehot + (1.0 - keep) / self.K

    def step_probs(self, x_prev: torch.Tensor, level: int) -> torch.Tensor:
        """q(x_level | x_{level-1}): int64 [...] -> float32 [..., K]. level >= 2."""
        i = self._check_level(level, 2)
        return self._mix(x_prev, self.alphas[i])

    def marginal_probs(self, x1: torch.Tensor, level: int) -> torch.Tensor:
        """q(x_level | x_1): int64 [...] -> float32 [..., K]."""
        i = self._check_level(level)
        return self._mix(x1, self.alpha_bar[i])

    def log_posterior(self, x_t: torch.Tensor, x1: torch.Tensor, level: int) -> torch.Tensor:
        """log q(x_{level-1} | x_level = x_t, x_1): int64 [...] twice -> float32 [..., K]. level >= 2."""
        i = self._check_level(level, 2)
        log_forward = torch.log(self._mix(x_t, self.alphas[i]))  # log q(x_t | x_{t-1} = k)
        log_prior = torch.log(self._mix(x1, self.alpha_bar[i - 1]))  # log q(x_{t-1} = k | x_1)
        joint = log_forward + log_prior
        return joint - torch.logsumexp(joint, dim=-1, keepdim=True)

    def posterior_probs(self, x_t: torch.Tensor, x1: torch.Tensor, level: int) -> torch.Tensor:
        """q(x_{level-1} | x_t, x_1) as float32 [..., K] (sums to one)."""
        return self.log_posterior(x_t, x1, level).exp()

    @staticmethod
    def kl(log_target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """KL(target || softmax(logits)) over the last axis: float [..., K] twice -> float [...].

        ``log_target`` may hold -inf (zero probability); those terms count as 0.
        """
        log_model = torch.log_softmax(logits.float(), dim=-1)
        target = log_target.exp()
        terms = torch.where(target > 0, target * (log_target - log_model), torch.zeros_like(target))
        return terms.sum(-1)

    # -- seeded sampling (one generator per batch item) -------------------------------------------
    def redraw(self, x: torch.Tensor, prob: float | torch.Tensor, gens: Sequence[torch.Generator]) -> torch.Tensor:
        """Replace each token with a uniform code with probability ``prob`` (per item streams).

        x: int64 [B, ...] -> int64 [B, ...] on x's device. For each item the draws are, in order,
        the uniforms deciding the redraw, then the replacement codes.
        """
        b = x.shape[0]
        n = x[0].numel()
        u = rng.uniform(gens, n)  # [B, n] float64
        r = rng.randint(gens, self.K, n)  # [B, n]
        p = float(prob)
        flip = (u < p).to(x.device).view_as(x)
        return torch.where(flip, r.to(x.device).view_as(x), x).reshape(b, *x.shape[1:])

    def sample_marginal(self, x1: torch.Tensor, level: int, gens: Sequence[torch.Generator]) -> torch.Tensor:
        """x_level ~ q(x_level | x_1)."""
        i = self._check_level(level)
        return self.redraw(x1, 1.0 - float(self.alpha_bar[i]), gens)

    def sample_between(self, x: torch.Tensor, from_level: int, to_level: int, gens) -> torch.Tensor:
        """x_to ~ q(x_to | x_from) for to >= from (keep prob abar_to / abar_from)."""
        if to_level < from_level:
            raise ValueError("can only noise towards higher levels")
        if to_level == from_level:
            return x.clone()
        i, j = self._check_level(from_level), self._check_level(to_level)
        keep = float(self.alpha_bar[j] / self.alpha_bar[i]) if float(self.alpha_bar[i]) > 0 else 0.0
        return self.redraw(x, 1.0 - keep, gens)

    def sample_posterior(self, x_t: torch.Tensor, x1: torch.Tensor, level: int, gens) -> torch.Tensor:
        """x_{level-1} ~ q(x_{level-1} | x_t, x_1) by inverse-CDF with per-item uniforms."""
        probs = self.posterior_probs(x_t, x1, level)  # [B, ..., K]
        b = x_t.shape[0]
        flat = probs.reshape(b, -1, self.K).double()
        u = rng.uniform(gens, flat.shape[1]).to(flat.device)  # [B, N]
        cdf = flat.cumsum(-1)
        idx = torch.searchsorted(cdf, (u * cdf[..., -1]).unsqueeze(-1), right=True).squeeze(-1)
        return idx.clamp_(max=self.K - 1).view_as(x_t)
