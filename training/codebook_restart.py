"""Restarts of dead codebook entries during VQGAN training.

A code that no encoder output picked during the last ``every`` optimizer steps gets no gradient from the
codebook loss and stays dead for good (taming's tiny uniform initialisation makes most codes dead from the
start). Every ``every`` steps, :class:`DeadCodeRestarter` moves each such code onto an encoder output of the
current batch, chosen at random with a generator derived from ``(seed, step)`` (the same draw on every
process; under DDP process 0's choice is broadcast), and clears the code's AdamW moments. Its usage counts
are part of the training checkpoint, so a resumed run restarts exactly as an uninterrupted one.
"""

from __future__ import annotations

import torch

from . import data_order


class DeadCodeRestarter:
    """Counts code usage between restarts and revives the codes that were never used."""

    def __init__(self, n_embed: int, every: int, seed: int):
        if every < 0:
            raise ValueError(f"the dead-code restart interval must be >= 0 (0 = off), got {every}")
        self.n_embed, self.every, self.seed = n_embed, every, seed
        self.counts = torch.zeros(n_embed, dtype=torch.float64)  # [n_embed] uses since the last restart
        self.total_restarted = 0

    def observe(self, ids: torch.Tensor) -> None:
        """ids: int64 full codebook ids of one micro-batch (any shape)."""
        if self.every > 0:
            self.counts += torch.bincount(ids.detach().reshape(-1).cpu(), minlength=self.n_embed).double()

    def due(self, done: int) -> bool:
        """Whether the step that just finished (``done`` optimizer steps so far) ends a window."""
        return self.every > 0 and done % self.every == 0

    @torch.no_grad()
    def restart(self, done: int, model, prequant: torch.Tensor, optimizer: torch.optim.Optimizer | None,
                env) -> int:
        """Move the dead codes of ``model.quantize.embedding`` onto encoder outputs ``prequant``
        (float ``[B, D, h, w]`` of this process's last micro-batch); returns how many were restarted."""
        counts = self.counts.clone()
        if env.distributed:
            counts = counts.to(env.device)
            torch.distributed.all_reduce(counts)
            counts = counts.cpu()
        dead = (counts == 0).nonzero().flatten()  # [n_dead]
        self.counts.zero_()
        n_dead = int(dead.numel())
        if n_dead == 0:
            return 0
        weight = model.quantize.embedding.weight  # [n_embed, D]
        z = prequant.detach().float().permute(0, 2, 3, 1).reshape(-1, prequant.shape[1])  # [B*h*w, D]
        gen = data_order.step_generator(self.seed, done, "dead-code-restart")
        rows = torch.randint(0, z.shape[0], (n_dead,), generator=gen)  # [n_dead]
        weight[dead.to(weight.device)] = z[rows.to(z.device)].to(weight.dtype)
        if env.distributed:
            torch.distributed.broadcast(weight, 0)
        if optimizer is not None:
            state = optimizer.state.get(weight, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][dead.to(state[key].device)] = 0
        self.total_restarted += n_dead
        return n_dead

    def state_dict(self) -> dict:
        return {"counts": self.counts.clone(), "total_restarted": self.total_restarted}

    def load_state_dict(self, state: dict) -> None:
        counts = torch.as_tensor(state["counts"], dtype=torch.float64)
        if counts.shape != self.counts.shape:
            raise ValueError(f"dead-code restart counts have shape {tuple(counts.shape)}, expected "
                             f"{tuple(self.counts.shape)}")
        self.counts = counts.clone()
        self.total_restarted = int(state["total_restarted"])
