"""The recipe of the bundled demo models: train them from scratch on CPU with this package, in one command.

    python -m training.demo_recipe --work runs/demo --models models

It draws the procedural shapes data set, trains the VQGAN (L1 + codebook loss; no LPIPS, whose VGG weights
cannot be downloaded offline, and no GAN, to keep it fast on a CPU), shrinks the codebook, then trains two
3-scale chains (T = 4) on the same codes: a class-conditional one (shape classes) and a text-conditional one
(captions like "a red circle above a blue square"), both with condition dropout so they also sample
unconditionally and support guidance. Each chain is assembled into one model file (transformers stored in
fp16 to keep the files small) in ``--models``, and the recipe evaluates them on held-out shapes:
VQGAN PSNR, each scale's validation loss next to a uniform model and log K, and sampling time.

Every step is resumable: a step whose output exists is skipped (``--force`` redoes all). The settings, seeds
and wall time of each step are written to ``<models>/demo_recipe.json``, the metrics to ``demo_metrics.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger("training.demo_recipe")

CLASS_MODEL = "imagebart-demo-shapes-class.safetensors"
TEXT_MODEL = "imagebart-demo-shapes-text.safetensors"


@dataclass
class DemoSettings:
    """Everything that decides the bundled files (defaults = what ships)."""

    image_size: int = 32
    train_images: int = 6000
    val_images: int = 256
    data_seed: int = 0
    val_seed: int = 1
    class_max_shapes: int = 1  # the class model learns from one-shape images (the class is that shape)
    # VQGAN: factor 4 (8x8 codes at 32 px), small channels for a CPU
    vq_base_channels: int = 16
    vq_channel_mult: tuple[int, ...] = (1, 2, 4)
    vq_z_channels: int = 32
    vq_n_embed: int = 256
    vq_steps: int = 5000
    vq_batch: int = 16
    vq_lr: float = 5e-4
    # the chains: 3 scales (T = 4)
    n_scales: int = 3
    dim: int = 96
    heads: int = 4
    dim_head: int = 24
    depth: int = 2
    decoder_depth: int = 2
    top_depth: int = 3
    text_length: int = 16
    scale_steps: int = 5000
    scale_batch: int = 24
    scale_lr: float = 1e-3
    warmup_steps: int = 100
    cond_dropout: float = 0.15
    ema_decay: float = 0.998
    seed: int = 0


def module_command(module: str, *args: object) -> list[str]:
    """``python -m <module> args``; "training.x" names this package's module x (``imagebart_training.x`` when
    installed from the wheel, ``training.x`` in a clone)."""
    if module.startswith("training.") and __package__:
        module = __package__ + module[len("training"):]
    return [sys.executable, "-m", module, *[str(a) for a in args]]


def job_environment() -> dict[str, str]:
    """The environment of a recipe's jobs: this one, with the folder that holds this package first on
    PYTHONPATH, so that ``python -m training.x`` finds the package from any working directory (a clone's recipe
    run from elsewhere, e.g. in a scratch folder; an installed wheel finds it anyway)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


class Recipe:
    def __init__(self, work: Path, models: Path, settings: DemoSettings, force: bool, parallel: int):
        self.work, self.models, self.s, self.force, self.parallel = work, models, settings, force, parallel
        self.times: dict[str, float] = {}

    # -- plumbing ------------------------------------------------------------------------------------
    def _done(self, path: Path) -> bool:
        return path.exists() and not self.force

    def _run(self, name: str, commands: list[list[str]]) -> None:
        """Run commands (up to ``parallel`` at once); record the step's wall time."""
        t0 = time.perf_counter()
        pending = list(commands)
        env = job_environment()
        running: list[subprocess.Popen] = []
        while pending or running:
            while pending and len(running) < self.parallel:
                cmd = pending.pop(0)
                log.info("$ %s", " ".join(cmd[1:]))
                running.append(subprocess.Popen(cmd, env=env))
            time.sleep(0.5)
            for proc in list(running):
                if proc.poll() is not None:
                    running.remove(proc)
                    if proc.returncode != 0:
                        for other in running:
                            other.terminate()
                        raise SystemExit(f"step {name} failed (exit {proc.returncode}): {' '.join(proc.args)}")
        self.times[name] = round(time.perf_counter() - t0, 1)
        log.info("step %s: %.1f s", name, self.times[name])

    # -- steps ---------------------------------------------------------------------------------------
    def run(self) -> dict:
        s, w = self.s, self.work
        w.mkdir(parents=True, exist_ok=True)
        self.models.mkdir(parents=True, exist_ok=True)
        shapes, val = w / "shapes", w / "shapes_val"
        single, single_val = w / "shapes_single", w / "shapes_single_val"
        if not (self._done(shapes / "circle") and self._done(single / "circle")):
            self._run("data", [
                module_command("training.make_shapes", "--out", shapes, "--n", s.train_images, "--size", s.image_size,
                        "--seed", s.data_seed, "--overwrite"),
                module_command("training.make_shapes", "--out", val, "--n", s.val_images, "--size", s.image_size,
                        "--seed", s.val_seed, "--overwrite"),
                module_command("training.make_shapes", "--out", single, "--n", s.train_images, "--size", s.image_size,
                        "--seed", s.data_seed, "--max-shapes", s.class_max_shapes, "--overwrite"),
                module_command("training.make_shapes", "--out", single_val, "--n", s.val_images, "--size", s.image_size,
                        "--seed", s.val_seed, "--max-shapes", s.class_max_shapes, "--overwrite"),
            ])
        vq_cfg = w / "vqgan_config.json"
        vq_cfg.write_text(json.dumps({
            "base_channels": s.vq_base_channels, "channel_mult": list(s.vq_channel_mult), "num_res_blocks": 1,
            "attn_resolutions": [], "resolution": s.image_size, "z_channels": s.vq_z_channels,
            "embed_dim": s.vq_z_channels, "n_embed": s.vq_n_embed,
        }))
        vq = w / "vqgan" / "vqgan.safetensors"
        if not self._done(vq):
            self._run("vqgan", [module_command(
                "training.train_vqgan", "--data", shapes, "--image-size", s.image_size, "--vqgan-config", vq_cfg,
                "--no-perceptual", "--disc-weight", 0, "--max-steps", s.vq_steps, "--batch-size", s.vq_batch,
                "--lr", s.vq_lr, "--warmup-steps", 100, "--out", w / "vqgan", "--seed", s.seed, "--no-progress",
                "--threads", 1, "--workers", 0, "--log-every", 50, "--sample-every", 1000, "--ckpt-every", 500)])
        shrink = w / "shrink.npy"
        if not self._done(shrink):
            self._run("shrink", [module_command("training.shrink_codebook", "--vqgan", vq, "--data", shapes,
                                         "--image-size", s.image_size, "--out", shrink, "--overwrite")])
        configs = {"class": w / "class" / "model_config.json", "text": w / "text" / "model_config.json"}
        common = ["--vqgan", vq, "--shrink", shrink, "--image-size", s.image_size, "--n-scales", s.n_scales,
                  "--preset", "small", "--dim", s.dim, "--heads", s.heads, "--dim-head", s.dim_head,
                  "--depth", s.depth, "--decoder-depth", s.decoder_depth, "--top-dim", s.dim, "--top-heads", s.heads,
                  "--top-dim-head", s.dim_head, "--top-depth", s.top_depth, "--overwrite"]
        if not (self._done(configs["class"]) and self._done(configs["text"])):
            self._run("configs", [
                module_command("training.model_config", *common, "--conditioning", "class", "--data", single, "--name",
                        "imagebart-demo-shapes-class", "--out", configs["class"]),
                module_command("training.model_config", *common, "--conditioning", "text", "--data", shapes,
                        "--text-length", s.text_length,
                        "--text-vocab-from-data", "--name", "imagebart-demo-shapes-text", "--out", configs["text"]),
            ])
        codes = {"class": w / "codes_single.safetensors", "text": w / "codes.safetensors"}
        data = {"class": single, "text": shapes}
        todo = [kind for kind in configs if not self._done(codes[kind])]
        if todo:
            self._run("codes", [module_command("training.precompute_codes", "--config", configs[kind], "--data", data[kind],
                                        "--out", codes[kind], "--overwrite") for kind in todo])
        jobs = []
        for kind, cfg in configs.items():
            for scale in range(1, s.n_scales + 1):
                out = w / kind / f"scale{scale}"
                if self._done(out / f"scale{scale}.safetensors"):
                    continue
                jobs.append(module_command(
                    "training.train_scale", "--config", cfg, "--scale", scale, "--codes", codes[kind], "--out", out,
                    "--max-steps", s.scale_steps, "--batch-size", s.scale_batch, "--lr", s.scale_lr,
                    "--warmup-steps", s.warmup_steps, "--cond-dropout", s.cond_dropout, "--ema-decay", s.ema_decay,
                    "--seed", s.seed + scale, "--threads", max(1, 2 // self.parallel), "--workers", 0,
                    "--no-progress", "--log-every", 200, "--sample-every", 0, "--ckpt-every", 500))
        if jobs:
            self._run("scales", jobs)
        outputs = {"class": self.models / CLASS_MODEL, "text": self.models / TEXT_MODEL}
        self._run("assemble", [module_command(
            "training.assemble", "--config", configs[kind], "--scales",
            *[w / kind / f"scale{i}" for i in range(1, s.n_scales + 1)], "--out", outputs[kind],
            "--store-dtype", "fp16", "--overwrite") for kind in configs])
        metrics = evaluate(outputs, {"class": single_val, "text": val}, s.image_size)
        return {"settings": dataclasses.asdict(s), "step_seconds": self.times, "metrics": metrics,
                "outputs": {k: v.name for k, v in outputs.items()}}


# -- evaluation ----------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(outputs: dict[str, Path], val_folders: dict[str, Path], image_size: int, seed: int = 0) -> dict:
    """PSNR of the VQGAN on held-out shapes, per-scale validation losses, sampling time."""
    import imagebart_core as ib

    from .data import ImageFolder

    results = {}
    for kind, path in outputs.items():
        ds = ImageFolder(val_folders[kind], image_size)
        images = torch.stack([ds[i]["image"] for i in range(len(ds))])  # [N, 3, H, W] in [-1, 1]
        x = (images + 1) / 2
        model = ib.load_model(path)
        codes = model.encode(x)
        recon = model.decode(codes)
        mse = ((recon - x) ** 2).mean(dim=(1, 2, 3))
        psnr = float((10 * torch.log10(1.0 / mse.clamp_min(1e-12))).mean())
        k = model.config.vocab_size
        x1 = codes.tokens.reshape(codes.batch_size, -1)
        labels = torch.tensor([ds.labels[i] for i in range(len(ds))])
        captions = [ds.caption(i) for i in range(len(ds))]
        cond = model.class_condition(labels.tolist()) if kind == "class" else model.text_condition(captions)
        scales = scale_validation_losses(model, x1, cond, seed)
        t0 = time.perf_counter()
        model.sample(4, cond=cond.select([0, 1, 2, 3]), seed=0)
        sample_s = time.perf_counter() - t0
        results[kind] = {"vqgan_psnr_db": round(psnr, 2), "val_images": len(ds), "K": k, "scales": scales,
                         "sample_4_images_s": round(sample_s, 2), "file_mb": round(path.stat().st_size / 2**20, 2)}
        if kind == "class":
            results[kind]["class_samples_detected"] = class_detection_rate(model)
    return results


@torch.no_grad()
def scale_validation_losses(model, x1: torch.Tensor, cond, seed: int = 0) -> dict[str, dict]:
    """Each scale's loss on clean codes ``x1`` (int64 ``[N, n_tokens]``, shrunk ids) under condition ``cond``, next
    to the loss of a uniform model (all logits equal) and log K; the chain's noise is drawn with ``seed + scale``."""
    from .scale_loss import StepNoise, make_targets, scale_loss

    k = model.config.vocab_size
    scales = {}
    for scale in range(1, model.n_scales + 1):
        noise = StepNoise.draw(torch.Generator().manual_seed(seed + scale), x1.shape[0], x1.shape[1], k)
        t = make_targets(model.diffusion, scale, x1, noise)
        logits = model.scale_logits(scale, t.x_in, t.target, cond)
        loss, _ = scale_loss(logits, t, scale)
        uniform, _ = scale_loss(torch.zeros_like(logits), t, scale)
        scales[str(scale)] = {"loss": round(float(loss), 4), "uniform_model": round(float(uniform), 4),
                              "log_K": round(math.log(k), 4),
                              "kind": "cross-entropy" if scale == 1 else "KL to the posterior"}
    return scales


@torch.no_grad()
def class_detection_rate(model, per_class: int = 10, guidance: float = 2.0, seed: int = 0) -> dict:
    """Share of class-conditional samples whose largest detected shape is the asked one, per class."""
    from .shape_detector import detect_shapes

    names = model.config.conditioning.class_names
    labels = [name for name in names for _ in range(per_class)]
    images = model.decode(model.sample(len(labels), cond=model.class_condition(labels), seed=seed,
                                       guidance=guidance))
    hits = {name: 0 for name in names}
    for name, image in zip(labels, images):
        found = detect_shapes(image)  # largest first
        hits[name] += bool(found) and found[0].kind == name
    return {"overall": round(sum(hits.values()) / len(labels), 3), "per_class": hits, "samples_per_class": per_class,
            "guidance": guidance, "seed": seed}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.demo_recipe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/demo", help="folder for data, runs and checkpoints (default runs/demo)")
    p.add_argument("--models", default="models", help="where the model files go (default: the pack's models/)")
    p.add_argument("--parallel", type=int, default=2, help="scale trainings run at once (default 2)")
    p.add_argument("--force", action="store_true", help="redo every step")
    p.add_argument("--quick", action="store_true", help="a few steps per stage (to check the recipe runs)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = DemoSettings()
    if a.quick:
        settings = dataclasses.replace(settings, train_images=200, val_images=16, vq_steps=5, scale_steps=5,
                                       warmup_steps=2)
    t0 = time.perf_counter()
    report = Recipe(Path(a.work), Path(a.models), settings, a.force, a.parallel).run()
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    models = Path(a.models)
    (models / "demo_recipe.json").write_text(json.dumps(
        {k: report[k] for k in ("settings", "step_seconds", "total_seconds", "outputs")}, indent=2) + "\n")
    (models / "demo_metrics.json").write_text(json.dumps(report["metrics"], indent=2) + "\n")
    print(json.dumps(report, indent=2))  # noqa: T201 (CLI summary)


if __name__ == "__main__":
    main()
