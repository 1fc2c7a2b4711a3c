"""Run in a subprocess by tests/test_budget.py: the peak memory of one sliding-window transition.

Usage: python _window_memory.py WIDTH_FACTOR CACHE_BYTES -> prints a JSON line {"peak_bytes": ..., "seconds": ...}.

A model with wide attention (so that one window's decoder state is about 17 MB) runs scale 1 on a grid of the
trained height and WIDTH_FACTOR x the trained width. Peak = the highest resident set size seen by a sampling
thread during the transition minus the resident size just before it (glibc is told to map large blocks
directly, so that freed tensors leave the resident set at once).
"""

from __future__ import annotations

import json
import sys
import threading
import time

import torch

import imagebart_core as ib
from imagebart_core.config import tiny_config


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


def main() -> None:
    factor, cache_bytes = int(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    cfg = tiny_config(n_scales=2, grid=(4, 4), vocab_size=32, dim=64)
    for sc in cfg.scales:
        sc.heads, sc.dim_head, sc.decoder_depth = 16, 128, 4
    model = ib.build_model(cfg, seed=0)
    model.packed_steps = False
    model.window_cache_bytes = cache_bytes
    batch = 2
    level2 = model.num_levels - 1  # scale 1 (encoder-decoder) reads level 2
    warm = model.random_codes(batch, grid=(4, 4), seed=0)
    model.reverse_step(warm.with_tokens(warm.tokens, level2), seed=0)  # warm up at the trained size
    noise = model.random_codes(batch, grid=(4, 4 * factor), seed=1)
    codes = noise.with_tokens(noise.tokens, level2)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.0005)

    before = rss_bytes()
    peak[0] = before
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.time()
    model.reverse_step(codes, seed=0)
    seconds = time.time() - t0
    stop.set()
    thread.join()
    print(json.dumps({"peak_bytes": peak[0] - before, "seconds": seconds}))  # noqa: T201 (subprocess output)


if __name__ == "__main__":
    main()
