"""Shared by the step-kernel tests: the logits of a scale-1 decode, token by token, on given kernels."""

from __future__ import annotations

import torch


def decode_logits(model, kernels_for, batch: int = 1, tokens: int = 6, static: bool = False):
    """Prepare scale 1 of ``model`` (class 1 for every item) on ``kernels_for(net)`` and feed a fixed random target
    for ``tokens`` steps (``step``, or ``step_at`` with ``static``). Returns (float32 logits [tokens, B, K], the
    decode state)."""
    net = model.scales[0]
    x_in = torch.randint(0, model.config.vocab_size, (batch, net.cfg.target_len),
                         generator=torch.Generator().manual_seed(1))
    cond = model.class_condition([1] * batch).tokens
    out = []
    with torch.inference_mode():
        state = net.prepare(x_in, 1, cond, kernels=kernels_for(net))
        prev = torch.zeros(batch, dtype=torch.long)  # SOS at index 0
        for n in range(tokens):
            logits = net.step_at(state, torch.tensor([n]), prev) if static else net.step(state, n, prev if n else None, 1)
            out.append(logits.float())
            prev = x_in[:, n]
    return torch.stack(out), state
