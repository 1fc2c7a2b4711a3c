"""The data order and per-step random streams of a training run.

Determinism: every random draw a trainer makes for a step comes from a generator seeded from ``(seed, step)``
(:func:`step_generator`) and the data order is a pure function of ``(seed, epoch)`` (:func:`batch_plan`), so
stopping and resuming reproduces an uninterrupted run exactly, and N processes with per-process batch b see the
same items and draws as one process with batch N*b.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from imagebart_core.rng import derive_seed

from .distributed import DistEnv


@dataclass
class StepBatch:
    """This process's items of one optimizer step.

    micro: ``accum`` lists of dataset indices (one per micro-batch).
    rows: the same shape: each item's row in the step's global batch (0 .. global_batch-1), which keys
        its random draws so that they do not depend on how the global batch is split over processes.
    """

    epoch: int
    micro: list[list[int]]
    rows: list[list[int]]


def steps_per_epoch(n_items: int, world: int, batch: int, accum: int) -> int:
    per = (n_items // world) // (batch * accum)
    if per < 1:
        raise ValueError(f"the data set has {n_items} items, fewer than one global batch "
                         f"({world} processes x batch {batch} x accumulation {accum} = {world * batch * accum}); "
                         "use a smaller --batch-size / --accumulate or more data")
    return per


def batch_plan(n_items: int, step: int, env: DistEnv, batch: int, accum: int, seed: int,
               shuffle: bool = True) -> StepBatch:
    """Items of optimizer step ``step`` (0-based) for this process.

    The order follows ``torch.utils.data.DistributedSampler(shuffle, seed, drop_last=True)`` for the epoch:
    a permutation of the data set seeded with ``seed + epoch``, process r taking positions r, r+W, r+2W, ...
    Process r's local position p is global position ``r + W p``; step j of an epoch covers global
    positions ``[j G, (j+1) G)`` with ``G = W * batch * accum`` for every split of G over processes.
    """
    per_epoch = steps_per_epoch(n_items, env.world, batch, accum)
    epoch, j = divmod(step, per_epoch)
    sampler = torch.utils.data.DistributedSampler(range(n_items), num_replicas=env.world, rank=env.rank,
                                                  shuffle=shuffle, seed=seed, drop_last=True)
    sampler.set_epoch(epoch)
    local = list(iter(sampler))
    m = batch * accum
    g = env.world * m
    micro, rows = [], []
    for a in range(accum):
        p0 = j * m + a * batch
        micro.append(local[p0 : p0 + batch])
        rows.append([env.rank + env.world * p - j * g for p in range(p0, p0 + batch)])
    return StepBatch(epoch, micro, rows)


def step_generator(seed: int, step: int, *keys: object) -> torch.Generator:
    """A CPU generator for the draws of optimizer step ``step`` (identical on every process)."""
    return torch.Generator().manual_seed(derive_seed(seed, "train-step", step, *keys))
