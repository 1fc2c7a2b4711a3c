"""Stopping after N steps and resuming gives bit-exactly the weights of an uninterrupted N+M-step run (CPU)."""

from __future__ import annotations

import pytest
import torch

from training.checkpoints import CHECKPOINT_NAME, load_checkpoint
from training.data_order import batch_plan
from training.distributed import DistEnv


@pytest.fixture(autouse=True)
def _one_thread():
    from _training_fixtures import one_thread

    yield from one_thread()


def _assert_same(a, b, path=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{path} keys differ"
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a} != {b}"


@pytest.mark.parametrize("scale", [2, 3])
def test_scale_resume_is_bit_exact(tmp_path, scale):
    from _training_fixtures import scale_args, tiny_scale_setup

    from training.train_scale import run

    cfg, codes = tiny_scale_setup(tmp_path, n_items=12)
    extra = ("--accumulate", "2", "--batch-size", "2", "--kl-weight", "0.5", "--cond-dropout", "0.3")
    straight = tmp_path / "straight"
    run(scale_args(cfg, codes, straight, scale, 7, *extra))  # 12 items / 4 per step: crosses two epochs
    split = tmp_path / "split"
    first = run(scale_args(cfg, codes, split, scale, 7, "--stop-after", "3", *extra))
    assert first["step"] == 3
    assert load_checkpoint(split / "checkpoints" / CHECKPOINT_NAME)["step"] == 3
    second = run(scale_args(cfg, codes, split, scale, 7, *extra))
    assert second["step"] == 7
    a = load_checkpoint(straight / "checkpoints" / CHECKPOINT_NAME)
    b = load_checkpoint(split / "checkpoints" / CHECKPOINT_NAME)
    for key in ("model", "optimizer", "ema", "step"):
        _assert_same(a[key], b[key], key)
    from training.files import load_scale

    _assert_same(load_scale(split / f"scale{scale}.safetensors")[0], load_scale(straight / f"scale{scale}.safetensors")[0])
    rows = (split / "log.csv").read_text().strip().splitlines()
    assert rows[0].startswith("step,epoch,lr,ce,kl,loss") and len(rows) == 1 + 7


@pytest.mark.parametrize("extra", [[], ["--restart-dead-codes", "2"]], ids=["plain", "dead-code-restarts"])
def test_vqgan_resume_is_bit_exact(tmp_path, extra):
    from training.make_shapes import write_shapes
    from training.train_vqgan import run

    data = write_shapes(tmp_path / "data", 8, 16)
    common = ["--data", str(data), "--image-size", "16", "--preset", "tiny", "--no-perceptual", "--disc-start", "2",
              "--disc-layers", "1", "--batch-size", "2", "--lr", "1e-3", "--workers", "0", "--sample-every", "0",
              "--no-progress", "--device", "cpu", "--max-steps", "5", "--ema-decay", "0.9", "--random-crop",
              "--hflip", *extra]
    run(common + ["--out", str(tmp_path / "a")])
    run(common + ["--out", str(tmp_path / "b"), "--stop-after", "3"])
    run(common + ["--out", str(tmp_path / "b")])
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / CHECKPOINT_NAME)
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / CHECKPOINT_NAME)
    for key in ("model", "disc", "opt_g", "opt_d", "ema", "step", "dead_code_restarts"):
        _assert_same(a[key], b[key], key)
    if extra:  # codes were restarted at steps 2 and 4, across the stop at step 3
        assert a["dead_code_restarts"]["total_restarted"] > 0


def test_resume_never_refuses_an_existing_run(tmp_path):
    from _training_fixtures import scale_args, tiny_scale_setup

    from training.train_scale import run

    cfg, codes = tiny_scale_setup(tmp_path, n_items=8)
    run(scale_args(cfg, codes, tmp_path / "r", 1, 1))
    with pytest.raises(SystemExit, match="already holds a run"):
        run(scale_args(cfg, codes, tmp_path / "r", 1, 2, "--resume", "never"))
    with pytest.raises(SystemExit, match="not a checkpoint of scale 2"):
        run(scale_args(cfg, codes, tmp_path / "r", 2, 2))


def test_batch_plan_splits_the_global_batch_over_processes():
    n, batch, accum, world = 20, 2, 2, 2
    for step in range(6):  # spans epochs (20 // 8 = 2 steps per epoch)
        single = batch_plan(n, step, DistEnv(0, 1), batch * world, accum, seed=4)
        parts = [batch_plan(n, step, DistEnv(r, world), batch, accum, seed=4) for r in range(world)]
        one = {(row, i) for rows, idx in zip(single.rows, single.micro) for row, i in zip(rows, idx)}
        many = {(row, i) for p in parts for rows, idx in zip(p.rows, p.micro) for row, i in zip(rows, idx)}
        assert one == many and len(one) == world * batch * accum


def test_too_little_data_is_a_clear_error(tmp_path):
    from _training_fixtures import scale_args, tiny_scale_setup

    from training.train_scale import run

    cfg, codes = tiny_scale_setup(tmp_path, n_items=3)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        run(scale_args(cfg, codes, tmp_path / "r", 1, 1))


def test_codes_that_do_not_fit_the_config_are_refused(tmp_path):
    from _training_fixtures import scale_args, tiny_scale_setup

    from training.files import save_model_config
    from training.model_config import build_model_config
    from training.train_scale import run

    cfg, codes = tiny_scale_setup(tmp_path, n_items=8)
    from _training_fixtures import TINY_VQ

    big = build_model_config(vqgan=TINY_VQ, vocab_size=12, image_size=32, n_scales=3, size="tiny",
                             conditioning="class", class_names=["a", "b", "c"])
    other = save_model_config(big, tmp_path / "big.json")
    with pytest.raises(SystemExit, match="grid"):
        run(scale_args(other, codes, tmp_path / "r", 1, 1))
    with pytest.raises(ValueError, match="--scale must be in 1..3"):
        run(scale_args(cfg, codes, tmp_path / "r2", 4, 1))
