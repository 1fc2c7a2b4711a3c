"""The whole training pipeline, tiny, on CPU: procedural shapes -> VQGAN -> shrink -> model config -> codes ->
scales -> assemble -> ib.load_model -> sample and inpaint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import imagebart_core as ib

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    from _training_fixtures import one_thread

    yield from one_thread()


def _check_model(path: Path, conditioning: str, n_scales: int) -> None:
    model = ib.load_model(path)
    cfg = model.config
    assert cfg.n_scales == n_scales and cfg.grid == (4, 4) and cfg.conditioning.kind == conditioning
    if conditioning == "class":
        assert cfg.conditioning.class_names == ["circle", "cross", "diamond", "square", "triangle"]
        cond = model.class_condition(["circle", "square"])
    elif conditioning == "text":
        cond = model.text_condition(["a red circle", "a blue square"])
    else:
        cond = None
    codes = model.sample(2, cond=cond, seed=0, guidance=1.5 if cond is not None else 1.0)
    assert codes.level == 1 and codes.tokens.shape == (2, 4, 4)
    images = model.decode(codes)
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()
    again = model.sample(2, cond=cond, seed=0, guidance=1.5 if cond is not None else 1.0)
    assert torch.equal(codes.tokens, again.tokens)
    originals = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    enc = model.encode(originals)
    mask = ib.upper_half_mask(2, 16, 16)
    out = model.masked_refine(enc, mask, cond=cond, seed=1)
    assert torch.equal(out.tokens[:, 2:], enc.tokens[:, 2:])  # the kept half never changes
    if cond is not None:
        model.sample(1, cond=model.null_condition(1), seed=0)  # trained with condition dropout


def test_end_to_end_pipeline_in_process(tmp_path):
    from training import (
        assemble,
        make_shapes,
        model_config,
        precompute_codes,
        shrink_codebook,
        train_scale,
        train_vqgan,
    )

    data = tmp_path / "shapes"
    make_shapes.main(["--out", str(data), "--n", "24", "--size", "16"])
    vq = train_vqgan.run(["--data", str(data), "--image-size", "16", "--preset", "tiny", "--no-perceptual",
                          "--out", str(tmp_path / "vqgan"), "--max-steps", "4", "--batch-size", "4", "--lr", "2e-3",
                          "--disc-start", "2", "--disc-layers", "1", "--workers", "0", "--sample-every", "4",
                          "--no-progress", "--device", "cpu"])
    assert (tmp_path / "vqgan" / "samples" / "step_0000004.png").is_file()
    assert "l1" in (tmp_path / "vqgan" / "log.csv").read_text().splitlines()[0]
    shrink_codebook.main(["--vqgan", vq["weights"], "--data", str(data), "--image-size", "16",
                          "--out", str(tmp_path / "shrink.npy"), "--device", "cpu"])
    info = json.loads((tmp_path / "shrink.json").read_text())
    assert 1 <= info["K"] <= 48 and info["coverage"] == 1.0
    model_config.main(["--vqgan", vq["weights"], "--shrink", str(tmp_path / "shrink.npy"), "--image-size", "16",
                       "--n-scales", "2", "--preset", "tiny", "--conditioning", "class", "--data", str(data),
                       "--out", str(tmp_path / "model_config.json")])
    precompute_codes.main(["--config", str(tmp_path / "model_config.json"), "--data", str(data),
                           "--out", str(tmp_path / "codes.safetensors"), "--device", "cpu"])
    runs = []
    for s in (1, 2):
        out = tmp_path / f"scale{s}"
        train_scale.run(["--config", str(tmp_path / "model_config.json"), "--scale", str(s), "--codes",
                         str(tmp_path / "codes.safetensors"), "--out", str(out), "--max-steps", "3",
                         "--batch-size", "4", "--warmup-steps", "1", "--lr", "1e-3", "--sample-every", "3",
                         "--no-progress", "--device", "cpu"])
        assert (out / "samples" / "step_0000003.png").is_file()
        runs.append(str(out))
    path = assemble.assemble(tmp_path / "model_config.json", runs, tmp_path / "model.safetensors")
    _check_model(path, "class", 2)
    with pytest.raises(SystemExit, match="missing trained scales"):
        assemble.assemble(tmp_path / "model_config.json", runs[:1], tmp_path / "other.safetensors")


@pytest.mark.slow
def test_end_to_end_pipeline_through_the_command_line(tmp_path):
    """Every step as `python -m training.<name>`, text conditioning, LPIPS (random trunk), three scales, scale 3
    encoding the folder itself."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}

    def cli(*args: str) -> None:
        proc = subprocess.run([sys.executable, "-m", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"

    cli("training.make_shapes", "--out", "data", "--n", "32", "--size", "16")
    cli("training.train_vqgan", "--data", "data", "--image-size", "16", "--preset", "tiny", "--perceptual-trunk",
        "random", "--out", "vq", "--max-steps", "6", "--batch-size", "4", "--disc-start", "3", "--disc-layers", "1",
        "--workers", "1", "--device", "cpu", "--ckpt-every", "3")
    cli("training.shrink_codebook", "--vqgan", "vq/vqgan.safetensors", "--data", "data", "--image-size", "16",
        "--out", "shrink.npy")
    cli("training.model_config", "--vqgan", "vq/vqgan.safetensors", "--shrink", "shrink.npy", "--image-size", "16",
        "--n-scales", "3", "--preset", "tiny", "--conditioning", "text", "--text-length", "16", "--out", "m.json")
    cli("training.precompute_codes", "--config", "m.json", "--data", "data", "--out", "codes.safetensors")
    for s in ("1", "2"):
        cli("training.train_scale", "--config", "m.json", "--scale", s, "--codes", "codes.safetensors", "--out",
            f"s{s}", "--max-steps", "3", "--batch-size", "4", "--warmup-steps", "1", "--device", "cpu")
    cli("training.train_scale", "--config", "m.json", "--scale", "3", "--data", "data", "--out", "s3",
        "--max-steps", "3", "--batch-size", "4", "--warmup-steps", "1", "--device", "cpu", "--kl-weight", "0.5")
    assert (tmp_path / "s3" / "codes.safetensors").is_file()
    cli("training.assemble", "--config", "m.json", "--scales", "s1", "s2", "s3", "--out", "model.safetensors")
    _check_model(tmp_path / "model.safetensors", "text", 3)
