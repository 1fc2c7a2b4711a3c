"""The optimisation step of the trainers: learning-rate schedule, EMA of the weights, mixed precision,
gradient accumulation and clipping."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch

from imagebart_core.packed import bf16_supported as cpu_bf16_supported  # the sampler's own check


def warmup_cosine(step: int, *, warmup: int, total: int, lr: float, lr_start: float, lr_min: float) -> float:
    """Linear warm-up from ``lr_start`` to ``lr`` over ``warmup`` steps, then cosine decay to ``lr_min`` at
    ``total`` (constant after). ``step`` counts optimizer steps from 0."""
    if warmup > 0 and step < warmup:
        return lr_start + (lr - lr_start) * step / warmup
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * t))


def set_lr(optimizer: torch.optim.Optimizer, value: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = value * group.get("lr_scale", 1.0)


class EMA:
    """Exponential moving average of a module's floating-point parameters and buffers (float32 shadow).

    decay_n = min(decay, (1 + n) / (10 + n)) with n the number of updates so far plus one (the original's
    ``LitEma(use_num_upates=True)``); ``shadow -= (1 - decay_n) (shadow - param)``.
    """

    def __init__(self, module: torch.nn.Module, decay: float = 0.9999, warmup: bool = True):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay, self.warmup, self.num_updates = decay, warmup, 0
        self.shadow = {k: v.detach().float().clone() for k, v in module.state_dict().items()
                       if v.is_floating_point()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        self.num_updates += 1
        n = self.num_updates
        d = min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay
        for k, v in module.state_dict().items():
            if k in self.shadow:
                s = self.shadow[k]
                s.sub_((1.0 - d) * (s - v.detach().float().to(s.device)))

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = set(self.shadow) - set(state["shadow"])
        if missing:
            raise ValueError(f"EMA state lacks {sorted(missing)[:5]}")
        self.num_updates = int(state["num_updates"])
        for k in self.shadow:
            self.shadow[k].copy_(state["shadow"][k])

    def weights(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """A state dict of ``module`` with the EMA values in place of floating-point entries (cpu)."""
        out = {}
        for k, v in module.state_dict().items():
            out[k] = (self.shadow[k].to(v.dtype) if k in self.shadow else v).detach().cpu().clone()
        return out


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on a CUDA device that supports it, else fp32 (also on every CPU: fp32 stays the CPU default).

    ``bf16`` also runs on a CPU with bf16 instructions (AVX-512 BF16 / AMX; oneDNN's convolutions and products
    under autocast, about 1.7x faster VQGAN steps on such a CPU); ``fp16`` needs CUDA.
    """
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32"
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"unknown precision {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("--precision fp16 needs a CUDA device; use fp32 or bf16 on CPU")
    if precision == "bf16" and device.type == "cpu" and not cpu_bf16_supported():
        raise ValueError("--precision bf16 on CPU needs bf16 instructions (AVX-512 BF16 or AMX), which this CPU "
                         "lacks; use fp32")
    if precision == "bf16" and device.type not in ("cpu", "cuda"):
        raise ValueError(f"--precision bf16 needs a CUDA device or a CPU; got {device.type}")
    return precision


def accumulation_sync(module, distributed: bool, last_micro_batch: bool):
    """DDP gradient sync only on the last micro-batch of an accumulated step (a no-op context otherwise)."""
    if not distributed or last_micro_batch:
        return contextlib.nullcontext()
    return module.no_sync()


def optimizer_step(scaler, optimizer, parameters, grad_clip: float = 0.0) -> None:
    """Unscale and clip the gradients (when ``grad_clip`` > 0), step the optimizer, update the scaler."""
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    scaler.step(optimizer)
    scaler.update()


def autocast(precision: str, device: torch.device):
    """The forward pass's mixed-precision context (nothing for fp32).

    bf16 on a CPU also routes attention to PyTorch's math kernel: the fused (flash) CPU kernel's bf16 backward
    took half of a training step there (a chain scale of width 128, 64 tokens, batch 24: 0.25 s per step with
    the fused kernel against 0.15 s with the math one; fp32 0.25 s).
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast(device_type=device.type, dtype=dtype))
    if device.type == "cpu":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        stack.enter_context(sdpa_kernel(SDPBackend.MATH))
    return stack


def make_scaler(precision: str, device: torch.device):
    return torch.amp.GradScaler(device.type, enabled=(precision == "fp16"))
