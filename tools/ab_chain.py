"""Same-run A/B of the whole sampling chain between two checkouts: ``python -m tools.ab_chain``.

Times ``model.sample`` + ``model.decode`` of one released architecture at full size with random weights (the same
seed and weights on both sides) in fresh processes that alternate between the checkouts (A, B, A, B, ...), so
both sides see the same machine in the same minutes. Only the public API both sides share is used
(``random_model``, ``original_config``, ``sample``, ``decode``), so an older commit can be measured against
this one. Reports the median seconds per side and the ratio, and writes them as JSON.

Example (the commit before a change, checked out next to this one)::

    git worktree add --detach ../base e2031c3
    python -m tools.ab_chain --a ../base --b . --threads 2 --dtype fp32 bf16 --rounds 3 --json ab.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tools.records import provenance, write_json

#: Child-process code (the checkout on sys.path) that builds ``model`` (and ``config``) from ``model_name``,
#: ``dtype_name`` and ``seed``, with the public API every checkout since e2031c3 has; the A/B tools' children start
#: with it.
CHILD_MODEL = r"""
from imagebart_core.random_init import random_model
if model_name == "tiny":
    from imagebart_core.config import tiny_config
    config = tiny_config(n_scales=3, conditioning="none", residual=True)
else:
    from imagebart_core.original.presets import original_config
    config = original_config(model_name)
dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
model = random_model(config, "cpu", dtype, seed)
"""

#: Run in the child process with the checkout on sys.path: prints one JSON line.
CHILD = r"""
import json, sys, time, torch
model_name, dtype_name, batch, threads, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
step_mode = sys.argv[6]
torch.set_num_threads(threads)
""" + CHILD_MODEL + r"""
first_chain_s = None
if step_mode != "eager":  # only this checkout's side; an older commit always runs its default
    model.step_mode = step_mode
    with torch.inference_mode():  # compiles every scale's step (or loads it from Inductor's disk cache)
        t0 = time.perf_counter()
        model.decode(model.sample(batch, seed=seed))
        first_chain_s = time.perf_counter() - t0
with torch.inference_mode():
    t0 = time.perf_counter()
    codes = model.sample(batch, seed=seed)
    t1 = time.perf_counter()
    model.decode(codes)
    t2 = time.perf_counter()
print(json.dumps({"sample_s": t1 - t0, "decode_s": t2 - t1, "chain_s": t2 - t0, "step_mode": step_mode,
                  "first_chain_s": first_chain_s}))
"""


def run_side(checkout: Path, model: str, dtype: str, batch: int, threads: int, seed: int,
             step_mode: str = "eager") -> dict:
    """One timed chain in a fresh process on ``checkout``: {"sample_s", "decode_s", "chain_s", "step_mode",
    "first_chain_s"}. With a ``step_mode`` other than eager (set on the model; the checkout must know it) an
    untimed first chain compiles the steps and its wall time is ``first_chain_s``; ``chain_s`` is the next one."""
    env = dict(os.environ, PYTHONPATH=str(checkout.resolve()), OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", CHILD, model, dtype, str(batch), str(threads), str(seed), step_mode],
                         cwd=checkout, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{checkout}: the timed chain failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.ab_chain", description=__doc__.split("\n\n")[0])
    add_side_args(p)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="A/B pairs per dtype (A and B alternate)")
    p.add_argument("--seed", type=int, default=0)
    # the modes of static_step.STEP_MODES, written out: this parent process imports neither checkout's library
    p.add_argument("--b-step-mode", default="eager", choices=["eager", "static", "compiled"],
                   help="ImageBART.step_mode of side B (A always runs its default); other than eager, B's process "
                        "runs one untimed chain first (the compilation) and reports its time as first_chain_s")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    check_checkouts(p, args.a, args.b)
    if args.rounds < 1 or args.batch < 1 or args.threads < 1:
        p.error("--rounds, --batch and --threads must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    results = []
    for dtype in args.dtype:
        runs: dict[str, list[dict]] = {"a": [], "b": []}
        loads = [os.getloadavg()[0]]
        for _ in range(args.rounds):
            for side, checkout in (("a", args.a), ("b", args.b)):
                mode = args.b_step_mode if side == "b" else "eager"
                runs[side].append(run_side(checkout, args.model, dtype, args.batch, args.threads, args.seed, mode))
        loads.append(os.getloadavg()[0])
        med = {side: statistics.median(r["chain_s"] for r in rs) for side, rs in runs.items()}
        results.append({"dtype": dtype, "a_chain_s": med["a"], "b_chain_s": med["b"], "speedup_b_over_a": med["a"] / med["b"],
                        "runs": runs, "load_average_before_after": loads})
        print(f"{args.model} {dtype} batch {args.batch} threads {args.threads}: A {med['a']:.2f} s, "  # noqa: T201
              f"B {med['b']:.2f} s, B is {med['a'] / med['b']:.2f}x faster (median of {args.rounds})", flush=True)
    payload = {**provenance("tools.ab_chain", argv), "a": str(args.a), "b": str(args.b),
               "a_commit": _commit(args.a), "b_commit": _commit(args.b), "model": args.model, "batch": args.batch,
               "threads": args.threads, "b_step_mode": args.b_step_mode, "cpu": _cpu(), "results": results}
    write_json(args.json, payload, indent=2)
    return payload


def add_side_args(p: argparse.ArgumentParser) -> None:
    """The arguments every A/B tool takes: the two checkouts, the model and the dtypes."""
    p.add_argument("--a", required=True, type=Path, help="checkout A (e.g. the older commit)")
    p.add_argument("--b", default=Path("."), type=Path, help="checkout B (default: this one)")
    p.add_argument("--model", default="ffhq_4_scales_geometric", help="a released architecture name, or tiny")
    p.add_argument("--dtype", nargs="+", default=["fp32"], choices=["fp32", "bf16", "fp16"])


def check_checkouts(parser: argparse.ArgumentParser, *sides: Path) -> None:
    """Stop with a usage error unless every side is a checkout of this project."""
    for side in sides:
        if not (side / "imagebart_core" / "__init__.py").is_file():
            parser.error(f"{side} is not a checkout of this project (no imagebart_core/)")


def _commit(checkout: Path) -> str | None:
    out = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or None


def _cpu() -> str:
    from tools.bench import cpu_name, physical_cores

    return f"{cpu_name()} ({physical_cores()} cores)"


if __name__ == "__main__":
    main()
