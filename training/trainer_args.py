"""The command-line arguments every trainer shares, and what every trainer does first with them."""

from __future__ import annotations

import argparse
import logging

import torch

from .run_log import setup_logging

log = logging.getLogger(__name__)

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
                   help="mixed precision (auto: bf16 on a GPU that supports it, else fp32, also on CPU; bf16 also runs on a "
                        "CPU with bf16 instructions; fp16 needs a GPU)")
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
    args = parser.parse_args(argv)
    check_trainer_args(args)
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def check_trainer_args(args: argparse.Namespace) -> None:
    for name in ("max_steps", "batch_size", "accumulate"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    if args.stop_after is not None and args.stop_after < 1:
        raise SystemExit("--stop-after must be >= 1")
    if args.warmup_steps < 0 or args.lr <= 0:
        raise SystemExit("--warmup-steps must be >= 0 and --lr > 0")
    if not 0.0 <= args.ema_decay < 1.0:
        raise SystemExit("--ema-decay must be in [0, 1)")
    if args.lr_start is None:
        args.lr_start = args.lr / 40.0
