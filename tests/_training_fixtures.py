"""Small shared set-ups for the training tests (tiny sizes, CPU, no downloads)."""

from __future__ import annotations

from pathlib import Path

import torch

from imagebart_core.config import VQGANConfig
from training.files import save_model_config
from training.model_config import build_model_config
from training.precompute_codes import CodeSet, save_codes

TINY_VQ = VQGANConfig(base_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(),
                      resolution=16, z_channels=8, embed_dim=8, n_embed=48)


def tiny_scale_setup(tmp: Path, *, n_items: int = 16, n_scales: int = 3, vocab: int = 12,
                     conditioning: str = "class", seed: int = 0) -> tuple[Path, Path]:
    """A tiny model config + a codes file of random clean codes (structured so there is something to learn).
    Returns (config path, codes path)."""
    names = ["a", "b", "c"] if conditioning == "class" else None
    cfg = build_model_config(vqgan=TINY_VQ, vocab_size=vocab, image_size=16, n_scales=n_scales, size="tiny",
                             conditioning=conditioning, class_names=names, text_length=8)
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_items) % 3
    base = torch.randint(0, vocab, (3, 4, 4), generator=g)  # one pattern per class
    codes = base[labels].clone()
    flip = torch.rand(n_items, 4, 4, generator=g) < 0.2
    codes[flip] = torch.randint(0, vocab, (int(flip.sum()),), generator=g)
    captions = [f"a pattern of kind {int(c)}" for c in labels]
    cs = CodeSet(codes, labels if conditioning == "class" else torch.full((n_items,), -1), captions,
                 names or [], "test")
    cfg_path = save_model_config(cfg, tmp / "model_config.json")
    codes_path = save_codes(cs, tmp / "codes.safetensors")
    return cfg_path, codes_path


def scale_args(cfg: Path, codes: Path, out: Path, scale: int, steps: int, *extra: str) -> list[str]:
    return ["--config", str(cfg), "--codes", str(codes), "--out", str(out), "--scale", str(scale),
            "--max-steps", str(steps), "--batch-size", "4", "--warmup-steps", "2", "--lr", "3e-3",
            "--sample-every", "0", "--no-progress", "--log-every", "1", "--device", "cpu", "--ema-decay", "0.9",
            *extra]


def one_thread():
    """Generator for an autouse fixture: tiny models run fastest on one CPU thread (no oversubscription)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
