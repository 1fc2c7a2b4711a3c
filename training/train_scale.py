"""Train one transition p(x_{s-1} | x_s) of ImageBART ("scale s" maps level s+1 to s) on its own.

    python -m training.train_scale --config runs/model_config.json --scale 1 --codes runs/codes.safetensors \\
        --out runs/scale1 --max-steps 200000 --batch-size 16

All scales are independent (paper Sec. 3.3): run one process (or one torchrun job) per scale, in parallel.
Scale 1 learns with cross-entropy to the clean codes (eq. 8); the others with the analytic KL to the
posterior (eq. 7), optionally mixed with cross-entropy (``--kl-weight``, the original FFHQ-4 used 0 = pure CE).
Conditioning (class / text, from the model config) with optional condition dropout (``--cond-dropout``) so
one model also samples unconditionally and supports guidance. Without ``--codes`` the image folder ``--data``
is encoded once with the VQGAN and cached in the run folder.

Writes to OUT: ``checkpoints/last.pt`` (exact resume), ``scale{s}.safetensors`` (EMA weights, for
training.assemble), ``log.csv`` / ``log.jsonl``, ``samples/step_*.png``. Many GPUs / machines: launch the
same command with ``torchrun`` (see docs/training.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from imagebart_core import conditioning as cond_lib
from imagebart_core.config import DECODER_ONLY, ModelConfig
from imagebart_core.diffusion import MultinomialDiffusion
from imagebart_core.schedule import residual_alpha
from imagebart_core.transformer import build_scale, init_weights

from . import checkpoints, data_order, distributed, optim, run_log, trainer_args
from .files import config_fingerprint, load_model_config, save_scale
from .precompute_codes import CodeSet, encode_folder, load_codes, load_vqgan_for, resolve_vqgan_paths, save_codes
from .scale_loss import StepNoise, make_targets, scale_loss

log = logging.getLogger(__name__)


class ScaleModel(torch.nn.Module):
    """One scale's network, alone: forward(x_in, target, cond_tokens) -> teacher-forced logits [B, N, K]."""

    def __init__(self, cfg: ModelConfig, scale: int):
        super().__init__()
        if not 1 <= scale <= cfg.n_scales:
            raise ValueError(f"--scale must be in 1..{cfg.n_scales} for this model config, got {scale}")
        self.scale = scale
        alpha = residual_alpha(cfg.schedule.betas, scale)  # the sampler's float32 value (residual term)
        self.net = build_scale(cfg.scales[scale - 1], cfg.conditioning, residual_alpha=alpha)
        init_weights(self.net)

    def forward(self, x_in: torch.Tensor, target: torch.Tensor, cond_tokens: torch.Tensor | None) -> torch.Tensor:
        return self.net(x_in, target, self.scale, cond_tokens)


def param_groups(model: ScaleModel, cfg: ModelConfig, weight_decay: float) -> list[dict]:
    """Encoder-decoder scales: decay on every parameter (the original). Decoder-only (top) scale: decay only
    on Linear weights (minGPT's scheme)."""
    if cfg.scales[model.scale - 1].kind != DECODER_ONLY:
        return [{"params": [p for p in model.parameters()], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for mod in model.modules():
        for name, p in mod.named_parameters(recurse=False):
            (decay if isinstance(mod, torch.nn.Linear) and name == "weight" else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Conditioner:
    """Condition tokens per item, with dropout to the null condition."""

    def __init__(self, cfg: ModelConfig, cs: CodeSet, dropout: float):
        self.kind = cfg.conditioning.kind
        self.dropout = dropout
        self.null = None
        self.tokens = None
        if self.kind == "none":
            return
        if dropout > 0:
            self.null = cond_lib.null_condition(cfg.conditioning, 1).tokens[0]  # [P]
        if self.kind == "class":
            if bool((cs.labels < 0).any()):
                raise SystemExit("class conditioning: some items have no class (images outside class sub-folders)")
            if list(cs.class_names) != list(cfg.conditioning.class_names or []):
                raise SystemExit(f"the codes' classes {cs.class_names[:5]}... differ from the model config's "
                                 f"{(cfg.conditioning.class_names or [])[:5]}...; rebuild one of them")
            self.tokens = cs.labels[:, None].clone()  # [N, 1]
        else:
            missing = [i for i, c in enumerate(cs.captions) if not c.strip()]
            if missing:
                raise SystemExit(f"text conditioning: {len(missing)} images have no caption .txt "
                                 f"(e.g. item {missing[0]}); add captions or use class/none conditioning")
            self.tokens = cond_lib.text_condition(cfg.conditioning, cs.captions).tokens  # [N, L]

    def __call__(self, idx: list[int], drop_u: torch.Tensor) -> torch.Tensor | None:
        if self.tokens is None:
            return None
        tok = self.tokens[torch.tensor(idx)].clone()  # [B, P]
        if self.null is not None:
            drop = drop_u < self.dropout
            tok[drop] = self.null
        return tok


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train_scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="model config JSON (training.model_config)")
    p.add_argument("--scale", type=int, required=True, help="which transition: scale s maps level s+1 -> s (1 = "
                   "writes the clean codes, n_scales = the top, decoder-only scale)")
    p.add_argument("--codes", default=None, help="precomputed codes (training.precompute_codes)")
    p.add_argument("--data", default=None, help="image folder, encoded once into OUT/codes.safetensors when "
                   "--codes is not given")
    p.add_argument("--vqgan", default=None, help="VQGAN file (default: recorded in the config); also used to "
                   "decode sample grids")
    p.add_argument("--shrink", default=None, help="shrink list (default: recorded in the config)")
    p.add_argument("--kl-weight", type=float, default=None, help="a in loss = a KL + (1 - a) CE for scales > 1 "
                   "(default 1 = pure KL, the paper; 0 = pure CE as the original FFHQ-4). Scale 1 is always CE")
    p.add_argument("--cond-dropout", type=float, default=None, help="probability of replacing the condition by the "
                   "null condition (default 0.1 for conditional models with a null condition, else 0)")
    p.add_argument("--sample-count", type=int, default=8, help="items in each sample grid")
    trainer_args.add_trainer_args(p, lr=1e-4, batch=16, steps=100_000, warmup=10_000, ema=0.9999)
    return p


def _decode_rows(vq, rows: list[torch.Tensor], grid) -> torch.Tensor:
    """Code grids [B, N] per row -> image grid float [3, R*H, B*W] in 0..1."""
    images = []
    for codes in rows:
        x = vq.decode_codes(codes.view(-1, *grid).to(vq.quantize.embedding.weight.device))
        images.append(((x.float().cpu() + 1) / 2).clamp(0, 1))  # [B, 3, H, W]
    r = torch.stack(images)  # [R, B, 3, H, W]
    R, B, C, H, W = r.shape
    return r.permute(2, 0, 3, 1, 4).reshape(C, R * H, B * W)


def save_png(img: torch.Tensor, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (img.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype("uint8")
    Image.fromarray(arr).save(path)


def run(argv=None) -> dict:
    """Train; returns a summary dict (steps, last loss, paths)."""
    args = trainer_args.start_trainer(build_parser(), argv)
    env = distributed.init_distributed(args.device)
    try:
        return _train(args, env)
    finally:
        distributed.cleanup_distributed()


def _load_data(args, cfg: ModelConfig, env: distributed.DistEnv, out: Path) -> CodeSet:
    if args.codes:
        cs = load_codes(args.codes)
    else:
        if not args.data:
            raise SystemExit("give --codes (training.precompute_codes) or --data (an image folder)")
        cache = out / "codes.safetensors"
        cached = cache.is_file()
        distributed.barrier(env)  # every process decides before process 0 may write the cache
        if not cached:
            vq = load_vqgan_for(cfg, *resolve_vqgan_paths(cfg, args.vqgan, args.shrink), device=env.device)
            cs = encode_folder(cfg, vq, args.data, 32, env.device, False, env)
            if env.is_main:
                save_codes(cs, cache)
            distributed.barrier(env)
        cs = load_codes(cache)
    if tuple(cs.codes.shape[1:]) != tuple(cfg.grid):
        raise SystemExit(f"the codes are {tuple(cs.codes.shape[1:])} grids but the model config's grid is "
                         f"{tuple(cfg.grid)}: encode the data at the config's image size")
    if int(cs.codes.max()) >= cfg.vocab_size or int(cs.codes.min()) < 0:
        raise SystemExit(f"the codes use ids up to {int(cs.codes.max())}, outside the config's vocabulary "
                         f"{cfg.vocab_size}: they were made with another shrink list")
    return cs


def _train(args, env: distributed.DistEnv) -> dict:
    cfg = load_model_config(args.config)
    s = args.scale
    if args.kl_weight is not None and not 0.0 <= args.kl_weight <= 1.0:
        raise SystemExit("--kl-weight must lie in [0, 1]")
    if args.cond_dropout is not None and not 0.0 <= args.cond_dropout < 1.0:
        raise SystemExit("--cond-dropout must lie in [0, 1)")
    out = Path(args.out)
    with torch.random.fork_rng(devices=[]):  # initial weights: a function of --seed and the scale only
        torch.manual_seed(args.seed * 1000 + s)
        model = ScaleModel(cfg, s)  # raises for a bad --scale
    fingerprint = config_fingerprint(cfg)
    resume_from = checkpoints.find_resume(out, args.resume)
    checkpoints.remove_stale_temps(out, env)
    if args.resume == "never" and (out / "checkpoints" / checkpoints.CHECKPOINT_NAME).is_file():
        raise SystemExit(f"{out} already holds a run; use another --out or --resume auto")
    cs = _load_data(args, cfg, env, out)
    diffusion = MultinomialDiffusion(cfg.schedule.betas, cfg.vocab_size)
    conditional = cfg.conditioning.kind != "none"
    drop = args.cond_dropout
    if drop is None:
        drop = 0.1 if conditional and cfg.conditioning.null_condition else 0.0
    if drop > 0 and not (conditional and cfg.conditioning.null_condition):
        raise SystemExit("--cond-dropout needs a conditional model config with a null condition")
    conditioner = Conditioner(cfg, cs, drop)
    precision = optim.resolve_precision(args.precision, env.device)
    model.to(env.device)
    optimizer = torch.optim.AdamW(param_groups(model, cfg, args.weight_decay), lr=args.lr, betas=(args.beta1, args.beta2))
    scaler = optim.make_scaler(precision, env.device)
    ema = optim.EMA(model, args.ema_decay) if args.ema_decay > 0 else None
    start = 0
    if resume_from is not None:
        ck = checkpoints.load_checkpoint(resume_from)
        if ck.get("kind") != "scale" or ck.get("scale") != s:
            raise SystemExit(f"{resume_from} is not a checkpoint of scale {s}")
        if ck.get("config_fingerprint") != fingerprint:
            raise SystemExit(f"{resume_from} was trained for another model config; use a new --out")
        gb = env.world * args.batch_size * args.accumulate
        if ck.get("global_batch") != gb:
            log.warning("resuming with global batch %d (checkpoint: %s): the data order changes", gb,
                        ck.get("global_batch"))
        start = checkpoints.restore_training_state(ck, {"model": model, "optimizer": optimizer, "scaler": scaler},
                                              ema, env)
        if env.is_main:
            log.info("resuming scale %d from %s at step %d", s, resume_from, start)
    ddp = DDP(model, device_ids=[env.device.index] if env.device.type == "cuda" else None) \
        if env.distributed else model
    stop = min(args.max_steps, args.stop_after) if args.stop_after else args.max_steps
    n_items = len(cs)
    n_tokens = cfg.grid[0] * cfg.grid[1]
    gb = env.world * args.batch_size * args.accumulate
    data_order.steps_per_epoch(n_items, env.world, args.batch_size, args.accumulate)  # raises for too little data
    codes = cs.codes.reshape(n_items, n_tokens)
    runlog = run_log.RunLog(out, env.is_main, resume_step=start)
    bar = run_log.ProgressBar(stop, start, env.is_main and not args.no_progress, f"scale {s}", args.log_every)
    vq = None
    if env.is_main and args.sample_every > 0:
        try:
            vq = load_vqgan_for(cfg, *resolve_vqgan_paths(cfg, args.vqgan, args.shrink), device=env.device)
        except (SystemExit, FileNotFoundError, ValueError) as exc:
            log.warning("no sample grids (cannot load the VQGAN: %s)", exc)
    last_stats: dict[str, float] = {}
    t_last, items_since = time.time(), 0
    model.train()
    for step in range(start, stop):
        plan = data_order.batch_plan(n_items, step, env, args.batch_size, args.accumulate, args.seed)
        lr = optim.warmup_cosine(step, warmup=args.warmup_steps, total=args.max_steps, lr=args.lr, lr_start=args.lr_start,
                                  lr_min=args.min_lr)
        optim.set_lr(optimizer, lr)
        noise = StepNoise.draw(data_order.step_generator(args.seed, step), gb, n_tokens, cfg.vocab_size)
        optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for m, (idx, rows) in enumerate(zip(plan.micro, plan.rows)):
            nz = noise.rows(rows)
            x1 = codes[torch.tensor(idx)].to(env.device)  # [B, N]
            t = make_targets(diffusion, s, x1, nz)
            cond = conditioner(idx, nz.drop)
            with optim.accumulation_sync(ddp, env.distributed, m == args.accumulate - 1):
                with optim.autocast(precision, env.device):
                    logits = ddp(t.x_in, t.target, None if cond is None else cond.to(env.device))
                loss, stats = scale_loss(logits, t, s, args.kl_weight)
                scaler.scale(loss / args.accumulate).backward()
            stats["loss"] = float(loss.detach())
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v / args.accumulate
        optim.optimizer_step(scaler, optimizer, model.parameters(), args.grad_clip)
        if ema is not None:
            ema.update(model)
        items_since += gb
        done = step + 1
        if done % args.log_every == 0 or done == stop:
            stats = {k: distributed.mean_across(env, v) for k, v in sums.items()}
            now = time.time()
            speed = items_since / max(now - t_last, 1e-9)
            t_last, items_since = now, 0
            row = {"step": done, "epoch": plan.epoch, "lr": lr, **stats, "items_per_s": speed}
            runlog.write(row)
            last_stats = stats
        bar.update(done, {"loss": sums["loss"], "lr": lr})
        if vq is not None and args.sample_every > 0 and (done % args.sample_every == 0 or done == stop):
            _sample_grid(model, ema, vq, cfg, s, codes, conditioner, diffusion, args, out / "samples" / f"step_{done:07d}.png")
        if done % args.ckpt_every == 0 or done == stop:
            _checkpoint(out, env, model, optimizer, scaler, ema, done, s, fingerprint, gb, args, cfg)
    bar.close()
    return {"step": stop, "stats": last_stats, "out": str(out), "weights": str(out / f"scale{s}.safetensors")}


def _checkpoint(out, env, model, optimizer, scaler, ema, step, s, fingerprint, gb, args, cfg) -> None:
    states = distributed.all_gather_objects(env, checkpoints.rng_state())
    if env.is_main:
        state = {
            "kind": "scale", "scale": s, "step": step, "config_fingerprint": fingerprint, "global_batch": gb,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "ema": ema.state_dict() if ema is not None else None, "rng": states,
        }
        checkpoints.save_checkpoint(out / "checkpoints" / checkpoints.CHECKPOINT_NAME, state)
        weights = ema.weights(model) if ema is not None else {k: v.detach().cpu() for k, v in model.state_dict().items()}
        weights = {k[len("net."):]: v for k, v in weights.items()}
        save_scale(weights, s, cfg, out / f"scale{s}.safetensors",
                   info={"step": step, "ema": ema is not None, "ema_decay": args.ema_decay})
    distributed.barrier(env)


@torch.no_grad()
def _sample_grid(model, ema, vq, cfg, s, codes, conditioner, diffusion, args, path: Path) -> None:
    """Rows: input level s+1, the model's teacher-forced argmax for level s, a posterior sample of level s."""
    n = min(args.sample_count, codes.shape[0])
    idx = list(range(n))
    gen = torch.Generator().manual_seed(args.seed)
    noise = StepNoise.draw(gen, n, codes.shape[1], cfg.vocab_size)
    noise.drop.fill_(1.0)  # conditional rows keep their condition
    dev = next(model.parameters()).device
    t = make_targets(diffusion, s, codes[:n].to(dev), noise)
    cond = conditioner(idx, noise.drop)
    net = model
    if ema is not None:
        with torch.random.fork_rng(devices=[]):  # building a copy must not move the global RNG
            net = ScaleModel(cfg, s).to(dev)
        net.load_state_dict(ema.weights(model))
    was = net.training
    net.eval()
    logits = net(t.x_in, t.target, None if cond is None else cond.to(dev))  # [n, N, K]
    net.train(was)
    pred = logits.argmax(-1)
    rows = [t.x_in, pred, t.target]
    if cfg.scales[s - 1].kind == DECODER_ONLY:
        rows = rows[1:]  # the input level of the top scale is pure noise
    save_png(_decode_rows(vq, rows, cfg.grid), path)


def main(argv=None) -> None:
    summary = run(argv)
    if summary and int(os.environ.get("RANK", "0")) == 0:
        print(f"scale trained to step {summary['step']}: {summary['stats']} -> {summary['weights']}")  # noqa: T201 (CLI summary)


if __name__ == "__main__":
    main()
