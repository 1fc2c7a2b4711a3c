"""Sizes of the seven released models: parameters and the bytes of the converted file at each storage dtype.

Computed from the architectures (:mod:`.presets`), built on the meta device, so nothing is allocated. The
VQGAN is always stored as float32; the transformers in the chosen dtype.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import torch

from ..config import FORMAT_VERSION
from .presets import original_config

#: storage dtypes of the transformers, by their command-line name
STORAGE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class ModelSize:
    """Parameter counts and tensor bytes of one released architecture."""

    name: str
    transformer_params: int  # floating-point tensors of all scales
    largest_scale_params: int  # the biggest single scale (what one GPU must hold with offloading)
    vqgan_bytes: int  # float32 VQGAN + int64 shrink list
    other_bytes: int  # non-float tensors outside the VQGAN
    header_bytes: int  # safetensors header (JSON) estimate

    def file_bytes(self, dtype: str) -> int:
        """Bytes of the converted ``.safetensors`` file with the transformers stored as ``dtype``."""
        per = torch.empty((), dtype=STORAGE_DTYPES[dtype]).element_size()
        return self.vqgan_bytes + self.other_bytes + self.header_bytes + self.transformer_params * per

    def scale_bytes(self, dtype: str) -> int:
        """Bytes of the largest scale in ``dtype`` (the memory one running scale needs for its weights)."""
        return self.largest_scale_params * torch.empty((), dtype=STORAGE_DTYPES[dtype]).element_size()


@functools.lru_cache(maxsize=None)
def model_size(name: str) -> ModelSize:
    """Sizes of the released model ``name`` (one of the seven release names)."""
    from ..model import ImageBART

    cfg = original_config(name)
    with torch.device("meta"):
        model = ImageBART(cfg, init=False)
    state = model.state_dict()
    vq = sum(v.numel() * v.element_size() for k, v in state.items() if k.startswith("vqgan."))
    tf = sum(v.numel() for k, v in state.items() if not k.startswith("vqgan.") and v.is_floating_point())
    other = sum(v.numel() * v.element_size() for k, v in state.items()
                if not k.startswith("vqgan.") and not v.is_floating_point())
    largest = max(sum(p.numel() for p in scale.state_dict().values() if p.is_floating_point())
                  for scale in model.scales)
    entries = {k: {"dtype": "F32", "shape": list(v.shape), "data_offsets": [0, 0]} for k, v in state.items()}
    meta = {"format": "imagebart", "format_version": str(FORMAT_VERSION), "config": cfg.to_json()}
    header = len(json.dumps({**entries, "__metadata__": meta})) + 8192  # + room for provenance notes
    return ModelSize(name, int(tf), int(largest), int(vq), int(other), int(header))


def human_bytes(n: float) -> str:
    """1234567 -> '1.23 MB' (decimal units, as disk sizes are sold)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000.0
    return f"{n:.2f} TB"
