"""The files the training steps hand to each other (all safe to load: safetensors, .npy without pickle, JSON).

* ``vqgan.safetensors``: a trained VQGAN (full codebook), its :class:`VQGANConfig` JSON in the metadata.
* ``shrink.npy``: the shrink list, int64 ``[K]`` sorted unique full-codebook ids (the original's
  ``data/vqgan_indices/*.npy`` format), with ``shrink.json`` beside it (counts, coverage).
* ``model_config.json``: the :class:`ModelConfig` every scale and the assembly agree on.
* ``scale{s}.safetensors``: the (EMA) weights of one trained scale, with the scale index and the
  fingerprint of the model config it was trained for.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from imagebart_core.codes import codebook_identity
from imagebart_core.config import ModelConfig, VQGANConfig, from_plain
from imagebart_core.fileio import atomic_path, atomic_write_text, save_safetensors
from imagebart_core.vqgan import VQGAN, check_used

VQGAN_FORMAT = "imagebart-vqgan"
SCALE_FORMAT = "imagebart-scale"


def _atomic_safetensors(tensors: dict[str, torch.Tensor], path: Path, meta: dict[str, str]) -> Path:
    return save_safetensors({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, path, meta)


def _read(path: Path, fmt: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise ValueError(f"{path} is not a readable .safetensors file: {exc}") from exc
    if meta.get("format") != fmt:
        raise ValueError(f"{path} is not a {fmt} file (format={meta.get('format')!r})")
    return tensors, meta


# -- VQGAN ----------------------------------------------------------------------------------------------------
def vqgan_config_from_dict(data: dict) -> VQGANConfig:
    return from_plain(VQGANConfig, dict(data))


def save_vqgan(state: dict[str, torch.Tensor], cfg: VQGANConfig, path: str | Path, info: dict | None = None) -> Path:
    """Write VQGAN weights (a ``VQGAN.state_dict()``) with its config."""
    meta = {"format": VQGAN_FORMAT, "config": json.dumps(dataclasses.asdict(cfg)), "info": json.dumps(info or {})}
    return _atomic_safetensors(state, Path(path), meta)


def load_vqgan(path: str | Path, device="cpu", used: torch.Tensor | None = None) -> VQGAN:
    """A VQGAN written by :func:`save_vqgan` (eval mode, float32); ``used`` installs a shrink list."""
    tensors, meta = _read(Path(path), VQGAN_FORMAT)
    cfg = vqgan_config_from_dict(json.loads(meta["config"]))
    model = VQGAN(cfg)
    model.load_state_dict(tensors, strict=True)
    if used is not None:
        model.quantize.used = check_used(torch.as_tensor(used), cfg.n_embed).clone()
    return model.to(device).eval()


def codebook_hash(vqgan: VQGAN) -> str:
    """A short hash of a VQGAN's codebook and shrink list (codes are only meaningful with both)."""
    return codebook_identity(vqgan.quantize.used, vqgan.quantize.embedding.weight)


def read_vqgan_config(path: str | Path) -> VQGANConfig:
    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != VQGAN_FORMAT:
        raise ValueError(f"{path} is not a VQGAN file written by training.train_vqgan")
    return vqgan_config_from_dict(json.loads(meta["config"]))


# -- shrink list ----------------------------------------------------------------------------------------------
def save_shrink(used: torch.Tensor, path: str | Path, info: dict | None = None) -> Path:
    path = Path(path)
    if path.suffix != ".npy":
        raise ValueError(f"the shrink list is written as .npy, got {path}")
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, used.cpu().numpy().astype(np.int64), allow_pickle=False)
    if info is not None:
        path.with_suffix(".json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    return path


def load_shrink(path: str | Path, n_embed: int | None = None) -> torch.Tensor:
    """The shrink list as int64 [K] (checked sorted, unique, inside the codebook)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"shrink list {path} not found (write it with python -m training.shrink_codebook)")
    arr = np.load(path, allow_pickle=False)
    used = torch.from_numpy(np.asarray(arr).astype(np.int64))
    return check_used(used, n_embed if n_embed is not None else int(used.max()) + 1)


# -- model config ---------------------------------------------------------------------------------------------
def config_fingerprint(cfg: ModelConfig) -> str:
    """A hash of everything that shapes the networks and the chain (name, sampling and source excluded)."""
    d = cfg.to_dict()
    for k in ("name", "sampling", "source"):
        d.pop(k, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def load_model_config(path: str | Path) -> ModelConfig:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model config {path} not found (write it with python -m training.model_config)")
    try:
        cfg = ModelConfig.from_json(path.read_text(encoding="utf-8"))
        cfg.validate()
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: invalid model config: {exc}") from exc
    return cfg


def save_model_config(cfg: ModelConfig, path: str | Path) -> Path:
    return atomic_write_text(path, json.dumps(cfg.to_dict(), indent=1, sort_keys=True))


# -- scale weights --------------------------------------------------------------------------------------------
def save_scale(state: dict[str, torch.Tensor], scale: int, cfg: ModelConfig, path: str | Path,
               info: dict | None = None) -> Path:
    meta = {"format": SCALE_FORMAT, "scale": str(scale), "config_fingerprint": config_fingerprint(cfg),
            "info": json.dumps(info or {})}
    return _atomic_safetensors(state, Path(path), meta)


def load_scale(path: str | Path) -> tuple[dict[str, torch.Tensor], int, str, dict]:
    """-> (state dict, scale index, config fingerprint, info)."""
    tensors, meta = _read(Path(path), SCALE_FORMAT)
    return tensors, int(meta["scale"]), meta["config_fingerprint"], json.loads(meta.get("info", "{}"))
