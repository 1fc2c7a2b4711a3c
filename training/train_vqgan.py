"""Train the compression stage: a VQGAN (paper Sec. 3.2, the taming-transformers recipe).

    python -m training.train_vqgan --data DATA --image-size 256 --preset f16 --out runs/vqgan

Loss: L1 reconstruction + LPIPS (VGG16) perceptual distance + patch discriminator with the hinge loss,
weighted adaptively from the gradients at the decoder's last layer and switched on at ``--disc-start``, +
the codebook / commitment loss. LPIPS needs torchvision's VGG16 weights once: without them cached the run
stops and says how to proceed (``--allow-download``, or ``--no-perceptual`` to train without the term).

Measured as it trains (``log.csv``): the codebook usage of each batch (``codes_used``, ``perplexity``) and, with
``--val-data``, on held-out images every ``--val-every`` steps and at the end (``val_psnr``, ``val_mae``,
``val_colour_err``, ``val_codes_used``, ``val_perplexity``; the final figures also in ``metrics.json``; see
training.vqgan_metrics). ``--restart-dead-codes N`` revives codes unused for N steps (training.codebook_restart).

Writes to OUT: ``vqgan.safetensors`` (for training.shrink_codebook / model_config / assemble; EMA weights
when ``--ema-decay`` > 0), ``checkpoints/last.pt`` (exact resume), ``log.csv``, ``samples/step_*.png``
(top: originals, bottom: reconstructions). Many GPUs: launch with torchrun (docs/training.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from imagebart_core.config import VQGANConfig
from imagebart_core.fileio import atomic_write_text
from imagebart_core.vqgan import VQGAN

from . import checkpoints, data_order, distributed, optim, run_log, trainer_args
from .codebook_restart import DeadCodeRestarter
from .data import DataError, ImageFolder
from .files import save_vqgan, vqgan_config_from_dict
from .train_scale import save_png
from .vqgan_loss import PatchDiscriminator, PerceptualWeightsMissing, VQGANLoss, make_lpips
from .vqgan_metrics import code_usage, evaluate_vqgan

log = logging.getLogger(__name__)

VAL_COLUMNS = ["val_psnr", "val_mae", "val_colour_err", "val_codes_used", "val_perplexity"]

VQGAN_PRESETS: dict[str, VQGANConfig] = {
    # for tests and smoke runs: factor 4, 48 codes
    "tiny": VQGANConfig(base_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(),
                        resolution=16, z_channels=8, embed_dim=8, n_embed=48),
    # small images / quick experiments: factor 8
    "f8-small": VQGANConfig(base_channels=64, channel_mult=(1, 2, 2, 4), num_res_blocks=1, attn_resolutions=(8,),
                            resolution=64, z_channels=64, embed_dim=64, n_embed=512),
    # the original ImageBART / taming VQGAN (factor 16, 16x16 tokens at 256 px); set --n-embed 16384 for ImageNet
    "f16": VQGANConfig(),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train_vqgan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="image folder (recursive)")
    p.add_argument("--image-size", type=int, required=True, help="training crop side in pixels")
    p.add_argument("--preset", default="f16", choices=sorted(VQGAN_PRESETS), help="architecture (default f16)")
    p.add_argument("--vqgan-config", default=None, help="JSON file with a full VQGANConfig (overrides --preset)")
    p.add_argument("--n-embed", type=int, default=None, help="codebook size (overrides the preset)")
    p.add_argument("--random-crop", action="store_true", help="random instead of centre crops")
    p.add_argument("--hflip", action="store_true", help="random horizontal flips")
    g = p.add_argument_group("loss")
    g.add_argument("--no-perceptual", action="store_true", help="train without the LPIPS term (no VGG weights)")
    g.add_argument("--allow-download", action="store_true", help="let torchvision download the VGG16 weights")
    g.add_argument("--perceptual-trunk", default="vgg", choices=["vgg", "random"],
                   help="random = an untrained VGG trunk (tests only; not a perceptual metric)")
    g.add_argument("--perceptual-weight", type=float, default=1.0)
    g.add_argument("--disc-start", type=int, default=10_000, help="step at which the GAN terms start")
    g.add_argument("--disc-weight", type=float, default=0.8, help="scale of the adaptive GAN weight (0 = no GAN)")
    g.add_argument("--disc-lr-mult", type=float, default=1.0, help="discriminator lr = lr x this")
    g.add_argument("--codebook-weight", type=float, default=1.0)
    g.add_argument("--rec-loss", default="l1", choices=["l1", "l2"],
                   help="pixel reconstruction term: l1 (taming's, default) or l2 (squared error: optimises PSNR)")
    g.add_argument("--disc-layers", type=int, default=3)
    g.add_argument("--sample-count", type=int, default=8)
    g = p.add_argument_group("codebook")
    g.add_argument("--embed-dim", type=int, default=None, help="code vector size (overrides the preset)")
    g.add_argument("--restart-dead-codes", type=int, default=0, metavar="N",
                   help="every N steps, move codes no encoder output used in those N steps onto encoder outputs "
                   "of the batch (0 = off)")
    g = p.add_argument_group("held-out evaluation")
    g.add_argument("--val-data", default=None, help="held-out image folder: PSNR, colour error and codebook usage "
                   "are measured on it every --val-every steps and at the end (log.csv val_*, metrics.json)")
    g.add_argument("--val-every", type=int, default=1000, help="held-out evaluation interval (0 = only at the end)")
    g.add_argument("--val-images", type=int, default=512, help="at most this many held-out images (default 512)")
    trainer_args.add_trainer_args(p, lr=7.2e-5, batch=8, steps=200_000, warmup=0, ema=0.0)
    p.set_defaults(beta1=0.5, beta2=0.9, weight_decay=0.0, lr_start=None)
    return p


def vqgan_config_from_args(args) -> VQGANConfig:
    if args.vqgan_config:
        cfg = vqgan_config_from_dict(json.loads(Path(args.vqgan_config).read_text(encoding="utf-8")))
    else:
        cfg = VQGANConfig(**{**VQGAN_PRESETS[args.preset].__dict__})
    if args.n_embed:
        cfg.n_embed = args.n_embed
    if args.embed_dim:
        cfg.embed_dim = args.embed_dim
    if args.image_size % cfg.factor:
        raise SystemExit(f"--image-size {args.image_size} is not a multiple of the VQGAN factor {cfg.factor}")
    return cfg


def run(argv=None) -> dict:
    args = trainer_args.start_trainer(build_parser(), argv)
    cfg = vqgan_config_from_args(args)
    perceptual = None
    if not args.no_perceptual and args.perceptual_weight > 0:
        try:
            perceptual = make_lpips(args.perceptual_trunk, args.allow_download)
        except PerceptualWeightsMissing as exc:
            raise SystemExit(f"error: {exc}") from None
    try:
        ds = ImageFolder(args.data, args.image_size, random_crop=args.random_crop, hflip=args.hflip, seed=args.seed)
        val = ImageFolder(args.val_data, args.image_size) if args.val_data else None
    except DataError as exc:
        raise SystemExit(f"error: {exc}") from None
    env = distributed.init_distributed(args.device)
    try:
        return _train(args, env, cfg, ds, perceptual, val)
    finally:
        distributed.cleanup_distributed()


def _train(args, env, cfg: VQGANConfig, ds: ImageFolder, perceptual, val: ImageFolder | None = None) -> dict:
    out = Path(args.out)
    if args.resume == "never" and (out / "checkpoints" / checkpoints.CHECKPOINT_NAME).is_file():
        raise SystemExit(f"{out} already holds a run; use another --out or --resume auto")
    resume_from = checkpoints.find_resume(out, args.resume)
    checkpoints.remove_stale_temps(out, env)
    torch.manual_seed(args.seed)
    model = VQGAN(cfg).to(env.device)
    disc = PatchDiscriminator(cfg.out_channels, n_layers=args.disc_layers).to(env.device)
    if args.disc_weight > 0:
        try:
            with torch.no_grad():
                disc.eval()(torch.zeros(1, cfg.out_channels, args.image_size, args.image_size, device=env.device))
        except RuntimeError:
            raise SystemExit(f"--image-size {args.image_size} is too small for a {args.disc_layers}-layer patch "
                             "discriminator; lower --disc-layers (or --disc-weight 0 for no GAN)") from None
    loss_fn = VQGANLoss(perceptual.to(env.device) if perceptual is not None else None, args.perceptual_weight,
                        args.disc_start, args.disc_weight, args.codebook_weight, disc, args.rec_loss)
    precision = optim.resolve_precision(args.precision, env.device)
    betas = (args.beta1, args.beta2)
    opt_g = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=betas, weight_decay=args.weight_decay)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=args.lr, betas=betas, weight_decay=args.weight_decay)
    for group in opt_d.param_groups:
        group["lr_scale"] = args.disc_lr_mult
    scaler_g, scaler_d = optim.make_scaler(precision, env.device), optim.make_scaler(precision, env.device)
    ema = optim.EMA(model, args.ema_decay) if args.ema_decay > 0 else None
    restarter = DeadCodeRestarter(cfg.n_embed, args.restart_dead_codes, args.seed)
    start = 0
    if resume_from is not None:
        ck = checkpoints.load_checkpoint(resume_from)
        if ck.get("kind") != "vqgan":
            raise SystemExit(f"{resume_from} is not a VQGAN checkpoint")
        if ck.get("vqgan_config") != json.dumps(cfg.__dict__, default=list):
            raise SystemExit(f"{resume_from} was trained with another VQGAN architecture; use a new --out")
        parts = {"model": model, "disc": disc, "opt_g": opt_g, "opt_d": opt_d, "scaler_g": scaler_g,
                 "scaler_d": scaler_d}
        start = checkpoints.restore_training_state(ck, parts, ema, env)
        if ck.get("dead_code_restarts") is not None:
            restarter.load_state_dict(ck["dead_code_restarts"])
        if env.is_main:
            log.info("resuming the VQGAN from %s at step %d", resume_from, start)
    dev_ids = [env.device.index] if env.device.type == "cuda" else None
    g_model = DDP(model, device_ids=dev_ids) if env.distributed else model
    d_model = DDP(disc, device_ids=dev_ids) if env.distributed else disc
    stop = min(args.max_steps, args.stop_after) if args.stop_after else args.max_steps
    n = len(ds)
    data_order.steps_per_epoch(n, env.world, args.batch_size, args.accumulate)
    gb = env.world * args.batch_size * args.accumulate

    def batches():
        for step in range(start, stop):
            plan = data_order.batch_plan(n, step, env, args.batch_size, args.accumulate, args.seed)
            for idx in plan.micro:
                yield [(i, plan.epoch) for i in idx]

    loader = torch.utils.data.DataLoader(ds, batch_sampler=batches(), num_workers=args.workers,
                                         collate_fn=_stack_images)
    it = iter(loader)
    runlog = run_log.RunLog(out, env.is_main, ["step", "lr", "loss", "l1", "lpips", "nll", "vq", "g", "d_weight", "d",
                                              "logits_real", "logits_fake", "codes_used", "perplexity",
                                              "codes_restarted", *VAL_COLUMNS, "items_per_s"], resume_step=start)
    bar = run_log.ProgressBar(stop, start, env.is_main and not args.no_progress, "vqgan", args.log_every)
    fixed = torch.stack([ds.load(i, 0) for i in range(min(args.sample_count, n))]) if env.is_main else None
    last_layer = model.last_decoder_layer_weight
    t_last, items_since, last_stats, last_val = time.time(), 0, {}, None
    model.train()
    disc.train()
    for step in range(start, stop):
        lr = optim.warmup_cosine(step, warmup=args.warmup_steps, total=args.max_steps, lr=args.lr, lr_start=args.lr_start,
                                  lr_min=args.min_lr)
        optim.set_lr(opt_g, lr)
        optim.set_lr(opt_d, lr)
        gan = loss_fn.gan_active(step)
        opt_g.zero_grad(set_to_none=True)
        opt_d.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for m in range(args.accumulate):
            x = next(it).to(env.device)  # [B, 3, S, S] in [-1, 1]
            last = m == args.accumulate - 1
            with optim.accumulation_sync(g_model, env.distributed, last):
                with optim.autocast(precision, env.device):
                    x_rec, q_loss, ids = g_model(x)
                loss, stats = loss_fn.generator_loss(x, x_rec, q_loss, step, last_layer,
                                                     disc=d_model if gan else None)
                stats.update(code_usage(ids, cfg.n_embed))  # this micro-batch's codes
                restarter.observe(ids)
                scaler_g.scale(loss / args.accumulate).backward()
            if gan:
                with optim.accumulation_sync(d_model, env.distributed, last):
                    with optim.autocast(precision, env.device):
                        d_loss, d_stats = loss_fn.discriminator_loss(x, x_rec, disc=d_model)
                    scaler_d.scale(d_loss / args.accumulate).backward()
                stats.update(d_stats)
            stats["loss"] = float(loss.detach())
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v / args.accumulate
        optim.optimizer_step(scaler_g, opt_g, model.parameters(), args.grad_clip)
        if gan:
            optim.optimizer_step(scaler_d, opt_d, disc.parameters())
        restarted = None
        if restarter.due(step + 1):
            with torch.no_grad():
                restarted = restarter.restart(step + 1, model, model.encode_prequant(x), opt_g, env)
        if ema is not None:
            ema.update(model)
        items_since += gb
        done = step + 1
        val_row = {}
        if val is not None and env.is_main and ((args.val_every > 0 and done % args.val_every == 0) or done == stop):
            last_val = _evaluate(model, ema, val, args, env)
            val_row = {f"val_{k}": v for k, v in last_val.items() if f"val_{k}" in VAL_COLUMNS}
        if done % args.log_every == 0 or done == stop or val_row or restarted:
            stats = {k: distributed.mean_across(env, v) for k, v in sorted(sums.items())}
            now = time.time()
            row = {"step": done, "lr": lr, **stats, **val_row,
                   "items_per_s": items_since / max(now - t_last, 1e-9)}
            if restarted is not None:
                row["codes_restarted"] = restarted
            t_last, items_since = now, 0
            runlog.write(row)
            last_stats = stats
        bar.update(done, {"loss": sums["loss"], "l1": sums["l1"]})
        if env.is_main and args.sample_every > 0 and (done % args.sample_every == 0 or done == stop):
            _samples(model, fixed, env, out / "samples" / f"step_{done:07d}.png")
        if done % args.ckpt_every == 0 or done == stop:
            _checkpoint(out, env, cfg, model, disc, opt_g, opt_d, scaler_g, scaler_d, ema, restarter, done)
    bar.close()
    if last_val is not None and env.is_main:
        atomic_write_text(out / "metrics.json", json.dumps({"step": stop, "heldout": last_val, "data": str(args.val_data),
                                                            "restarted_codes": restarter.total_restarted},
                                                           indent=1) + "\n")
    return {"step": stop, "stats": last_stats, "val": last_val, "out": str(out),
            "weights": str(out / "vqgan.safetensors")}


def _evaluate(model: VQGAN, ema, val: ImageFolder, args, env) -> dict[str, float]:
    """Held-out metrics of the weights that get exported (the EMA weights when EMA is on)."""
    if ema is None:
        return evaluate_vqgan(model, val, args.batch_size, args.val_images, env.device)
    shadow = VQGAN(model.cfg).to(env.device)
    shadow.load_state_dict(ema.weights(model))
    return evaluate_vqgan(shadow, val, args.batch_size, args.val_images, env.device)


def _stack_images(items: list[dict]) -> torch.Tensor:
    return torch.stack([it["image"] for it in items])  # [B, 3, S, S]


@torch.no_grad()
def _samples(model: VQGAN, fixed: torch.Tensor, env, path: Path) -> None:
    was = model.training
    model.eval()
    rec, _, _ = model(fixed.to(env.device))
    model.train(was)
    both = torch.cat([fixed, rec.float().cpu()])  # [2B, 3, S, S]
    b = fixed.shape[0]
    img = ((both.clamp(-1, 1) + 1) / 2).view(2, b, *both.shape[1:])  # [2, B, 3, S, S]
    _, _, c, h, w = img.shape
    save_png(img.permute(2, 0, 3, 1, 4).reshape(c, 2 * h, b * w), path)


def _checkpoint(out, env, cfg, model, disc, opt_g, opt_d, scaler_g, scaler_d, ema, restarter, step) -> None:
    states = distributed.all_gather_objects(env, checkpoints.rng_state())
    if env.is_main:
        checkpoints.save_checkpoint(out / "checkpoints" / checkpoints.CHECKPOINT_NAME, {
            "kind": "vqgan", "step": step, "vqgan_config": json.dumps(cfg.__dict__, default=list),
            "model": model.state_dict(), "disc": disc.state_dict(), "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(), "scaler_g": scaler_g.state_dict(), "scaler_d": scaler_d.state_dict(),
            "ema": ema.state_dict() if ema is not None else None, "rng": states,
            "dead_code_restarts": restarter.state_dict(),
        })
        weights = ema.weights(model) if ema is not None else {k: v.detach().cpu() for k, v in model.state_dict().items()}
        save_vqgan(weights, cfg, out / "vqgan.safetensors", info={"step": step, "ema": ema is not None})
    distributed.barrier(env)


def main(argv=None) -> None:
    s = run(argv)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"VQGAN trained to step {s['step']}: {s['stats']} -> {s['weights']}")  # noqa: T201 (CLI summary)


if __name__ == "__main__":
    main()
