"""Fast random-weight models at full size (benchmarks), built without a transient float32 copy.

``ImageBART(cfg)`` initialises every weight with ``normal_`` in float32 on the CPU, which for the
released architectures (up to 3.2 G parameters) takes minutes and, when another dtype or device is
wanted, holds two copies for a moment. :func:`random_model` constructs the module on the ``meta``
device, materialises each part directly on the target device in the target dtype (transformers in
``dtype``, the VQGAN in float32) and fills it with uniform noise of GPT-like scale (std 0.02) tiled from a small random pool,
so that filling costs a copy. The
weights are meaningless: they are for measuring time and memory, not for images.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .config import ModelConfig
from .model import ImageBART


def _fill_(module: nn.Module, pool: torch.Tensor) -> None:
    """Weights from the random ``pool`` (tiled at a shifting offset), ones/zeros for norms, zero biases."""
    offset = 0
    for m in module.modules():
        for name, p in m.named_parameters(recurse=False):
            with torch.no_grad():
                if isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
                    p.fill_(1.0 if name == "weight" else 0.0)
                elif name == "bias":
                    p.zero_()
                else:
                    flat = p.view(-1)
                    n = flat.numel()
                    for start in range(0, n, pool.numel() // 2):
                        count = min(pool.numel() // 2, n - start)
                        offset = (offset + 7919) % (pool.numel() // 2)
                        flat[start : start + count].copy_(pool[offset : offset + count])


_POOL = 1 << 22  # random values tiled into the weights (filling is then a copy, not an RNG pass)


def _materialise(module: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Replace every meta parameter/buffer by uninitialised storage on ``device`` (floats in ``dtype``)."""
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                want = dtype if p.is_floating_point() else p.dtype
                m._parameters[name] = nn.Parameter(torch.empty(p.shape, dtype=want, device=device),
                                                   requires_grad=False)
        for name, b in list(m._buffers.items()):
            if b is not None:
                m._buffers[name] = torch.empty(b.shape, dtype=b.dtype, device=device)


def random_model(config: ModelConfig, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 seed: int = 0) -> ImageBART:
    """An :class:`ImageBART` with random weights, transformers in ``dtype`` and the VQGAN in float32.

    Peak memory is one copy of the model in the asked dtypes (no float32 staging copy).
    """
    device = torch.device(device)
    config.validate()
    with torch.device("meta"):
        model = ImageBART(config, init=False)
    _materialise(model.vqgan, device, torch.float32)
    for scale in model.scales:
        _materialise(scale, device, dtype)
    gen = torch.Generator().manual_seed(seed)
    half_width = 0.02 * math.sqrt(3.0)  # std 0.02, like GPT initialisation
    pool = (torch.rand(_POOL, generator=gen) * 2 - 1) * half_width
    _fill_(model.vqgan, pool.to(device))
    with torch.no_grad():
        model.vqgan.quantize.used.copy_(torch.arange(config.vocab_size, dtype=torch.int64))
    for scale in model.scales:
        _fill_(scale, pool.to(device, dtype))
    model.reset_residual_alphas(device)
    model.eval()
    return model
