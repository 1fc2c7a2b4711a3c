"""The value that travels between steps: a grid of codes, its chain level, and its codebook."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch


def codebook_identity(used: torch.Tensor, embedding: torch.Tensor) -> str:
    """The codebook identity of :attr:`Codes.codebook_id`: a short SHA-256 of the shrink list (int64 [K]) and
    the codebook embedding (any float dtype, hashed as float32 [n_embed, D]). Model files, trainers and the
    converter all name codebooks with this one function, so their codes agree."""
    h = hashlib.sha256()
    h.update(used.detach().cpu().numpy().tobytes())
    h.update(embedding.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Codes:
    """A batch of token grids at one level of the chain.

    tokens: int64 [B, h, w], shrunk-codebook ids in [0, vocab_size).
    level: 1 = clean codes (decodable) ... T = uniform noise.
    codebook_id: identity of the VQGAN codebook + shrink list they index; codes can move between
        models that share it (e.g. two chains trained on one VQGAN), and nowhere else.
    """

    tokens: torch.Tensor
    level: int
    codebook_id: str
    vocab_size: int

    def __post_init__(self):
        if self.tokens.dtype != torch.long or self.tokens.ndim != 3:
            raise ValueError(f"codes must be int64 [B, h, w], got {self.tokens.dtype} {tuple(self.tokens.shape)}")

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.tokens.shape[1]), int(self.tokens.shape[2])

    def with_tokens(self, tokens: torch.Tensor, level: int | None = None) -> Codes:
        """The same codebook, new tokens (and level)."""
        return Codes(tokens, self.level if level is None else level, self.codebook_id, self.vocab_size)

    def select(self, indices) -> Codes:
        """A sub-batch."""
        return self.with_tokens(self.tokens[indices].reshape(-1, *self.grid))

    def cpu(self) -> Codes:
        return self.with_tokens(self.tokens.cpu())

    def __repr__(self) -> str:
        return f"Codes(batch={self.batch_size}, grid={self.grid}, level={self.level}, codebook={self.codebook_id})"
