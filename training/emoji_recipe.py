"""A recipe for colour-emoji models: data, VQGAN, shrink, two chains, assembly and evaluation in one command.

    python -m training.emoji_recipe --work runs/emoji --models runs/emoji/models
    python -m training.emoji_recipe --work runs/emoji-smoke --models runs/emoji-smoke/models --smoke

It renders the Noto Color Emoji data set (``training.make_emoji``: 64x64, the nine Unicode emoji groups as
classes, CLDR names as captions, a fixed held-out split), trains the VQGAN on the training split with held-out
PSNR / colour error / codebook usage in its log (squared error + codebook loss; no LPIPS, whose VGG weights cannot be
downloaded offline, and no GAN, to keep it fast on a CPU), shrinks the codebook, and trains two chains on the
same codes: one conditioned on the group (class), one on the caption (text), both with condition dropout so
they also sample unconditionally and support guidance. Each chain is assembled into one model file
(transformers in fp16) and evaluated (training.emoji_eval): VQGAN PSNR, colour error and codebook usage on the
held-out split, each scale's validation loss next to a uniform model, the share of group-model samples that
a group classifier trained by the recipe (training.emoji_classifier) assigns to the asked group, and how often
a text-model sample for a held-in caption is nearer to its own emoji than to 9 random others.

The sizes (8x8 codes, a factor-8 VQGAN with 16 base channels and a squared-error loss, two scales of width
128), the group-balanced data, the VQGAN's optimiser and bf16 training (on a CPU with bf16 instructions; fp32
elsewhere, with a warning) were chosen from measured step times and held-out A/B runs: docs/training.md, "The
colour-emoji recipe".
The bundled ``models/imagebart-emoji-*.safetensors`` are this command's output (``training.compare_models``
compares a re-run's files with them). ``--evaluate-only`` re-measures existing files without training.

Every step is resumable: a step whose output exists is skipped (``--force`` redoes all). Settings, seeds and
the wall time of each step go to ``<models>/emoji_recipe.json``, the metrics to ``<models>/emoji_metrics.json``.
``--smoke`` runs the whole pipeline at toy sizes (a handful of emoji, a few steps per stage) to check that it
works; its files say nothing about quality.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from imagebart_core.fileio import atomic_write_text

from .demo_recipe import Recipe, module_command, scale_validation_losses

log = logging.getLogger("training.emoji_recipe")

CLASS_MODEL = "imagebart-emoji-class.safetensors"
TEXT_MODEL = "imagebart-emoji-text.safetensors"
CLASSIFIER = "group_classifier.safetensors"
GUIDANCE_SWEEP = (1.0, 2.0, 3.0, 5.0)  # the group model's share is also measured at these (besides class_guidance)


@dataclass
class EmojiRecipeSettings:
    """Everything that decides the model files."""

    image_size: int = 64
    variants: int = 4  # training pictures per emoji (the first canonical, the others augmented); unused with
    group_images: int | None = 1400  # ... about this many training pictures per group (balanced groups)
    heldout_fraction: float = 0.1
    data_seed: int = 0
    per_group: int | None = None  # all emoji (smoke runs take a few per group)
    # VQGAN: factor 8 (8x8 codes at 64 px)
    vq_base_channels: int = 16
    vq_channel_mult: tuple[int, ...] = (1, 2, 2, 4)
    vq_z_channels: int = 64
    vq_embed_dim: int = 64
    vq_n_embed: int = 1024
    vq_restart_every: int = 100
    vq_steps: int = 3000
    vq_batch: int = 16
    vq_lr: float = 2e-3
    vq_betas: tuple[float, float] = (0.9, 0.99)  # Adam's; the trainer's (0.5, 0.9) are for GAN training
    vq_warmup: int = 100
    vq_val_every: int = 1000
    vq_rec_loss: str = "l2"  # squared error: +1.1 dB held-out PSNR at step 400 (docs/training.md)
    vq_threads: int = 1  # one thread per job (2 threads stalled when another job shared the 2 cores)
    vq_precision: str = "bf16"  # autocast on a CPU with bf16 instructions (1.7x faster steps); else fp32
    # the group classifier (training.emoji_classifier), the yardstick of the samples
    clf_width: int = 32
    clf_steps: int = 1500
    clf_batch: int = 64
    clf_lr: float = 2e-3
    # the chains
    n_scales: int = 2
    dim: int = 128
    heads: int = 4
    dim_head: int = 32
    depth: int = 2
    decoder_depth: int = 2
    top_depth: int = 4
    text_length: int = 24
    # training steps per scale (scale 1 first), per model, from a 7000-step run's training loss (mean of each
    # 1000 steps; docs/training.md, "The colour-emoji recipe"). Scale 1 writes the clean codes from the
    # half-noised level: the class model's flattened over its last 3000 steps (2.79, 2.67, 2.67), the text
    # model's still fell 0.13-0.41 per 1000. The top scale draws the half-noised level from noise (a KL): both
    # still fell 0.02-0.06 per 1000.
    class_scale_steps: tuple[int, ...] = (7000, 9000)
    text_scale_steps: tuple[int, ...] = (11000, 6000)
    scale_batch: int = 24
    scale_lr: float = 1e-3
    warmup_steps: int = 100
    cond_dropout: float = 0.15
    scale_precision: str = "bf16"  # as vq_precision (1.4-1.6x faster steps on a CPU with bf16 instructions)
    ema_decay: float = 0.998
    # evaluation (training.emoji_eval)
    # the demo's sampling settings (tools.demo, the class / text sampling workflows), chosen on samples with
    # seeds 0 and 1 (docs/training.md); the evaluation draws with seed ``seed``
    class_guidance: float = 5.0
    text_guidance: float = 2.0
    text_top_k: int | None = 4  # the text model samples from its 4 most likely codes at every scale
    eval_per_group: int = 32
    eval_captions: int = 300
    eval_distractors: int = 9
    eval_threads: int = 2
    seed: int = 0


SMOKE = dict(variants=2, group_images=6, heldout_fraction=0.5, per_group=4, vq_n_embed=64, vq_steps=3, vq_batch=4, vq_warmup=1,
             vq_val_every=0, vq_restart_every=2, n_scales=2, dim=32, heads=2, dim_head=16, depth=1, decoder_depth=1,
             top_depth=1, text_length=8, class_scale_steps=(3, 2), text_scale_steps=(2, 3), scale_batch=4, warmup_steps=1,
             clf_width=8, clf_steps=3, clf_batch=4, eval_per_group=1, eval_captions=4, eval_distractors=3)


def scale_steps(s: EmojiRecipeSettings, kind: str) -> tuple[int, ...]:
    """The training steps of each scale of the ``kind`` ("class" or "text") model, scale 1 first."""
    steps = tuple(s.class_scale_steps if kind == "class" else s.text_scale_steps)
    if len(steps) != s.n_scales or any(int(n) < 1 for n in steps):
        raise SystemExit(f"{kind}_scale_steps must give n_scales = {s.n_scales} positive step counts, got {steps}")
    return steps


class EmojiRecipe(Recipe):
    """The steps of the recipe (``Recipe`` of training.demo_recipe gives the command runner and the timing)."""

    def run(self) -> dict:
        s, w = self.s, self.work
        precision = {"vqgan": self.precision(s.vq_precision), "scales": self.precision(s.scale_precision)}
        scale_steps(s, "class"), scale_steps(s, "text")  # refuse bad step lists before any work
        w.mkdir(parents=True, exist_ok=True)
        self.models.mkdir(parents=True, exist_ok=True)
        data = w / "emoji"
        train, heldout = data / "train", data / "heldout"
        if not self._done(data / "dataset.json"):
            extra = ["--per-group", s.per_group] if s.per_group else []
            extra += ["--group-images", s.group_images] if s.group_images else []
            self._run("data", [module_command("training.make_emoji", "--out", data, "--size", s.image_size,
                                       "--variants", s.variants, "--heldout-fraction", s.heldout_fraction,
                                       "--seed", s.data_seed, "--overwrite", *extra)])
        summary = json.loads((data / "dataset.json").read_text(encoding="utf-8"))
        if summary["emoji"]["heldout"] == 0:
            raise SystemExit("the held-out split is empty; raise heldout_fraction or use more emoji")
        vq_cfg = w / "vqgan_config.json"
        atomic_write_text(vq_cfg, json.dumps({
            "base_channels": s.vq_base_channels, "channel_mult": list(s.vq_channel_mult), "num_res_blocks": 1,
            "attn_resolutions": [], "resolution": s.image_size, "z_channels": s.vq_z_channels,
            "embed_dim": s.vq_embed_dim, "n_embed": s.vq_n_embed,
        }))
        vq = w / "vqgan" / "vqgan.safetensors"
        clf = w / "classifier" / CLASSIFIER
        jobs = []
        if not self._done(vq):
            jobs.append(module_command(
                "training.train_vqgan", "--data", train, "--val-data", heldout, "--image-size", s.image_size,
                "--vqgan-config", vq_cfg, "--no-perceptual", "--disc-weight", 0, "--rec-loss", s.vq_rec_loss,
                "--max-steps", s.vq_steps, "--batch-size", s.vq_batch, "--lr", s.vq_lr, "--warmup-steps", s.vq_warmup,
                "--beta1", s.vq_betas[0], "--beta2", s.vq_betas[1],
                "--restart-dead-codes", s.vq_restart_every, "--val-every", s.vq_val_every, "--out", w / "vqgan",
                "--seed", s.seed, "--no-progress", "--threads", s.vq_threads, "--workers", 0, "--log-every", 50,
                "--sample-every", 1000, "--ckpt-every", 500, "--precision", precision["vqgan"]))
        if not self._done(clf):
            jobs.append(module_command(
                "training.emoji_classifier", "--data", train, "--heldout", heldout, "--out", clf, "--image-size",
                s.image_size, "--width", s.clf_width, "--steps", s.clf_steps, "--batch", s.clf_batch, "--lr",
                s.clf_lr, "--seed", s.seed, "--threads", 1, "--overwrite"))
        if jobs:
            self._run("vqgan+classifier", jobs)
        shrink = w / "shrink.npy"
        if not self._done(shrink):
            self._run("shrink", [module_command("training.shrink_codebook", "--vqgan", vq, "--data", train,
                                         "--image-size", s.image_size, "--out", shrink, "--overwrite")])
        configs = {"class": w / "class" / "model_config.json", "text": w / "text" / "model_config.json"}
        common = ["--vqgan", vq, "--shrink", shrink, "--image-size", s.image_size, "--n-scales", s.n_scales,
                  "--preset", "small", "--dim", s.dim, "--heads", s.heads, "--dim-head", s.dim_head,
                  "--depth", s.depth, "--decoder-depth", s.decoder_depth, "--top-dim", s.dim, "--top-heads", s.heads,
                  "--top-dim-head", s.dim_head, "--top-depth", s.top_depth, "--overwrite"]
        if not (self._done(configs["class"]) and self._done(configs["text"])):
            self._run("configs", [
                module_command("training.model_config", *common, "--conditioning", "class", "--data", train, "--name",
                        "imagebart-emoji-class", "--out", configs["class"]),
                module_command("training.model_config", *common, "--conditioning", "text", "--data", train,
                        "--text-length", s.text_length, "--text-vocab-from-data", "--name", "imagebart-emoji-text",
                        "--out", configs["text"]),
            ])
        codes = w / "codes.safetensors"  # one VQGAN, one shrink list: the same codes serve both chains
        if not self._done(codes):
            self._run("codes", [module_command("training.precompute_codes", "--config", configs["class"], "--data", train,
                                        "--out", codes, "--overwrite")])
        jobs = []
        for kind, cfg, scale in sorted(((k, c, i) for k, c in configs.items() for i in range(1, s.n_scales + 1)),
                                       key=lambda job: -scale_steps(s, job[0])[job[2] - 1]):  # longest first
            out = w / kind / f"scale{scale}"
            if self._done(out / f"scale{scale}.safetensors"):
                continue
            jobs.append(module_command(
                "training.train_scale", "--config", cfg, "--scale", scale, "--codes", codes, "--out", out,
                "--max-steps", scale_steps(s, kind)[scale - 1], "--batch-size", s.scale_batch, "--lr", s.scale_lr,
                "--warmup-steps", s.warmup_steps, "--cond-dropout", s.cond_dropout, "--ema-decay", s.ema_decay,
                "--seed", s.seed + scale, "--threads", max(1, 2 // self.parallel), "--workers", 0,
                "--no-progress", "--log-every", 200, "--sample-every", 0, "--ckpt-every", 500,
                "--precision", precision["scales"]))
        if jobs:
            self._run("scales", jobs)
        outputs = self.outputs()
        self._run("assemble", [module_command(
            "training.assemble", "--config", configs[kind], "--scales",
            *[w / kind / f"scale{i}" for i in range(1, s.n_scales + 1)], "--out", outputs[kind],
            "--store-dtype", "fp16", "--overwrite") for kind in configs])
        metrics = self.evaluate()
        return {"settings": {**dataclasses.asdict(s), "precision_used": precision},
                "step_seconds": self.times,
                "seconds_per_training_step": {
                    "vqgan+classifier": round(self.times.get("vqgan+classifier", 0.0) / s.vq_steps, 3),
                    "scales": round(self.times.get("scales", 0.0) * self.parallel
                                    / sum(sum(scale_steps(s, k)) for k in configs), 3)},
                "metrics": metrics, "data": {k: summary[k] for k in ("emoji", "images", "groups", "training_variants", "sources")
                         if k in summary},
                "outputs": {k: v.name for k, v in outputs.items()}}

    @staticmethod
    def precision(wanted: str) -> str:
        """A training precision: ``wanted``, or fp32 for bf16 on a CPU without bf16 instructions (with a warning:
        the run is slower and its files differ from the bundled ones)."""
        from .optim import cpu_bf16_supported

        if wanted == "bf16" and not cpu_bf16_supported():
            log.warning("this CPU has no bf16 instructions: training runs in fp32 (1.4-1.7x slower per step; "
                        "the model files will differ from the bundled ones)")
            return "fp32"
        return wanted

    def outputs(self) -> dict[str, Path]:
        return {"class": self.models / CLASS_MODEL, "text": self.models / TEXT_MODEL}

    def evaluate(self) -> dict:
        """The metrics of the model files in ``models`` (timed as the step ``evaluate``); needs the work
        folder's data and classifier, nothing else (``--evaluate-only``)."""
        s, w = self.s, self.work
        needed = [*self.outputs().values(), w / "classifier" / CLASSIFIER, w / "emoji" / "emoji.jsonl"]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            raise SystemExit(f"cannot evaluate: missing {', '.join(missing)} (run the recipe first, with the same "
                             "--work and --models)")
        t0 = time.perf_counter()
        threads = torch.get_num_threads()
        torch.set_num_threads(s.eval_threads)
        try:
            metrics = evaluate(self.outputs(), w / "emoji", w / "classifier" / CLASSIFIER, s)
        finally:
            torch.set_num_threads(threads)
        self.times["evaluate"] = round(time.perf_counter() - t0, 1)
        return metrics


@torch.no_grad()
def evaluate(outputs: dict[str, Path], emoji_root: Path, classifier: Path, s: EmojiRecipeSettings) -> dict:
    """On the held-out split: the VQGAN's reconstruction through the model's shrunk codebook (PSNR, colour
    error) and its full-codebook usage; the group classifier's own held-out accuracy; per model each scale's
    validation loss next to a uniform model and the time to sample 4 images; the group model's samples assigned
    to the asked group and the text model's caption retrieval (training.emoji_eval), at the demo's sampling
    settings (``s.class_guidance``; ``s.text_guidance`` and ``s.text_top_k``)."""
    import imagebart_core as ib

    from .data import ImageFolder
    from .emoji_classifier import accuracy, load_classifier
    from .emoji_eval import caption_retrieval, group_sample_share
    from .vqgan_metrics import evaluate_vqgan, reconstruction_errors

    ds = ImageFolder(emoji_root / "heldout", s.image_size)
    images = torch.stack([ds[i]["image"] for i in range(len(ds))])  # [N, 3, H, W] in [-1, 1]
    clf, clf_info = load_classifier(classifier)
    results: dict = {"goals": {"vqgan_psnr_db": ">= 25", "class_samples_in_asked_group": ">= 0.70",
                               "text_samples_nearest_own_emoji": ">= 0.70"},
                     "classifier": {"heldout": clf_info["heldout"], "settings": clf_info["settings"],
                                    "note": "trained by the recipe on the training split with group-balanced "
                                    "batches; accuracy on the held-out emoji (canonical pictures)"}}
    for kind, path in outputs.items():
        model = ib.load_model(path)
        codes = model.encode((images + 1) / 2)
        if "vqgan" not in results:
            recon = model.decode(codes) * 2 - 1  # [N, 3, H, W] in [-1, 1]
            err = reconstruction_errors(images, recon)
            results["vqgan"] = {"psnr_db": round(float(err["psnr"].mean()), 2),
                                "colour_err": round(float(err["colour_err"].mean()), 2),
                                "mae": round(float(err["mae"].mean()), 2), "K": model.config.vocab_size,
                                "full_codebook": evaluate_vqgan(model.vqgan, ds), "heldout_images": len(ds)}
            labels = torch.tensor(ds.labels)
            on_recon = accuracy(clf, (recon + 1) / 2, labels)
            results["classifier"]["heldout_through_vqgan"] = {
                "accuracy": on_recon["accuracy"], "balanced_accuracy": on_recon["balanced_accuracy"],
                "note": "the same held-out pictures after the VQGAN (encode, shrunk codebook, decode)"}
        x1 = codes.tokens.reshape(codes.batch_size, -1)
        if kind == "class":
            cond = model.class_condition([ds.labels[i] for i in range(len(ds))])
        else:
            cond = model.text_condition([ds.caption(i) for i in range(len(ds))])
        guidance, top_k = (s.class_guidance, None) if kind == "class" else (s.text_guidance, s.text_top_k)
        t0 = time.perf_counter()
        model.sample(4, cond=cond.select([0, 1, 2, 3]), seed=s.seed, guidance=guidance, top_k=top_k)
        results[kind] = {"scales": scale_validation_losses(model, x1, cond, s.seed),
                         "sample_4_images_s": round(time.perf_counter() - t0, 2),
                         "file_mb": round(path.stat().st_size / 2**20, 2)}
        if kind == "class":
            results[kind]["samples_in_asked_group"] = group_sample_share(
                model, clf, s.eval_per_group, guidance, s.seed)
            results[kind]["share_by_guidance"] = {str(g): group_sample_share(
                model, clf, s.eval_per_group, g, s.seed)["share"] for g in GUIDANCE_SWEEP}
        else:
            results[kind]["samples_nearest_own_emoji"] = caption_retrieval(
                model, clf, emoji_root, s.eval_captions, s.eval_distractors, guidance, s.seed, top_k)
    return results


EVALUATION_SETTINGS = ("class_guidance", "text_guidance", "text_top_k", "eval_per_group", "eval_captions",
                       "eval_distractors", "eval_threads")  # settings that change the metrics, not the model files


def check_training_settings(record_path: Path, s: EmojiRecipeSettings) -> dict:
    """The record at ``record_path``, after checking that every setting that decides the model files equals
    ``s``'s (SystemExit naming those that differ: the files are not this recipe's)."""
    record = json.loads(record_path.read_text(encoding="utf-8"))
    now = json.loads(json.dumps(dataclasses.asdict(s)))
    other = [k for k in now if k not in EVALUATION_SETTINGS and record["settings"].get(k) != now[k]]
    if other:
        raise SystemExit(f"{record_path} was written with other training settings ({', '.join(other)}): its model "
                         "files are not this recipe's; retrain instead of re-evaluating")
    return record


def record_evaluation(record_path: Path, s: EmojiRecipeSettings, seconds: float) -> dict | None:
    """After ``--evaluate-only``: bring the evaluation settings in the training run's record (``emoji_recipe.json``)
    up to ``s`` and list the change under ``evaluation_reruns`` (date, changed settings as [before, after],
    seconds), so that the record keeps saying what the metrics file was measured with. Settings that decide the
    model files must equal the record's (else the files are not this recipe's: SystemExit). Returns the new
    record, or None when there is no record or nothing changed."""
    if not record_path.is_file():
        return None
    record = check_training_settings(record_path, s)
    now = json.loads(json.dumps(dataclasses.asdict(s)))
    recorded = record["settings"]
    changed = {k: [recorded.get(k), now[k]] for k in EVALUATION_SETTINGS if recorded.get(k) != now[k]}
    if not changed:
        return None
    recorded.update({k: now[k] for k in changed})
    record.setdefault("evaluation_reruns", []).append(
        {"date": time.strftime("%Y-%m-%d"), "changed": changed, "evaluate_seconds": seconds})
    atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
    return record


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m training.emoji_recipe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/emoji", help="folder for data, runs and checkpoints (default runs/emoji)")
    p.add_argument("--models", default="runs/emoji/models", help="where the model files and records go")
    p.add_argument("--parallel", type=int, default=2, help="scale trainings run at once (default 2)")
    p.add_argument("--force", action="store_true", help="redo every step")
    p.add_argument("--smoke", action="store_true", help="toy sizes and a few steps per stage (checks the recipe)")
    p.add_argument("--evaluate-only", action="store_true",
                   help="only re-measure the model files in --models (needs the data and classifier in --work; "
                   "rewrites emoji_metrics.json and the evaluation settings in emoji_recipe.json, trains nothing)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = EmojiRecipeSettings()
    if a.smoke:
        settings = dataclasses.replace(settings, **SMOKE)
    models = Path(a.models)
    recipe = EmojiRecipe(Path(a.work), models, settings, a.force, a.parallel)
    if a.evaluate_only:
        if (models / "emoji_recipe.json").is_file():
            check_training_settings(models / "emoji_recipe.json", settings)  # before anything is rewritten
        metrics = recipe.evaluate()
        atomic_write_text(models / "emoji_metrics.json", json.dumps(metrics, indent=2) + "\n")
        record_evaluation(models / "emoji_recipe.json", settings, recipe.times["evaluate"])
        print(json.dumps(metrics, indent=2))  # noqa: T201 (CLI summary)
        return {"metrics": metrics, "step_seconds": recipe.times}
    t0 = time.perf_counter()
    report = recipe.run()
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_text(models / "emoji_recipe.json", json.dumps(
        {k: report[k] for k in ("settings", "step_seconds", "seconds_per_training_step", "total_seconds", "outputs",
                                "data")}, indent=2) + "\n")
    atomic_write_text(models / "emoji_metrics.json", json.dumps(report["metrics"], indent=2) + "\n")
    print(json.dumps(report, indent=2))  # noqa: T201 (CLI summary)
    return report


if __name__ == "__main__":
    main()
