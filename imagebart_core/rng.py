"""Seeds and per-item random streams.

Every batch item ``i`` of a call with seed ``s`` uses its own CPU generator seeded from ``s + i``
(ComfyUI's habit), so an item does not change when the batch around it changes, and item ``i``
can be reproduced alone with seed ``s + i``. Different purposes (the initial noise, the draws of
each level, re-noising passes) use streams derived from the item seed and a purpose key, so that
chaining single steps with one seed gives the same result as one whole-chain call.

All draws happen on the CPU and are moved to the model's device afterwards: results do not
depend on the device.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from . import validate

_MASK63 = (1 << 63) - 1


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed derived from ``seed`` and any hashable description ``keys``."""
    text = repr((int(seed), *keys)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & _MASK63


def item_seeds(seed: int | Sequence[int], batch: int) -> list[int]:
    """Per-item seeds: ``seed + i`` for an integer (Python or NumPy), or the given list (its length must be
    ``batch``). Floats and bools are refused with an error naming ``seed``."""
    return validate.seeds_for(seed, batch)


def generators(seeds: Sequence[int], *keys: object) -> list[torch.Generator]:
    """One CPU generator per item, each seeded with ``derive_seed(seed_i, *keys)``."""
    return [torch.Generator().manual_seed(derive_seed(s, *keys)) for s in seeds]


def uniform(gens: Sequence[torch.Generator], n: int) -> torch.Tensor:
    """float64 [B, n] uniforms in [0, 1), row i drawn from ``gens[i]``."""
    return torch.stack([torch.rand(n, generator=g, dtype=torch.float64) for g in gens])


def randint(gens: Sequence[torch.Generator], high: int, n: int) -> torch.Tensor:
    """int64 [B, n] uniform integers in [0, high), row i drawn from ``gens[i]``."""
    return torch.stack([torch.randint(0, high, (n,), generator=g) for g in gens])
