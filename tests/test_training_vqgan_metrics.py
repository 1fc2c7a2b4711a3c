"""Codebook usage, colour error and held-out evaluation of the VQGAN trainer; dead-code restarts."""

from __future__ import annotations

import json
import math

import pytest
import torch

from imagebart_core.config import VQGANConfig
from imagebart_core.vqgan import VQGAN
from training.codebook_restart import DeadCodeRestarter
from training.distributed import DistEnv
from training.vqgan_metrics import code_usage, evaluate_vqgan, reconstruction_errors

TINY = VQGANConfig(base_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(), resolution=16,
                   z_channels=8, embed_dim=8, n_embed=48)


@pytest.fixture(autouse=True)
def _one_thread():
    from _training_fixtures import one_thread

    yield from one_thread()


def test_code_usage_counts_codes_and_perplexity():
    uniform = code_usage(torch.tensor([0, 1, 2, 3] * 5), 16)
    assert uniform["codes_used"] == 4 and math.isclose(uniform["perplexity"], 4.0, rel_tol=1e-9)
    skewed = code_usage(torch.tensor([[5] * 97 + [6, 7, 8]]), 16)
    assert skewed["codes_used"] == 4 and 1.0 < skewed["perplexity"] < 1.3


def test_reconstruction_errors_separate_colour_shift_from_fine_detail():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    same = reconstruction_errors(x, x)
    assert (same["mae"] == 0).all() and (same["colour_err"] == 0).all() and (same["psnr"] > 90).all()
    shifted = reconstruction_errors(x.clamp(-0.8, 0.8), x.clamp(-0.8, 0.8) + 0.1)  # +0.05 on the 0..1 scale
    assert torch.allclose(shifted["psnr"], torch.full((2,), 10 * math.log10(1 / 0.05**2)), atol=1e-3)
    assert torch.allclose(shifted["mae"], torch.full((2,), 12.75), atol=1e-3)
    assert torch.allclose(shifted["colour_err"], shifted["mae"], atol=1e-3)  # a uniform shift is all colour
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 0.2 - 0.1  # [16, 16], mean 0
    detail = reconstruction_errors(torch.zeros(1, 3, 16, 16), checker.expand(1, 3, 16, 16))
    assert detail["mae"].item() > 10 and detail["colour_err"].item() < 1e-4  # detail error, right colours


def _folder(tmp_path, n=6):
    from training.data import ImageFolder
    from training.make_shapes import write_shapes

    return ImageFolder(write_shapes(tmp_path / "data", n, 16), 16)


def test_evaluate_vqgan_on_a_folder(tmp_path):
    torch.manual_seed(0)
    model = VQGAN(TINY).train()
    m = evaluate_vqgan(model, _folder(tmp_path), batch_size=4)
    assert model.training  # mode restored
    assert m["images"] == 6 and 1 <= m["codes_used"] <= 6 * 16 and 1 <= m["perplexity"] <= m["codes_used"] + 1e-9
    assert m["codebook_share"] == m["codes_used"] / 48 and 0 < m["psnr"] < 60 and m["mae"] > 0
    assert evaluate_vqgan(model, _folder(tmp_path / "x"), batch_size=4, max_images=2)["images"] == 2


def test_dead_code_restart_moves_unused_codes_onto_encoder_outputs():
    torch.manual_seed(0)
    model = VQGAN(TINY)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.quantize.embedding.weight.sum().backward()
    opt.step()  # creates the AdamW moments
    before = model.quantize.embedding.weight.detach().clone()
    r = DeadCodeRestarter(48, every=5, seed=3)
    r.observe(torch.tensor([[0, 1], [1, 2]]))
    assert not r.due(4) and r.due(5) and not DeadCodeRestarter(48, 0, 0).due(5)
    z = torch.randn(2, 8, 4, 4)  # [B, D, h, w]
    n = r.restart(5, model, z, opt, DistEnv())
    after = model.quantize.embedding.weight.detach()
    assert n == 45 and r.total_restarted == 45 and (r.counts == 0).all()
    assert torch.equal(after[:3], before[:3])  # used codes untouched
    rows = z.permute(0, 2, 3, 1).reshape(-1, 8)
    assert all(any(torch.equal(after[c], row) for row in rows) for c in range(3, 48))
    state = opt.state[model.quantize.embedding.weight]
    assert (state["exp_avg"][3:] == 0).all() and (state["exp_avg"][:3] != 0).any()
    # the same seed and step draw the same rows
    torch.manual_seed(0)
    again = VQGAN(TINY)
    r2 = DeadCodeRestarter(48, every=5, seed=3)
    r2.observe(torch.tensor([2, 0, 1]))
    r2.restart(5, again, z, None, DistEnv())
    assert torch.equal(again.quantize.embedding.weight[3:], after[3:])


def test_trainer_logs_usage_and_held_out_metrics(tmp_path):
    import csv

    from training.make_shapes import write_shapes
    from training.train_vqgan import run

    data, held = write_shapes(tmp_path / "data", 8, 16), write_shapes(tmp_path / "held", 3, 16, seed=1)
    out = tmp_path / "run"
    result = run(["--data", str(data), "--val-data", str(held), "--val-every", "2", "--image-size", "16",
                  "--preset", "tiny", "--no-perceptual", "--disc-weight", "0", "--batch-size", "2", "--workers", "0",
                  "--sample-every", "0", "--no-progress", "--device", "cpu", "--max-steps", "4", "--log-every", "1",
                  "--restart-dead-codes", "2", "--out", str(out)])
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    assert all(1 <= float(r["codes_used"]) <= 32 and float(r["perplexity"]) >= 1 for r in rows)
    assert [bool(r["val_psnr"]) for r in rows] == [False, True, False, True]
    assert [bool(r["codes_restarted"]) for r in rows] == [False, True, False, True]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 4 and metrics["heldout"]["images"] == 3
    assert metrics["heldout"] == result["val"] and float(rows[-1]["val_psnr"]) == metrics["heldout"]["psnr"]
    assert metrics["restarted_codes"] > 0
