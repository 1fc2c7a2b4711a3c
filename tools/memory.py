"""Where a sampling chain's peak memory goes, on the CPU: ``python -m tools.memory``.

    OMP_NUM_THREADS=1 taskset -c 1 python -m tools.memory --model ffhq_4_scales_geometric --dtype fp32 \
        --batch 1 --tokens 8 --json docs/bench/memory_ffhq_4_fp32.json

It measures, in one process, the resident set size (RSS, ``/proc/self/status``) at each stage and sets the
chain's peak against what it is made of:

* ``rss_imports``: after ``import torch``, ``imagebart_core`` and the benchmark's imports (no model yet);
* the weights' bytes (every parameter and buffer; transformers in ``--dtype``, the VQGAN in float32), and the RSS
  after building the model (a released architecture at full size with random weights, as ``tools.bench`` builds
  it, or a native model file loaded with ``load_model``, which also gives the peak while loading);
* per scale, run alone for the first ``--tokens`` tokens: how far its run lifts the RSS peak above the RSS before
  it (its KV caches, encoder activations, cross-attention keys/values, the decode layout, packed copies if any),
  and the request estimate of :mod:`imagebart_core.budget` for the same call;
* the chain as ``python -m tools.bench`` runs it (``run_config``: every scale for ``--tokens`` tokens, then the
  VQGAN decode), with its peak RSS.

Loading a file is measured by passing a native model file as ``--model``; ``--write-random NAME --storage fp16
--out FILE`` first writes such a file (a released architecture, random weights, transformers stored in fp16)
in its own process, so the loading run starts clean.

The figures go into docs/performance.md ("Memory").
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Sequence

import torch

from imagebart_core import budget
from tools import bench
from tools.records import provenance, write_json


def rss() -> int:
    """The process's resident set size now (bytes)."""
    return bench.current_bytes(torch.device("cpu")) or 0


def rss_parts() -> dict[str, int]:
    """Resident memory now, split: ``anon`` (heap: tensors, Python) and ``file`` (mapped files: the code of torch's
    libraries as it is first run, and any memory-mapped model file), bytes."""
    return {"anon": bench._rss_bytes("RssAnon") or 0, "file": bench._rss_bytes("RssFile") or 0}


def peak() -> int:
    """The process's peak resident set size since :func:`reset_peak` (bytes)."""
    return bench.peak_bytes(torch.device("cpu")) or 0


def reset_peak() -> None:
    gc.collect()
    bench.reset_peak(torch.device("cpu"))


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of ``module``'s parameters and buffers (shared storage counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for t in [*module.parameters(), *module.buffers()]:
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def measure(model_name: str, dtype_name: str, batch: int, tokens: int, seed: int = 0, alone: bool = True) -> dict:
    device = torch.device("cpu")
    out: dict = {"model": model_name, "dtype": dtype_name, "batch": batch, "tokens": tokens,
                 "threads": torch.get_num_threads(), "rss_imports": rss(), "rss_imports_parts": rss_parts()}
    reset_peak()
    start = time.perf_counter()
    model = bench.build(model_name, device, bench.DTYPES[dtype_name], seed)
    out["build_s"] = time.perf_counter() - start
    out["build_peak_rss"] = peak()
    gc.collect()
    out["rss_after_build"] = rss()
    out["rss_after_build_parts"] = rss_parts()
    out["weights_bytes"] = {"vqgan": module_bytes(model.vqgan),
                            "scales": [module_bytes(s) for s in model.scales]}
    out["weights_bytes"]["total"] = out["weights_bytes"]["vqgan"] + sum(out["weights_bytes"]["scales"])
    cond = bench._condition(model, batch)
    grid = model.config.grid
    per_scale = []
    for s in range(model.n_scales, 0, -1) if alone else ():
        reset_peak()  # gc first, then the peak window starts at the RSS read next
        before = rss()
        bench.time_scales(model, batch, [s], cond, seed, tokens)
        gc.collect()
        est = budget.estimate_request(model, grid=grid, batch=batch, operation="reverse_step", steps=1)
        per_scale.append({"scale": s, "kind": model.scales[s - 1].cfg.kind, "rss_before": before,
                          "peak_rss": peak(), "peak_above_before": peak() - before, "rss_after": rss(), "rss_after_parts": rss_parts(),
                          "weights_bytes": out["weights_bytes"]["scales"][s - 1]})
        per_scale[-1]["budget_estimate_note"] = "estimate_request for the top scale (steps=1), beyond the weights"
        per_scale[-1]["budget_estimate_bytes"] = est.peak_bytes
    out["per_scale_alone"] = per_scale
    gc.collect()
    before = rss()
    result = bench.run_config(model, model_name, batch, dtype_name, scales=None, tokens=tokens, repeats=1,
                              warmup=0, bandwidth=float("nan"), seed=seed)
    out["chain"] = {"rss_before": before, "peak_rss": result.peak_memory_bytes,
                    "peak_above_before": (result.peak_memory_bytes or 0) - before, "rss_after": rss(),
                    "rss_after_parts": rss_parts(),
                    "extrapolated_chain_s": result.chain_s}
    out["budget_estimate_sample_bytes"] = budget.estimate_request(model, grid=grid, batch=batch,
                                                                  operation="sample").peak_bytes
    if per_scale:
        largest_need = max(p["peak_above_before"] for p in per_scale)
        out["weights_plus_largest_running_scale"] = out["rss_imports"] + out["weights_bytes"]["total"] + largest_need
    return out


def _gb(b: float) -> str:
    return f"{b / 1e9:.2f} GB"


def format_report(r: dict) -> str:
    w = r["weights_bytes"]
    def parts(d: dict) -> str:
        return f"(anon {_gb(d['anon'])}, file {_gb(d['file'])})"

    lines = [f"{r['model']} {r['dtype']} batch {r['batch']} (first {r['tokens']} tokens per scale, "
             f"{r['threads']} thread(s))",
             f"  RSS after imports           {_gb(r['rss_imports'])} {parts(r['rss_imports_parts'])}",
             f"  weights                     {_gb(w['total'])} (VQGAN {_gb(w['vqgan'])}, scales "
             + ", ".join(_gb(b) for b in w["scales"]) + ")",
             f"  RSS after build             {_gb(r['rss_after_build'])} {parts(r['rss_after_build_parts'])} (peak while building {_gb(r['build_peak_rss'])})",
             "  scale alone: RSS before, peak, peak above before, RSS after, budget estimate"]
    for p in r["per_scale_alone"]:
        lines.append(f"    {p['scale']} {p['kind']:<16} {_gb(p['rss_before'])}  {_gb(p['peak_rss'])}  "
                     f"{_gb(p['peak_above_before'])}  {_gb(p['rss_after'])}  {_gb(p['budget_estimate_bytes'])}")
    c = r["chain"]
    lines.append(f"  chain (tools.bench run_config): RSS before {_gb(c['rss_before'])}, peak {_gb(c['peak_rss'])}, "
                 f"above before {_gb(c['peak_above_before'])}, after {_gb(c['rss_after'])} {parts(c['rss_after_parts'])}")
    if "weights_plus_largest_running_scale" in r:
        lines.append(f"  imports + weights + largest scale's need: {_gb(r['weights_plus_largest_running_scale'])}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m tools.memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ffhq_4_scales_geometric",
                   help="a released architecture (random weights, full size), 'tiny', or a native model file")
    p.add_argument("--dtype", default="fp32", choices=sorted(bench.DTYPES))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--tokens", type=int, default=8, help="tokens run per scale (at least 2)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-alone", action="store_true", help="skip running each scale alone (only the chain)")
    p.add_argument("--json", default=None, help="write the figures here")
    p.add_argument("--write-random", metavar="NAME", help="only write a random-weight model file of this released "
                   "architecture to --out (transformers stored in --storage) and exit")
    p.add_argument("--storage", default="fp32", choices=sorted(bench.DTYPES))
    p.add_argument("--out", help="the file --write-random writes (never overwritten)")
    args = p.parse_args(argv)
    if args.batch < 1 or args.tokens < 2:
        p.error("--batch must be >= 1 and --tokens >= 2")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with torch.no_grad():
            return _run(args, list(sys.argv[1:] if argv is None else argv))
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, argv: list[str]) -> dict:
    if args.write_random:
        if not args.out:
            raise SystemExit("--write-random needs --out")
        from imagebart_core.checkpoint import save_model

        model = bench.build(args.write_random, torch.device("cpu"), bench.DTYPES[args.storage])
        path = save_model(model, args.out, transformer_dtype=bench.DTYPES[args.storage])
        sys.stdout.write(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB)\n")
        return {"wrote": str(path)}
    figures = measure(args.model, args.dtype, args.batch, args.tokens, alone=not args.no_alone)
    figures.update(**provenance("tools.memory", argv), device_name=bench.device_name(torch.device("cpu")))
    sys.stdout.write(format_report(figures) + "\n")
    write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
