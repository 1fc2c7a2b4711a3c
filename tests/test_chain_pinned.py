"""The reverse chain's tokens are pinned: the bundled demo models, fixed seeds, every transition path.

The hashes were computed at commit e0cecb9 (before the chain moved into ``imagebart_core/chain/``): a refactor of
the chain must leave every sampled token unchanged. The cases cover the trained-size grid (unconditional,
class-guided, filtered per scale), masked refinement (refinement passes, known tokens), text guidance, and
sliding windows with a condition blend on a grid 1.5 times the trained width.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

import imagebart_core as ib
from imagebart_core import ConditionBlend

MODELS = Path(__file__).resolve().parents[1] / "models"


def _load(name: str) -> ib.ImageBART:
    path = MODELS / name
    if not path.is_file():
        pytest.skip(f"bundled demo model {path} is not present")
    return ib.load_model(path)


def _digest(codes: ib.Codes) -> str:
    return hashlib.sha256(codes.tokens.cpu().contiguous().numpy().tobytes()).hexdigest()[:20]


def _blob(batch: int, h: int, w: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    ellipse = ((yy - h * 0.42) / (h * 0.2)) ** 2 + ((xx - w * 0.38) / (w * 0.24)) ** 2 <= 1.0
    return ellipse.float().expand(batch, h, w).clone()


def _class_cases() -> dict[str, str]:
    model = _load("imagebart-demo-shapes-class.safetensors")
    out = {}
    with torch.inference_mode():
        uncond = model.sample(2, seed=3)
        out["class/unconditional"] = _digest(uncond)
        cond = model.class_condition(["circle", "square"])
        guided = model.sample(2, cond=cond, seed=5, guidance=2.0)
        out["class/guided"] = _digest(guided)
        noisy = model.random_codes(2, seed=9)
        filtered = model.reverse_step(noisy, cond=cond, steps=model.n_scales, seed=9,
                                      temperature={1: 0.8}, top_k=[20, None, 40], top_p=0.9, guidance=1.5)
        out["class/filtered"] = _digest(filtered)
        h, w = (g * model.config.vqgan.factor for g in model.config.grid)
        refined = model.masked_refine(guided, _blob(2, h, w), cond=cond, passes=2, seed=11, guidance=2.0)
        out["class/masked_refine"] = _digest(refined)
    return out


def _text_cases() -> dict[str, str]:
    model = _load("imagebart-demo-shapes-text.safetensors")
    out = {}
    with torch.inference_mode():
        gh, gw = model.config.grid
        blend = ConditionBlend([model.text_condition(["a red circle"]), model.text_condition(["a blue square"])])
        wide = model.sample(1, cond=blend, grid=(gh, gw + gw // 2), seed=5, guidance=2.0)
        out["text/panorama"] = _digest(wide)
        left = torch.zeros(1, gh * model.config.vqgan.factor, (gw + gw // 2) * model.config.vqgan.factor)
        left[:, :, : left.shape[-1] // 3] = 1.0
        edited = model.masked_refine(wide, left, cond=blend.conditions[0], passes=1, seed=4, window_stride=1)
        out["text/windowed_refine"] = _digest(edited)
    return out


PINNED = {
    "class/unconditional": "6aad384303d3e1f7fc61",
    "class/guided": "717aa0f904526919fb32",
    "class/filtered": "15732e2124310e98f42c",
    "class/masked_refine": "bb79743731c039777596",
    "text/panorama": "b69e5ad6c358cfb942de",
    "text/windowed_refine": "3a6c388e8d2c7801f120",
}


def test_class_model_tokens_are_pinned():
    assert _class_cases() == {k: v for k, v in PINNED.items() if k.startswith("class/")}


def test_text_model_tokens_are_pinned():
    assert _text_cases() == {k: v for k, v in PINNED.items() if k.startswith("text/")}


if __name__ == "__main__":
    print({**_class_cases(), **_text_cases()})  # noqa: T201 - computes the pins
