"""Same-run A/B of one scale's parts between two checkouts: ``python -m tools.ab_scale_parts``.

For each dtype, batch and scale: the seconds of ``prepare`` (the encoder, or a decoder-only scale's prefix, on the
transition's step kernels) and the milliseconds per eager token step (after a few untimed ones), with random
weights at full size, in a fresh process per checkout and dtype (A, B, A, B, ...). Where a whole chain takes too
long on one side (an old commit on a slow path), the parts still give a figure: a process that runs past
``--timeout`` is stopped and what it had measured is kept, marked ``timed_out``. Only APIs both sides share are
used (``random_model``, ``original_config``, ``fast_decode.step_kernels``, the scales' ``prepare`` / ``step``).

Example (before and after a change, on the same machine in the same minutes)::

    git worktree add --detach ../before HEAD~1
    python -m tools.ab_scale_parts --a ../before --b . --dtype bf16 fp16 fp32 --timeout 420 --json ab.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tools.ab_chain import CHILD_MODEL, _commit, _cpu, add_side_args, check_checkouts
from tools.records import provenance, write_json

#: Run in the child process with the checkout on sys.path: prints one JSON line per (scale, batch) measured.
CHILD = r"""
import json, sys, time, torch
model_name, dtype_name, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
scales = [int(s) for s in sys.argv[4].split(",")]
batches = [int(b) for b in sys.argv[5].split(",")]
steps, warm, seed = int(sys.argv[6]), 4, 0
torch.set_num_threads(threads)
from imagebart_core import fast_decode
""" + CHILD_MODEL + r"""
n = config.grid[0] * config.grid[1]
warm = min(warm, n // 2)
steps = min(steps, n - warm)  # a scale writes n tokens
for scale in scales:
    net = model.scales[scale - 1]
    for batch in batches:
        x_in = torch.randint(0, config.vocab_size, (batch, n), generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            t0 = time.perf_counter()
            state = net.prepare(x_in, scale, None, n, kernels=fast_decode.step_kernels(net, batch))
            t1 = time.perf_counter()
            prev = None
            for i in range(warm):
                prev = net.step(state, i, prev, scale).argmax(-1)
            t2 = time.perf_counter()
            for i in range(warm, warm + steps):
                prev = net.step(state, i, prev, scale).argmax(-1)
            t3 = time.perf_counter()
        print(json.dumps({"scale": scale, "batch": batch, "prepare_s": t1 - t0,
                          "ms_per_step": (t3 - t2) / steps * 1e3, "steps": steps}), flush=True)
"""


def run_side(checkout: Path, model: str, dtype: str, scales: Sequence[int], batches: Sequence[int], threads: int,
             steps: int, timeout: float) -> dict:
    """One fresh process on ``checkout``: {"parts": [{"scale", "batch", "prepare_s", "ms_per_step"}, ...],
    "timed_out": bool}; the parts it finished before ``timeout`` seconds are kept."""
    env = dict(os.environ, PYTHONPATH=str(checkout.resolve()), OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-c", CHILD, model, dtype, str(threads), ",".join(map(str, scales)),
           ",".join(map(str, batches)), str(steps)]
    try:
        out = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True, check=False, timeout=timeout)
        stdout, timed_out = out.stdout, False
        if out.returncode != 0:
            raise SystemExit(f"{checkout}: the timed run failed:\n{out.stderr[-2000:]}")
    except subprocess.TimeoutExpired as exc:
        raw = exc.stdout or b""
        stdout, timed_out = raw.decode() if isinstance(raw, bytes) else raw, True
    parts = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return {"parts": parts, "timed_out": timed_out}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.ab_scale_parts", description=__doc__.split("\n\n")[0])
    add_side_args(p)
    p.add_argument("--scales", type=int, nargs="+", default=[1, 4], help="1-based scales to time")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--steps", type=int, default=16,
                   help="timed token steps per (scale, batch), after 4 untimed (at most the scale's tokens)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per process; what it measured is kept")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    check_checkouts(p, args.a, args.b)
    if min(args.batch) < 1 or min(args.scales) < 1 or args.steps < 1 or args.threads < 1 or args.timeout <= 0:
        p.error("--batch, --scales, --steps and --threads must be >= 1, --timeout > 0")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    results = []
    for dtype in args.dtype:
        load = os.getloadavg()[0]
        sides = {side: run_side(checkout, args.model, dtype, args.scales, args.batch, args.threads, args.steps,
                                args.timeout) for side, checkout in (("a", args.a), ("b", args.b))}
        results.append({"dtype": dtype, **sides, "load_average_before": load})
        for side, r in sides.items():
            figures = ", ".join(f"scale {p['scale']} batch {p['batch']}: prepare {p['prepare_s']:.2f} s, "
                                f"{p['ms_per_step']:.1f} ms/step" for p in r["parts"]) or "nothing measured"
            print(f"{dtype} {side.upper()}{' (timed out)' if r['timed_out'] else ''}: {figures}", flush=True)  # noqa: T201
    payload = {**provenance("tools.ab_scale_parts", argv), "a": str(args.a), "b": str(args.b),
               "a_commit": _commit(args.a), "b_commit": _commit(args.b), "model": args.model,
               "threads": args.threads, "cpu": _cpu(), "results": results}
    write_json(args.json, payload, indent=2)
    return payload


if __name__ == "__main__":
    main()
