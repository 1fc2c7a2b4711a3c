"""Speed and memory benchmark of the sampling chain: ``python -m tools.bench``.

Times the whole chain (every scale, then the VQGAN decode) and each scale's parts: the encoder
(the transition's set-up: the explicit decode step ``fast_decode.step_kernels`` and ``prepare``: encoder pass,
cross-attention keys/values, cache allocation; the time to the first token less one step), the token loop and the
VQGAN decode; reports tokens per second and peak memory (process RSS on CPU, allocated memory on
CUDA). The model is a native model file or one of the seven released architectures at full size
with random weights (``--model ffhq_4_scales_geometric``), or ``tiny`` (a smoke-test config).

Per scale it also reports the memory-bandwidth bound of the token loop: the bytes of weights one
token step must read (the decoder layers and the logits layer of an encoder-decoder scale; all
layers and the head of the top, decoder-only scale) divided by the read bandwidth measured in the
same run, against the measured milliseconds per token.

Every figure is the median over ``--repeats`` runs after ``--warmup`` runs. ``--tokens N`` times
only the first N tokens of each scale and extrapolates the token loop to the whole grid; such
figures are labelled ``extrapolated`` in the table and in the JSON.

Example::

    python -m tools.bench --model ffhq_4_scales_geometric --batch 1 8 --json ffhq.json
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from imagebart_core.chain.static_step import STEP_MODES, runs_compiled
from imagebart_core.model import ImageBART
from tools.records import provenance, write_json

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# -- machine -----------------------------------------------------------------------------------------
def physical_cores() -> int:
    """Physical cores this process may run on (SMT siblings counted once); falls back to the CPU count."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        path = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(path.read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def default_threads() -> int:
    """Physical cores minus the cores other work keeps busy (1-minute load average), at least 1.

    Decode steps are hundreds of short parallel regions; an OpenMP thread that the OS deschedules stalls
    every one of them, so on a shared machine fewer threads than cores is much faster.
    """
    cores = physical_cores()
    load = _load()
    busy = 0 if load is None else int(round(load))
    return max(1, min(cores, cores - busy))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({physical_cores()} cores, torch threads {torch.get_num_threads()})"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_bandwidth(device: torch.device, megabytes: int = 512, repeats: int = 7) -> float:
    """Read bandwidth in GB/s (1e9 bytes): median time of summing a ``megabytes`` float32 tensor."""
    x = torch.ones(megabytes * (1 << 20) // 4, dtype=torch.float32, device=device)
    times = []
    for i in range(repeats + 2):
        _sync(device)
        t = time.perf_counter()
        x.sum()
        _sync(device)
        if i >= 2:
            times.append(time.perf_counter() - t)
    del x
    return megabytes * (1 << 20) / statistics.median(times) / 1e9


# -- memory ------------------------------------------------------------------------------------------
def _rss_bytes(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA allocator stats, or the process's VmHWM on Linux)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets the peak RSS (VmHWM) to the current RSS
    except OSError:
        pass


def peak_bytes(device: torch.device) -> int | None:
    """Peak since :func:`reset_peak`: allocated bytes on CUDA, resident set size on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return _rss_bytes("VmHWM")


def current_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    return _rss_bytes("VmRSS")


# -- models ------------------------------------------------------------------------------------------
def build(model: str, device: torch.device, dtype: torch.dtype, seed: int = 0) -> ImageBART:
    """A released architecture by name (random weights), ``tiny``, or a native model file."""
    from imagebart_core.checkpoint import load_model
    from imagebart_core.config import tiny_config
    from imagebart_core.original.presets import ORIGINAL_MODELS, original_config
    from imagebart_core.random_init import random_model

    if model in ORIGINAL_MODELS:
        return random_model(original_config(model), device, dtype, seed)
    if model == "tiny":
        return random_model(tiny_config(n_scales=3, conditioning="class", residual=True), device, dtype, seed)
    if Path(model).is_file():
        return load_model(model, device, dtype)
    raise SystemExit(f"--model {model!r}: not a file and not one of: tiny, {', '.join(ORIGINAL_MODELS)}")


def step_weight_bytes(net: torch.nn.Module) -> int:
    """Bytes of weights one token step reads (embedding tables excluded: one row each)."""
    from imagebart_core.transformer import DecoderOnlyScale

    if isinstance(net, DecoderOnlyScale):
        mods = [net.blocks, net.norm, net.head]
        skip: set[int] = set()
    else:
        mods = [net.decoder, net.dec_norm, net.to_logits]
        # cross-attention keys/values are projected once per transition, not per token
        skip = {id(p) for blk in net.decoder for lin in (blk.cross_attn.to_k, blk.cross_attn.to_v)
                for p in lin.parameters()}
    total = 0
    for m in mods:
        for p in m.parameters():
            if id(p) not in skip:
                total += p.numel() * p.element_size()
    return total


# -- operators -------------------------------------------------------------------------------------------
#: Operators that only make views (no kernel runs, no memory is read); left out of the count of compute operators.
VIEW_OPERATORS = frozenset({
    "aten.view", "aten.t", "aten.transpose", "aten.permute", "aten.select", "aten.slice", "aten.as_strided",
    "aten.expand", "aten.reshape", "aten.unsqueeze", "aten.squeeze", "aten._unsafe_view", "aten.detach",
    "aten.alias", "aten.unbind",
})


def count_step_operators(model: ImageBART, scale: int, batch: int, cond) -> dict[str, int]:
    """ATen operators one eager token step of ``scale`` dispatches (the fourth token of a transition, on the
    transition's kernels): {operator name: calls}, view-only operators included (see :data:`VIEW_OPERATORS`)."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    from imagebart_core import fast_decode

    class _Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls: Counter[str] = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.calls[str(func.overloadpacket)] += 1
            return func(*args, **(kwargs or {}))

    net = model.scales[scale - 1]
    n = model.config.grid[0] * model.config.grid[1]
    x_in = torch.randint(0, model.config.vocab_size, (batch, n), generator=torch.Generator().manual_seed(0))
    x_in = x_in.to(model.device)
    cond_tokens = None if cond is None else cond.tokens.to(model.device)
    with torch.inference_mode():
        state = net.prepare(x_in, scale, cond_tokens, n, kernels=fast_decode.step_kernels(net, batch))
        prev = None
        for i in range(3):
            prev = net.step(state, i, prev, scale).argmax(-1)
        with _Count() as counter:
            net.step(state, 3, prev, scale)
    return dict(counter.calls)


def steps_compiled(model: ImageBART, batch: int) -> bool:
    """Whether the bench's token steps run compiled (the bench samples without guidance: one row per item)."""
    return runs_compiled(model.step_mode, model.device.type, batch)


def compute_operators(calls: dict[str, int]) -> int:
    """Calls of operators that run a kernel (views left out)."""
    return sum(v for k, v in calls.items() if k not in VIEW_OPERATORS)


# -- timing ------------------------------------------------------------------------------------------
class _Stop(Exception):
    """Raised from the progress callback to end a scale after ``--tokens`` tokens."""


@dataclass
class ScaleTiming:
    scale: int
    kind: str
    encoder_s: float  # prepare: encoder pass + cross-attention K/V + caches (decoder-only: the prefix)
    loop_s: float  # the token loop (extrapolated to the whole grid when tokens_timed < n_tokens)
    n_tokens: int
    tokens_timed: int


def _split(start: float, first: float, last: float, n: int, timed: int) -> tuple[float, float]:
    """(encoder seconds, token-loop seconds for all ``n`` tokens) of a transition that started at ``start``, wrote
    its first token at ``first`` and token ``timed - 1`` at ``last``. The transition's set-up (the explicit decode
    step ``fast_decode.step_kernels`` and the scale's ``prepare``) is the time to the first token less one step."""
    step = (last - first) / max(timed - 1, 1)
    return max(first - start - step, 0.0), (last - first + step) * n / timed


def time_scales(model: ImageBART, batch: int, scales: Sequence[int], cond, seed: int,
                tokens: int | None) -> list[ScaleTiming]:
    """Run each scale alone (from random codes of its input level); time its encoder and token loop."""
    from imagebart_core.codes import Codes

    device = model.device
    n = model.config.grid[0] * model.config.grid[1]
    limit = n if tokens is None else max(2, min(tokens, n))
    out = []
    for s in scales:
        net = model.scales[s - 1]
        codes = model.random_codes(batch, seed=seed)
        codes = Codes(codes.tokens, s + 1, codes.codebook_id, codes.vocab_size)
        marks: dict[str, float] = {}

        def callback(p, marks=marks):
            if p.token in (0, limit - 1):
                _sync(device)
                marks["first" if p.token == 0 else "last"] = time.perf_counter()
                if p.token == limit - 1 and limit < n:
                    raise _Stop

        _sync(device)
        start = time.perf_counter()
        try:
            model.reverse_step(codes, cond, steps=1, seed=seed, callback=callback)
        except _Stop:
            pass
        encoder, loop = _split(start, marks["first"], marks["last"], n, limit)
        out.append(ScaleTiming(s, net.cfg.kind, encoder, loop, n, limit))
    return out


def time_chain(model: ImageBART, batch: int, cond, seed: int) -> tuple[float, float, list[ScaleTiming]]:
    """The whole chain (sample + decode) once: (chain seconds, decode seconds, per-scale timings)."""
    device = model.device
    n = model.config.grid[0] * model.config.grid[1]
    marks: dict[int, dict[str, float]] = {s: {} for s in range(1, model.n_scales + 1)}

    def callback(p):
        if p.token in (0, p.n_tokens - 1):
            _sync(device)
            marks[p.scale]["first" if p.token == 0 else "last"] = time.perf_counter()

    _sync(device)
    t0 = time.perf_counter()
    codes = model.sample(batch, cond, seed=seed, callback=callback)
    _sync(device)
    t1 = time.perf_counter()
    model.decode(codes)
    _sync(device)
    t2 = time.perf_counter()
    scales = []
    for s in range(1, model.n_scales + 1):  # the chain runs scale n_scales first; each starts where the last ended
        start = t0 if s == model.n_scales else marks[s + 1]["last"]
        encoder, loop = _split(start, marks[s]["first"], marks[s]["last"], n, n)
        scales.append(ScaleTiming(s, model.scales[s - 1].cfg.kind, encoder, loop, n, n))
    return t2 - t0, t2 - t1, scales


def time_decode(model: ImageBART, batch: int, seed: int) -> float:
    device = model.device
    codes = model.random_codes(batch, seed=seed)
    from imagebart_core.codes import Codes

    codes = Codes(codes.tokens, 1, codes.codebook_id, codes.vocab_size)
    _sync(device)
    t = time.perf_counter()
    model.decode(codes)
    _sync(device)
    return time.perf_counter() - t


def time_recompute_baseline(model: ImageBART, scale: int, batch: int, cond, points: int = 5) -> float:
    """Estimated token-loop seconds of an encoder-decoder scale WITHOUT a KV cache (the original code's way).

    The original re-runs the whole decoder (self- and cross-attention projections included) over the
    growing prefix at every token step. This times that decoder pass at ``points`` prefix lengths
    from 1 to N (after one warm-up pass) and sums the linearly interpolated cost over all N steps.
    The top, decoder-only scale cached keys/values in the original too, so it has no baseline here.
    """
    from imagebart_core.transformer import SOS_TOKEN

    net = model.scales[scale - 1]
    device = model.device
    n = model.config.grid[0] * model.config.grid[1]
    cond_tokens = None if cond is None else cond.tokens.to(device)
    x_in = torch.randint(0, model.config.vocab_size, (batch, n), device=device)
    target = torch.randint(0, model.config.vocab_size, (batch, n), device=device)
    lengths = sorted({max(1, round(i * n / (points - 1))) for i in range(points)})
    with torch.no_grad():
        enc = net.encode(x_in, scale, cond_tokens)  # [B, L, D]

        def decoder_pass(length: int) -> None:
            dec_in = torch.cat([target.new_full((batch, 1), SOS_TOKEN), target[:, : length - 1]], dim=1)
            h = net.dec_token_emb(dec_in) + net.dec_pos_emb.weight[:length]  # [B, length, D]
            for block in net.decoder:
                h = block(h, enc)
            net.residual(net.to_logits(net.dec_norm(h)), x_in[:, :length], scale)

        decoder_pass(n)  # warm-up
        costs = []
        for length in lengths:
            _sync(device)
            t = time.perf_counter()
            decoder_pass(length)
            _sync(device)
            costs.append(time.perf_counter() - t)
    steps = torch.arange(1, n + 1, dtype=torch.float64)
    per_step = _interp(steps, torch.tensor(lengths, dtype=torch.float64), torch.tensor(costs, dtype=torch.float64))
    return float(per_step.sum())


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation (numpy.interp) of float64 1-D tensors."""
    idx = torch.searchsorted(xp, x).clamp(1, len(xp) - 1)
    x0, x1, y0, y1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
    w = ((x - x0) / (x1 - x0)).clamp(0, 1)
    return y0 + w * (y1 - y0)


# -- one configuration ---------------------------------------------------------------------------------
@dataclass
class Result:
    model: str
    device: str
    device_name: str
    dtype: str
    batch: int
    step_mode: str
    threads: int | None
    extrapolated: bool
    repeats: int
    chain_s: float | None  # whole chain incl. decode (median); None when only some scales ran
    decode_s: float | None
    tokens_per_s: float | None  # chain: batch * grid tokens * scales / chain time (decode included)
    peak_memory_bytes: int | None
    peak_memory_kind: str
    bandwidth_gb_s: float
    load_average: tuple[float, float] | None = None  # 1-minute system load before and after (CPU contention)
    scales: list[dict] = field(default_factory=list)


def _condition(model: ImageBART, batch: int):
    kind = model.config.conditioning.kind
    if kind == "class":
        return model.class_condition([i % model.config.conditioning.num_classes for i in range(batch)])
    if kind == "text":
        return model.text_condition(["a photograph of a face"] * batch)
    return None


def run_config(model: ImageBART, name: str, batch: int, dtype_name: str, *, scales: Sequence[int] | None,
               tokens: int | None, repeats: int, warmup: int, bandwidth: float, seed: int = 0,
               baseline: bool = False) -> Result:
    device = model.device
    all_scales = list(range(1, model.n_scales + 1))
    subset = sorted(scales) if scales else all_scales
    n = model.config.grid[0] * model.config.grid[1]
    chain = subset == all_scales and (tokens is None or tokens >= n)
    cond = _condition(model, batch)
    load_before = _load()
    reset_peak(device)
    runs = []
    for i in range(warmup + repeats):
        if chain:
            total, dec, per = time_chain(model, batch, cond, seed + i)
        else:
            per = time_scales(model, batch, subset, cond, seed + i, tokens)
            dec = time_decode(model, batch, seed + i)
            total = None
        if i >= warmup:
            runs.append((total, dec, per))
    peak = peak_bytes(device)
    med = statistics.median
    scale_rows = []
    for j, s in enumerate(subset):
        enc = med(r[2][j].encoder_s for r in runs)
        loop = med(r[2][j].loop_s for r in runs)
        net = model.scales[s - 1]
        wbytes = step_weight_bytes(net)
        bound_ms = wbytes / (bandwidth * 1e9) * 1e3
        ms_per_token = loop / n * 1e3
        scale_rows.append({
            "scale": s, "kind": net.cfg.kind, "encoder_s": enc, "loop_s": loop, "scale_s": enc + loop,
            "tokens_per_s": batch * n / loop, "ms_per_token_step": ms_per_token,
            "weight_bytes_per_step": wbytes, "bandwidth_bound_ms": bound_ms,
            "bound_fraction": bound_ms / ms_per_token, "tokens_timed": runs[0][2][j].tokens_timed, "n_tokens": n,
        })
        ops = count_step_operators(model, s, batch, cond)
        if steps_compiled(model, batch):  # the eager count says nothing about the compiled kernel(s)
            scale_rows[-1].update(step_operators=None, eager_step_operators=compute_operators(ops),
                                  eager_step_operator_calls=ops)
        else:
            scale_rows[-1].update(step_operators=compute_operators(ops), step_operator_calls=ops)
        if baseline and net.cfg.kind != "decoder_only":
            base = time_recompute_baseline(model, s, batch, cond)
            scale_rows[-1].update(recompute_loop_s=base, speedup_vs_recompute=base / loop)
    decode_s = med(r[1] for r in runs)
    if chain:
        chain_s = med(r[0] for r in runs)
        extrapolated = False
    elif subset == all_scales:
        chain_s = sum(r["scale_s"] for r in scale_rows) + decode_s  # extrapolated from the first tokens
        extrapolated = True
    else:
        chain_s, extrapolated = None, tokens is not None and tokens < n
    return Result(
        model=name, device=str(device), device_name=device_name(device), dtype=dtype_name, batch=batch,
        step_mode=model.step_mode,
        threads=torch.get_num_threads() if device.type == "cpu" else None, extrapolated=extrapolated,
        repeats=repeats, chain_s=chain_s, decode_s=decode_s,
        tokens_per_s=None if chain_s is None else batch * n * len(subset) / chain_s,
        peak_memory_bytes=peak, peak_memory_kind="allocated" if device.type == "cuda" else "rss",
        bandwidth_gb_s=bandwidth, load_average=(load_before, _load()), scales=scale_rows,
    )


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


# -- output ----------------------------------------------------------------------------------------------
def _gb(b: int | None) -> str:
    return "-" if b is None else f"{b / 1e9:.2f} GB"


def _ops(scale_row: dict) -> str:
    """The ops/step column: the eager operator count, or "compiled" for steps Inductor fused."""
    if scale_row.get("step_operators") is not None:
        return str(scale_row["step_operators"])
    return "compiled" if "eager_step_operators" in scale_row else "-"


def format_table(results: Sequence[Result]) -> str:
    lines = []
    for r in results:
        tag = " (extrapolated from the first tokens)" if r.extrapolated else ""
        chain = "-" if r.chain_s is None else f"{r.chain_s:.2f} s"
        tps = "-" if r.tokens_per_s is None else f"{r.tokens_per_s:.1f}"
        lines.append(f"{r.model}  {r.device} {r.dtype}  batch {r.batch}  steps {r.step_mode}  [{r.device_name}]{tag}")
        lines.append(f"  chain incl. decode {chain}   decode {r.decode_s:.2f} s   tokens/s {tps}   "
                     f"peak {r.peak_memory_kind} {_gb(r.peak_memory_bytes)}   read bandwidth {r.bandwidth_gb_s:.1f} GB/s"
                     + (f"   load {r.load_average[0]:.1f}->{r.load_average[1]:.1f}" if r.load_average[0] is not None
                        else ""))
        lines.append("  scale kind             encoder s   loop s   tok/s   ms/step   bound ms   bound/measured   ops/step")
        for s in r.scales:
            base = (f"   no-cache loop {s['recompute_loop_s']:.1f} s ({s['speedup_vs_recompute']:.1f}x slower)"
                    if "recompute_loop_s" in s else "")
            lines.append(f"  {s['scale']:>5} {s['kind']:<16} {s['encoder_s']:>9.2f} {s['loop_s']:>8.2f} "
                         f"{s['tokens_per_s']:>7.1f} {s['ms_per_token_step']:>9.2f} {s['bandwidth_bound_ms']:>10.2f} "
                         f"{s['bound_fraction']:>16.2f} {_ops(s):>10}{base}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from imagebart_core.original.presets import ORIGINAL_MODELS

    p = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="models by name: tiny, " + ", ".join(ORIGINAL_MODELS))
    p.add_argument("--model", default="ffhq_4_scales_geometric", help="a released architecture name (random "
                   "weights, full size), 'tiny', or a native .safetensors model file")
    p.add_argument("--batch", type=int, nargs="+", default=[1])
    p.add_argument("--device", nargs="+", default=["cpu"], help="cpu, cuda, cuda:1 ...")
    p.add_argument("--dtype", nargs="+", default=["fp32"], choices=sorted(DTYPES),
                   help="transformer dtype (the VQGAN and the sampling math stay float32)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--scales", type=int, nargs="+", default=None, help="time only these scales (1-based)")
    p.add_argument("--tokens", type=int, default=None,
                   help="time only the first N tokens of each scale; the loop is extrapolated (and labelled so)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: physical cores not kept busy by other work, see default_threads)")
    p.add_argument("--step-mode", nargs="+", default=["eager"], choices=list(STEP_MODES),
                   help="how token steps run (ImageBART.step_mode), one result per mode; compiled = torch.compile "
                   "(CUDA graphs on CUDA), its compilation is part of the first, warm-up run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline", action="store_true", help="also estimate each encoder-decoder scale's token loop "
                   "without a KV cache (the original code's recomputation over the prefix), for a same-run ratio")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    if any(b < 1 for b in args.batch):
        p.error("--batch values must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> list[Result]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads or default_threads())
    results: list[Result] = []
    for dev in args.device:
        device = torch.device(dev)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device available")
        bandwidth = measure_bandwidth(device)
        for dtype_name in args.dtype:
            reset_peak(device)
            t = time.perf_counter()
            model = build(args.model, device, DTYPES[dtype_name], args.seed)
            if args.scales and not all(1 <= s <= model.n_scales for s in args.scales):
                raise SystemExit(f"--scales must lie in 1..{model.n_scales}")
            log.info("built %s on %s in %s: %.1f s, memory %s", args.model, dev, dtype_name,
                     time.perf_counter() - t, _gb(current_bytes(device)))
            for mode in args.step_mode:
                model.step_mode = mode
                for batch in args.batch:
                    r = run_config(model, Path(args.model).stem if Path(args.model).is_file() else args.model, batch,
                                   dtype_name, scales=args.scales, tokens=args.tokens, repeats=args.repeats,
                                   warmup=args.warmup, bandwidth=bandwidth, seed=args.seed, baseline=args.baseline)
                    results.append(r)
                    print(format_table([r]), flush=True)  # noqa: T201 - CLI summary
            del model
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    write_json(args.json, {**provenance("tools.bench", argv), "results": [asdict(r) for r in results]}, indent=2)
    return results


if __name__ == "__main__":
    main()
