"""Turning logits into tokens: the one token step of every transition (:class:`TokenStep`).

At every token step the logits (float32) go through: the blend of several conditions (optional),
classifier-free guidance (optional), forcing of known tokens (masked refinement), temperature, top-k,
top-p, softmax, one draw, and the known token written over the draw. :class:`TokenStep` is the only
place that does this; :mod:`.transition` runs it once per token.

Draws come from a :class:`TokenSampler`:

* :class:`PerItemSampler` (the default): every batch item has its own stream (see :mod:`.rng`);
  a draw is an inverse-CDF lookup of a uniform drawn up front, so an item's tokens do not depend
  on the rest of the batch and no Python-side RNG work happens per token.
* :class:`TorchMultinomialSampler`: one ``torch.multinomial(probs, 1)`` per step on a torch
  generator, which is what the original code does (used to replay its random-number order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .. import rng, validate

#: The smallest temperature accepted up front: logits up to 1e8 divided by it stay below float32's maximum
#: (3.4e38). Smaller ones turn ordinary logits into inf (the draw-time check below catches the rest).
MIN_TEMPERATURE = 1e-30


@dataclass
class Progress:
    """What a progress callback receives after every token step.

    ``done`` / ``total`` count token steps over the whole call; ``level_codes`` is set (int64
    [B, h, w]) on the last token of a transition, so a caller can preview each finished level.
    """

    scale: int
    level: int  # the level being written (= scale)
    token: int  # 0-based index of the token just drawn
    n_tokens: int
    done: int
    total: int
    level_codes: torch.Tensor | None = None


ProgressCallback = Callable[[Progress], None]


@dataclass
class TokenFilter:
    """Per-step logit processing of one scale. ``None`` disables top-k / top-p."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def validate(self, vocab_size: int) -> None:
        """Check (and normalise to Python numbers) the settings; ValueError naming the setting."""
        self.temperature = validate.as_float(self.temperature, "temperature")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.temperature < MIN_TEMPERATURE:
            raise ValueError(f"temperature {self.temperature:g} is too small for float32 logits (it divides them "
                             f"to inf); use at least {MIN_TEMPERATURE:g}, or top_k=1 for the most likely token")
        if self.top_k is not None:
            self.top_k = validate.as_int(self.top_k, "top_k", minimum=1)
        if self.top_p is not None:
            self.top_p = validate.as_float(self.top_p, "top_p")
            if not 0 < self.top_p <= 1:
                raise ValueError(f"top_p must be in (0, 1] (or None), got {self.top_p}")

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """float32 logits [B, K] -> filtered logits [B, K] (-inf where removed)."""
        if self.temperature != 1.0:
            logits = logits / self.temperature
        if self.top_k is not None and self.top_k < logits.shape[-1]:
            kth = torch.topk(logits, self.top_k, dim=-1).values[..., -1:]  # [B, 1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p is not None and self.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
            cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
            remove = cum - torch.softmax(sorted_logits, dim=-1) >= self.top_p  # keep the first over top_p
            remove_orig = torch.zeros_like(remove).scatter(-1, order, remove)
            logits = logits.masked_fill(remove_orig, float("-inf"))
        return logits


class TokenSampler:
    """Draws one token per batch item from probabilities."""

    def begin(self, batch: int, n_tokens: int, key: object) -> None:
        """Called once before a transition's token loop (``key`` names the transition)."""

    def draw(self, probs: torch.Tensor, n: int) -> torch.Tensor:  # pragma: no cover - interface
        """float32 probs [B, K] -> int64 [B] for token step ``n``."""
        raise NotImplementedError


class PerItemSampler(TokenSampler):
    """Inverse-CDF sampling with per-item uniforms drawn at the start of each transition."""

    def __init__(self, seeds: Sequence[int]):
        self.seeds = list(seeds)
        self.u: torch.Tensor | None = None

    def begin(self, batch: int, n_tokens: int, key: object) -> None:
        if batch != len(self.seeds):
            raise ValueError(f"{len(self.seeds)} seeds for a batch of {batch}")
        self.u = rng.uniform(rng.generators(self.seeds, "tokens", key), n_tokens)  # [B, N] float64

    def draw(self, probs: torch.Tensor, n: int) -> torch.Tensor:
        cdf = probs.double().cumsum(-1)  # [B, K]
        u = self.u[:, n].to(cdf.device) * cdf[:, -1]  # [B]
        idx = torch.searchsorted(cdf, u[:, None], right=True)[:, 0]
        return idx.clamp_(max=probs.shape[-1] - 1)


class TorchMultinomialSampler(TokenSampler):
    """``torch.multinomial(probs, 1)`` per step: the original code's draws (for replay)."""

    def __init__(self, generator: torch.Generator | None = None):
        self.generator = generator

    def draw(self, probs: torch.Tensor, n: int) -> torch.Tensor:
        return torch.multinomial(probs, 1, generator=self.generator)[:, 0]


class NonFiniteProbabilities(ValueError):
    """The probabilities of a draw are NaN or inf; the message names the setting that produced them."""


class ProbabilityCheck:
    """Refuses to draw from non-finite probabilities (they would silently become the last token id).

    On the CPU every draw is checked before it happens; on an accelerator the check is accumulated on the
    device (no synchronisation per token) and raised at the end of the transition, before its tokens are used.
    """

    def __init__(self, scale: int, token_filter: TokenFilter, guidance: float, device: torch.device):
        self.scale, self.token_filter, self.guidance = scale, token_filter, guidance
        self.immediate = device.type == "cpu"
        self.bad: torch.Tensor | None = None

    def __call__(self, n: int, raw: torch.Tensor, mixed: torch.Tensor, probs: torch.Tensor) -> None:
        """raw: the network's logits [rows, K]; mixed: after guidance / blending [B, K]; probs [B, K]."""
        ok = torch.isfinite(probs).all()
        if self.immediate:
            if not bool(ok):
                raise NonFiniteProbabilities(self.explain(n, raw, mixed))
        else:
            self.bad = ~ok if self.bad is None else self.bad | ~ok

    def finish(self) -> None:
        if self.bad is not None and bool(self.bad):
            raise NonFiniteProbabilities(self.explain(None, None, None))

    def explain(self, n: int | None, raw, mixed) -> str:
        where = f"scale {self.scale}" + ("" if n is None else f", token {n}")
        f = self.token_filter
        settings = f"temperature={f.temperature:g}, top_k={f.top_k}, top_p={f.top_p}, guidance={self.guidance:g}"
        if raw is not None and not bool(torch.isfinite(raw).all()):
            cause = (f"the network's logits are NaN or inf (damaged weights, or an overflow in {raw.dtype}); "
                     "load the model in float32 or check the model file")
        elif mixed is not None and not bool(torch.isfinite(mixed).all()):
            cause = f"guidance {self.guidance:g} overflows the logits; use a smaller guidance"
        elif mixed is not None:
            cause = (f"temperature {f.temperature:g} is too small for float32 (it divides the logits to inf); "
                     "use a larger temperature, or top_k=1 for the most likely token")
        else:
            cause = "check the temperature (too small for float32?), the guidance and the model's weights"
        return f"non-finite probabilities at {where} ({settings}): {cause}"


@dataclass
class Known:
    """Tokens a transition must reproduce: ``tokens`` int64 [B, N], ``mask`` bool [B, N] (True = known)."""

    tokens: torch.Tensor
    mask: torch.Tensor


class TokenStep:
    """The token step of one transition: condition blend, guidance, known tokens, filtering, the draw.

    ``n_sets`` condition sets are blended (product of experts, weights given per call); with ``guided`` one
    more row group holds the unconditional logits. Known tokens are forced twice on purpose: the logits
    become one-hot at the known id (so the probabilities a sampler sees, and its stream, stay those of a
    consistent chain), and the drawn token is then overwritten with the known one (so no sampler, whatever
    it does with the probabilities, can change a known token).
    """

    def __init__(self, *, scale: int, vocab_size: int, n_sets: int, guided: bool, guidance: float,
                 token_filter: TokenFilter, sampler: TokenSampler, batch: int, device: torch.device):
        self.n_sets, self.guided, self.guidance = n_sets, guided, guidance
        self.token_filter, self.sampler = token_filter, sampler
        self.check = ProbabilityCheck(scale, token_filter, guidance, device)
        self._forced = torch.full((batch, vocab_size), float("-inf"), device=device)  # [B, K]

    def __call__(self, logits: torch.Tensor, n: int, mix: torch.Tensor | None = None,
                 known: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """logits float32 [rows, B, K] (the condition sets, then the unconditional rows when guided);
        mix: float32 [n_sets] blend weights (only with several sets); known: (tokens int64 [B], mask bool [B])
        at this position, or None when no item knows it. Returns the drawn tokens int64 [B] (draw ``n``)."""
        if self.n_sets == 1:
            combined = logits[0]  # [B, K]
        else:
            combined = (mix[:, None, None] * logits[: self.n_sets]).sum(0)  # [B, K]
        if self.guided:
            combined = logits[-1] + self.guidance * (combined - logits[-1])
        if known is not None:
            tokens, mask = known
            one = self._forced.scatter(1, tokens[:, None], 0.0)  # 0 at the known id, -inf elsewhere
            combined = torch.where(mask[:, None], one, combined)
        probs = torch.softmax(self.token_filter(combined), dim=-1)
        self.check(n, logits, combined, probs)
        token = self.sampler.draw(probs, n)  # [B]
        if known is not None:
            token = torch.where(mask, tokens, token)
        return token

    def finish(self) -> None:
        """Raise for non-finite probabilities found on an accelerator (checked once per transition)."""
        self.check.finish()
