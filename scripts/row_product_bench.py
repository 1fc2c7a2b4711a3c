"""Milliseconds per weight matrix of one token step's products, compiled and eager, in one process.

    python scripts/row_product_bench.py --threads 1 2 --rows 1 8

Streams ``--matrices`` different [out, in] matrices (752x3008 by default: ffhq's feed-forward size) per call, so
that no weight stays in cache, and times per matrix, for float32 and bfloat16:

* ``compiled row product``: :func:`imagebart_core.fast_decode.row_product` (the kernel of compiled CPU token steps),
  compiled with :data:`~imagebart_core.fast_decode.COMPILE_OPTIONS`; one row only;
* ``compiled, both widened``: the same with the row and the weight multiplied in the weights' dtype (the variant
  measured before the row was widened on its own);
* ``F.linear``: the eager product on the row-major weight;
* ``packed``: oneDNN's ``_linear_pointwise`` on a ``_reorder_linear_weight`` copy (the eager batched kernels; for
  bfloat16 only where oneDNN has bfloat16 kernels, see :func:`imagebart_core.packed.bf16_supported`).

Also prints the bytes of one matrix over a measured read bandwidth (a sum over 512 MiB with the same threads).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from imagebart_core.fast_decode import COMPILE_OPTIONS, row_product  # noqa: E402
from imagebart_core.packed import bf16_supported  # noqa: E402

log = logging.getLogger("row_product_bench")


def per_matrix_ms(fn, n_matrices: int, calls: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls / n_matrices * 1e3


def read_bandwidth_gb_s() -> float:
    x = torch.ones(128 * 2**20)  # 512 MiB float32
    x.sum()
    t0 = time.perf_counter()
    for _ in range(5):
        x.sum()
    return 5 * x.numel() * 4 / (time.perf_counter() - t0) / 1e9


def both_widened(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return (x.unsqueeze(-2) * weight).sum(-1) + bias  # [..., out]


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the measurements; log one line per setting and return them as dicts."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rows", type=int, nargs="+", default=[1, 8])
    p.add_argument("--out-features", type=int, default=3008)
    p.add_argument("--in-features", type=int, default=752)
    p.add_argument("--matrices", type=int, default=24)
    args = p.parse_args(argv)
    rows_out = []
    gen = torch.Generator().manual_seed(0)
    for threads in args.threads:
        torch.set_num_threads(threads)
        bw = read_bandwidth_gb_s()
        for dtype in (torch.float32, torch.bfloat16):
            weights = [torch.randn(args.out_features, args.in_features, generator=gen).to(dtype)
                       for _ in range(args.matrices)]
            biases = [torch.randn(args.out_features, generator=gen).to(dtype) for _ in range(args.matrices)]
            # oneDNN packs bfloat16 only where it has bfloat16 kernels (AVX-512 / AMX); elsewhere no packed figure
            can_pack = dtype == torch.float32 or bf16_supported()
            packed = [torch.ops.mkldnn._reorder_linear_weight(w, max(args.rows)) for w in weights] if can_pack else []
            bound = weights[0].numel() * weights[0].element_size() / (bw * 1e9) * 1e3
            for rows in args.rows:
                x = torch.randn(rows, args.in_features, generator=gen).to(dtype)
                res = {}
                with torch.inference_mode():
                    if rows == 1:
                        for name, fn in (("compiled row product", row_product), ("compiled, both widened", both_widened)):
                            compiled = torch.compile(lambda fn=fn: [fn(x, w, b) for w, b in zip(weights, biases)],
                                                     dynamic=False, options=COMPILE_OPTIONS)
                            res[name] = per_matrix_ms(compiled, args.matrices)
                            torch._dynamo.reset()
                    res["F.linear"] = per_matrix_ms(lambda: [F.linear(x, w, b) for w, b in zip(weights, biases)],
                                                    args.matrices)
                    if packed:
                        res["packed"] = per_matrix_ms(lambda: [torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
                                                               for w, b in zip(packed, biases)], args.matrices)
                figures = ", ".join(f"{k} {v:.3f}" for k, v in res.items())
                log.info("threads %d  %-8s  rows %d  ms/matrix: %s  (one read at %.1f GB/s: %.3f)", threads,
                         str(dtype).removeprefix("torch."), rows, figures, bw, bound)
                rows_out.append({"threads": threads, "dtype": str(dtype), "rows": rows, "ms_per_matrix": res,
                                 "one_read_ms": bound, "read_gb_s": bw})
    return rows_out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
