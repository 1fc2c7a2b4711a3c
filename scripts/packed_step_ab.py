"""Per-step time of full-size scales with and without packed step weights, in one process (A/B, alternated).

    python scripts/packed_step_ab.py --model ffhq_4_scales_geometric --scales 1 4 --batch 1 2 4 8 --threads 1

Random weights (timing does not depend on them). Prints the median ms per token step over steps 10..59 of a
transition for each setting; packing on and off alternate twice so that drift in machine load shows.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from imagebart_core import fast_decode  # noqa: E402
from tools.bench import build  # noqa: E402

log = logging.getLogger("packed_step_ab")


def step_ms(net: torch.nn.Module, scale: int, batch: int, vocab: int, packed: bool, steps: int = 60,
            skip: int = 10) -> float:
    x = torch.randint(0, vocab, (batch, 256), generator=torch.Generator().manual_seed(0))
    times = []
    with torch.no_grad():
        state = net.prepare(x, scale, kernels=fast_decode.step_kernels(net, batch, pack=packed))
        prev = None
        for n in range(steps):
            t0 = time.perf_counter()
            logits = net.step(state, n, prev, scale)
            times.append(time.perf_counter() - t0)
            prev = logits.argmax(-1)
    times = sorted(times[skip:])
    return 1000.0 * times[len(times) // 2]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ffhq_4_scales_geometric", help="a released architecture (random weights)")
    p.add_argument("--scales", type=int, nargs="+", default=[1, 4], help="scales to time (1 = finest)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8], help="batch sizes")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(a.threads)
    model = build(a.model, torch.device("cpu"), torch.float32)
    for scale in a.scales:
        net = model.scales[scale - 1]
        for batch in a.batch:
            figures = []
            for packed in (False, True, False, True):
                figures.append(step_ms(net, scale, batch, model.config.vocab_size, packed))
            log.info("scale %d batch %d: dense %.1f / %.1f ms, packed %.1f / %.1f ms per step", scale, batch,
                     figures[0], figures[2], figures[1], figures[3])


if __name__ == "__main__":
    main()
