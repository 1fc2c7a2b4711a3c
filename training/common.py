"""Machinery shared by the trainers: distributed setup, batch plan, LR schedule, EMA, precision,
atomic checkpoints with full RNG state, the run log and the progress bar.

Determinism: every random draw a trainer makes for a step comes from a generator seeded from
``(seed, step)`` (see :func:`step_generator`) and the data order is a pure function of ``(seed, epoch)``
(:func:`batch_plan`), so stopping and resuming reproduces an uninterrupted run exactly, and N processes
with per-process batch b see the same items and draws as one process with batch N*b.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from imagebart_core.fileio import atomic_path, atomic_write_text, remove_stale_temps_under
from imagebart_core.rng import derive_seed

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"


# -- distributed -------------------------------------------------------------------------------------
@dataclass
class DistEnv:
    """Where this process sits: rank / world size (1 without torchrun) and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_distributed(device: str = "auto") -> DistEnv:
    """Initialise ``torch.distributed`` from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

    Without those variables this is a single process. ``device``: ``auto`` (CUDA if available), ``cpu``,
    ``cuda``. Backend: nccl on CUDA, gloo on CPU.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but CUDA is not available; use --device cpu")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        dev = torch.device("cuda", local_rank if world > 1 else (torch.device(device).index or 0))
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistEnv(rank, world, local_rank, dev)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_gather_objects(env: DistEnv, obj: Any) -> list[Any]:
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world
    dist.all_gather_object(out, obj)
    return out


def mean_across(env: DistEnv, value: float) -> float:
    """The mean of a float over all processes (for logging)."""
    if not env.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=env.device)
    dist.all_reduce(t)
    return float(t.item()) / env.world


# -- data order --------------------------------------------------------------------------------------
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


# -- LR schedule ---------------------------------------------------------------------------------------
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


# -- EMA -------------------------------------------------------------------------------------------------
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


# -- precision ------------------------------------------------------------------------------------------------
def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on a CUDA device that supports it, else fp32. fp16/bf16 need CUDA."""
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32"
    if precision in ("bf16", "fp16") and device.type != "cuda":
        raise ValueError(f"--precision {precision} needs a CUDA device; use fp32 on CPU")
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"unknown precision {precision!r}")
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
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(precision: str, device: torch.device):
    return torch.amp.GradScaler(device.type, enabled=(precision == "fp16"))


# -- RNG state ----------------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """Torch CPU (and CUDA), Python ``random`` and NumPy global RNG states as tensors / plain values."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *[float(x) if isinstance(x, float)
                                                                                 else int(x) for x in np_state[2:]]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(state["cuda"])


# -- checkpoints ----------------------------------------------------------------------------------------------
def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then ``os.replace`` (atomic)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def restore_training_state(ck: dict[str, Any], parts: dict[str, Any], ema, env) -> int:
    """Load every ``parts[name]`` (model, optimizers, scalers, ...) from ``ck[name]``, the EMA when both
    have one, and this process's RNG state; returns the step to continue from."""
    for name, obj in parts.items():
        obj.load_state_dict(ck[name])
    if ema is not None and ck.get("ema") is not None:
        ema.load_state_dict(ck["ema"])
    states = ck["rng"]
    set_rng_state(states[env.rank] if len(states) == env.world else states[0])
    return int(ck["step"])


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a training checkpoint with ``weights_only=True`` (tensors and plain values only; no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read training checkpoint {path} (truncated, or not one of ours?): {exc}") from exc


def remove_stale_temps(out: Path, env: DistEnv) -> None:
    """On start-up (main process): remove temporary files that killed writes of an earlier run left in ``out``."""
    if env.is_main:
        for p in remove_stale_temps_under(out):
            log.info("removed %s, left behind by an interrupted write", p)


def find_resume(out: Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from: ``--resume PATH``, ``--resume auto`` (the run folder's last.pt if any),
    or ``None`` for ``--resume never``."""
    if resume in (None, "never"):
        return None
    if resume == "auto":
        p = out / "checkpoints" / CHECKPOINT_NAME
        return p if p.is_file() else None
    p = Path(resume)
    if not p.is_file():
        raise FileNotFoundError(f"--resume {p}: no such checkpoint")
    return p




# -- logging and progress ---------------------------------------------------------------------------------------
class RunLog:
    """Appends one row per logged step to ``log.csv`` (columns fixed by the first row) and ``log.jsonl``
    in the run folder, on the main process only. Reading: ``pandas.read_csv(run/"log.csv")``.

    ``resume_step``: the step training continues from. Rows of later steps (logged after the checkpoint a
    killed run resumes from, and about to be logged again) are dropped first, so the log has one row per step.
    """

    def __init__(self, out: Path, enabled: bool, columns: list[str] | None = None, resume_step: int | None = None):
        self.out, self.enabled = out, enabled
        self.columns: list[str] | None = list(columns) if columns else None
        self._new = True
        if enabled and resume_step is not None:
            self._drop_rows_after(int(resume_step))
        if enabled and (out / "log.csv").is_file():
            with open(out / "log.csv", newline="") as fh:
                header = next(csv.reader(fh), None)
            self.columns = header
            self._new = False

    def _drop_rows_after(self, step: int) -> None:
        """Rewrite log.csv / log.jsonl (atomically) without the rows of steps after ``step``."""
        csv_path, jsonl_path = self.out / "log.csv", self.out / "log.jsonl"
        if csv_path.is_file():
            with open(csv_path, newline="") as fh:
                lines = fh.read().splitlines(keepends=True)
            rows = list(csv.reader(lines))
            if rows and "step" in rows[0]:
                col = rows[0].index("step")
                keep = [lines[0]] + [line for line, r in zip(lines[1:], rows[1:]) if not _after(r[col:col + 1], step)]
                if len(keep) != len(lines):
                    atomic_write_text(csv_path, "".join(keep))
        if jsonl_path.is_file():
            lines = jsonl_path.read_text(encoding="utf-8").splitlines(keepends=True)
            keep = [line for line in lines if not _after([str(_json_step(line))], step)]
            if len(keep) != len(lines):
                atomic_write_text(jsonl_path, "".join(keep))

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "log.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        new = self._new
        self._new = False
        if self.columns is None:
            self.columns = list(row)
        with open(self.out / "log.csv", "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore", restval="")
            if new:
                w.writeheader()
            w.writerow(row)


def _after(cell: list[str], step: int) -> bool:
    try:
        return int(float(cell[0])) > step
    except (IndexError, ValueError):
        return False


def _json_step(line: str) -> Any:
    try:
        return json.loads(line).get("step")
    except (ValueError, AttributeError):
        return None


class Progress:
    """A tqdm bar (main process, interactive) or a plain log line every ``every`` steps."""

    def __init__(self, total: int, initial: int, enabled: bool, desc: str, every: int = 50):
        self.bar = None
        self.every = max(1, every)
        self.enabled = enabled
        self.total = total
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, file=sys.stderr)
            except ImportError:
                self.bar = None
        self.t0 = time.time()
        self.start = initial

    def update(self, step: int, stats: dict[str, float]) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in stats.items()}, refresh=False)
        elif step % self.every == 0 or step == self.total:
            txt = " ".join(f"{k}={v:.4g}" for k, v in stats.items())
            sys.stderr.write(f"step {step}/{self.total} {txt}\n")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


# -- CLI arguments shared by the trainers ------------------------------------------------------------------------
def add_trainer_args(p: argparse.ArgumentParser, *, lr: float, batch: int, steps: int, warmup: int,
                     ema: float) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--max-steps", type=int, default=steps, help=f"optimizer steps of the whole run; the LR schedule "
                   f"ends here (default {steps})")
    g.add_argument("--stop-after", type=int, default=None, help="stop (with a checkpoint) after this many steps; "
                   "run again to resume. For time-sliced or pre-emptible jobs")
    g.add_argument("--batch-size", type=int, default=batch, help=f"items per process per micro-batch (default {batch})")
    g.add_argument("--accumulate", type=int, default=1, help="micro-batches per optimizer step (default 1); the "
                   "global batch is processes x batch-size x accumulate")
    g.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default {lr:g})")
    g.add_argument("--lr-start", type=float, default=None, help="learning rate at step 0 (default lr / 40)")
    g.add_argument("--min-lr", type=float, default=1e-8, help="learning rate at the end of the cosine (default 1e-8)")
    g.add_argument("--warmup-steps", type=int, default=warmup, help=f"linear warm-up steps (default {warmup})")
    g.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    g.add_argument("--beta1", type=float, default=0.9)
    g.add_argument("--beta2", type=float, default=0.95)
    g.add_argument("--grad-clip", type=float, default=0.0, help="clip the gradient norm to this (0 = off)")
    g.add_argument("--ema-decay", type=float, default=ema, help=f"EMA decay of the weights (0 = no EMA; default {ema:g})")
    g.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="mixed precision on GPU (auto: bf16 where supported, else fp32; CPU is always fp32)")
    g = p.add_argument_group("run")
    g.add_argument("--out", required=True, help="run folder (checkpoints, log.csv, samples, exported weights)")
    g.add_argument("--resume", default="auto", help="auto (default): continue from OUT/checkpoints/last.pt if it "
                   "exists; never: refuse to start when it exists; or a checkpoint path")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto | cpu | cuda (under torchrun each process takes its "
                   "LOCAL_RANK GPU)")
    g.add_argument("--workers", type=int, default=2, help="data-loading worker processes (default 2)")
    g.add_argument("--log-every", type=int, default=10, help="write a log row every N steps (default 10)")
    g.add_argument("--ckpt-every", type=int, default=1000, help="checkpoint every N steps (default 1000)")
    g.add_argument("--sample-every", type=int, default=1000, help="write a sample grid every N steps (0 = never)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (log lines instead)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")


def start_trainer(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """What every trainer does first: parse and check the shared arguments, set up logging and the thread count."""
    a = parser.parse_args(argv)
    check_trainer_args(a)
    setup_logging()
    if a.threads:
        torch.set_num_threads(a.threads)
    return a


def check_trainer_args(a: argparse.Namespace) -> None:
    for name in ("max_steps", "batch_size", "accumulate"):
        if getattr(a, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    if a.stop_after is not None and a.stop_after < 1:
        raise SystemExit("--stop-after must be >= 1")
    if a.warmup_steps < 0 or a.lr <= 0:
        raise SystemExit("--warmup-steps must be >= 0 and --lr > 0")
    if not 0.0 <= a.ema_decay < 1.0:
        raise SystemExit("--ema-decay must be in [0, 1)")
    if a.lr_start is None:
        a.lr_start = a.lr / 40.0
