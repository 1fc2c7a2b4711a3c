"""Two processes under torchrun (gloo, CPU) train together and match one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.files import load_scale

ROOT = Path(__file__).resolve().parents[1]


def _torchrun(args: list[str], nproc: int, tmp: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
           "-m", "training.train_scale", *args]
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def _single(args: list[str]) -> None:
    from training.train_scale import run

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(args)
    finally:
        torch.set_num_threads(n)


@pytest.mark.parametrize("scale", [2])
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, scale):
    from _training_fixtures import scale_args, tiny_scale_setup

    cfg, codes = tiny_scale_setup(tmp_path, n_items=16)
    steps = 4
    # global batch 8: 2 processes x 2 items x 2 accumulation steps  vs  1 process x 4 items x 2
    _torchrun(scale_args(cfg, codes, tmp_path / "ddp", scale, steps, "--batch-size", "2", "--accumulate", "2",
                         "--cond-dropout", "0.2", "--log-every", "2"), 2, tmp_path)
    _single(scale_args(cfg, codes, tmp_path / "one", scale, steps, "--batch-size", "4", "--accumulate", "2",
                       "--cond-dropout", "0.2", "--log-every", "2"))
    a, s_a, _, info_a = load_scale(tmp_path / "ddp" / f"scale{scale}.safetensors")
    b, s_b, _, info_b = load_scale(tmp_path / "one" / f"scale{scale}.safetensors")
    assert s_a == s_b == scale and info_a["step"] == info_b["step"] == steps
    from training.files import load_model_config
    from training.train_scale import ScaleModel

    torch.manual_seed(scale)  # the trainer's initialisation for --seed 0
    init = ScaleModel(load_model_config(cfg), scale).net.state_dict()
    moved = 0.0
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), f"{k}: max diff {(a[k] - b[k]).abs().max()}"
        moved = max(moved, float((b[k] - init[k]).abs().max()))
    assert moved > 1e-3  # the weights did train
    log_a = (tmp_path / "ddp" / "log.csv").read_text().splitlines()
    log_b = (tmp_path / "one" / "log.csv").read_text().splitlines()
    assert len(log_a) == len(log_b) == 3  # header + 2 rows, written by rank 0 only
    for ra, rb in zip(log_a[1:], log_b[1:]):
        la, lb = ra.split(","), rb.split(",")
        assert la[:3] == lb[:3]  # step, epoch, lr
        for x, y in zip(la[3:6], lb[3:6]):  # ce, kl, loss (averaged over processes)
            assert float(x) == pytest.approx(float(y), rel=1e-4)
    assert not list((tmp_path / "ddp" / "checkpoints").glob(".*.tmp"))  # atomic writes leave nothing behind


def test_vqgan_under_torchrun_matches_one_process_before_the_gan_starts(tmp_path):
    """The discriminator's batch norm and the adaptive GAN weight are per process (as in the original), so the
    exact match is checked on the reconstruction + codebook phase."""
    from training.files import load_vqgan
    from training.make_shapes import write_shapes
    from training.train_vqgan import run

    data = write_shapes(tmp_path / "data", 8, 16)
    args = ["--data", str(data), "--image-size", "16", "--preset", "tiny", "--no-perceptual", "--disc-start", "100", "--disc-layers", "1",
            "--max-steps", "3", "--lr", "1e-3", "--workers", "0", "--sample-every", "0", "--no-progress",
            "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                           "-m", "training.train_vqgan", *args, "--batch-size", "2", "--out", str(tmp_path / "ddp")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("VQGAN trained to step 3") == 1  # one summary, from rank 0
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(args + ["--batch-size", "4", "--out", str(tmp_path / "one")])
    finally:
        torch.set_num_threads(n)
    from imagebart_core.vqgan import VQGAN
    from training.train_vqgan import VQGAN_PRESETS

    a = load_vqgan(tmp_path / "ddp" / "vqgan.safetensors").state_dict()
    b = load_vqgan(tmp_path / "one" / "vqgan.safetensors").state_dict()
    torch.manual_seed(0)  # the trainer's initialisation for --seed 0
    init = VQGAN(VQGAN_PRESETS["tiny"]).state_dict()
    # Adam turns float-rounding differences of near-zero gradients into visible ones, so compare the two runs'
    # difference with how far training moved the weights
    diff = sum(float(((a[k].float() - b[k].float()) ** 2).sum()) for k in a) ** 0.5
    moved = sum(float(((b[k].float() - init[k].float()) ** 2).sum()) for k in a) ** 0.5
    assert moved > 1e-2 and diff < 0.02 * moved, (diff, moved)
