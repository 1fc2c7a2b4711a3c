"""Encode an image folder once with the VQGAN (+ shrink list) and cache the clean codes for train_scale.

    python -m training.precompute_codes --config runs/model_config.json --data DATA --out runs/codes.safetensors

The file holds ``codes`` int16/int32 ``[N, h, w]`` (shrunk ids, level 1), ``labels`` int64 ``[N]`` (class
index, -1 = none) and, in a ``.captions.json`` beside it, the caption of each item. The transformers' forward
process is then drawn on the fly from these codes at every step. Under torchrun each process encodes a
share and process 0 writes the file.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from imagebart_core.config import ModelConfig
from imagebart_core.fileio import save_safetensors

from .data import ImageFolder
from .files import codebook_hash, load_model_config, load_shrink, load_vqgan

log = logging.getLogger(__name__)
CODES_FORMAT = "imagebart-codes"


@dataclass
class CodeSet:
    """Clean codes of a data set: codes int64 [N, h, w], labels int64 [N] (-1 = none), captions list[str]."""

    codes: torch.Tensor
    labels: torch.Tensor
    captions: list[str]
    class_names: list[str]
    codebook: str  # codebook_hash of the VQGAN + shrink list that made them

    def __len__(self) -> int:
        return int(self.codes.shape[0])


def resolve_vqgan_paths(cfg: ModelConfig, vqgan: str | None, shrink: str | None) -> tuple[Path, Path]:
    """--vqgan / --shrink, or the paths recorded in the model config by training.model_config."""
    v = vqgan or cfg.source.get("vqgan")
    s = shrink or cfg.source.get("shrink")
    if not v or not s:
        raise SystemExit("give --vqgan and --shrink (the model config does not record them)")
    return Path(v), Path(s)


def load_vqgan_for(cfg: ModelConfig, vqgan_path: Path, shrink_path: Path, device="cpu"):
    """The VQGAN with its shrink list installed, checked against the model config."""
    used = load_shrink(shrink_path, cfg.vqgan.n_embed)
    if used.numel() != cfg.vocab_size:
        raise SystemExit(f"the shrink list {shrink_path} has {used.numel()} codes but the model config has "
                         f"vocab_size {cfg.vocab_size}: they come from different runs")
    vq = load_vqgan(vqgan_path, device=device, used=used)
    if vq.cfg != cfg.vqgan:
        raise SystemExit(f"the VQGAN {vqgan_path} does not match the model config's VQGAN section")
    return vq


@torch.no_grad()
def encode_folder(cfg: ModelConfig, vqgan, data: str | Path, batch_size: int = 32, device="cpu",
                  hflip: bool = False, env=None) -> CodeSet:
    """Encode every image of ``data`` (centre crop to the config's image size; + mirrored copies with hflip)."""
    f = cfg.vqgan.factor
    h, w = cfg.grid
    if h != w:
        raise SystemExit("image folders are cropped square; this model config has a non-square grid")
    names = list(cfg.conditioning.class_names or []) if cfg.conditioning.kind == "class" else None
    ds = ImageFolder(data, h * f, class_names=names)
    if cfg.conditioning.kind == "class" and not ds.has_labels():
        raise SystemExit(f"class conditioning: every image must sit in a class sub-folder of {data}")
    rank, world = (env.rank, env.world) if env is not None else (0, 1)
    n = len(ds)
    mine = list(range(rank, n, world))
    out = torch.zeros(n * (2 if hflip else 1), h, w, dtype=torch.int64)
    vqgan = vqgan.to(device)
    for flip in ([False, True] if hflip else [False]):
        for i in range(0, len(mine), batch_size):
            idx = mine[i : i + batch_size]
            imgs = torch.stack([ds.load(j) for j in idx])  # [b, 3, S, S] in [-1, 1]
            if flip:
                imgs = imgs.flip(-1)
            codes = vqgan.encode_to_codes(imgs.to(device))  # [b, h, w]
            out[torch.tensor(idx) + (n if flip else 0)] = codes.cpu()
    if world > 1:
        import torch.distributed as dist

        out = out.to(env.device)
        dist.all_reduce(out)  # each row was written by exactly one process
        out = out.cpu()
    labels = torch.tensor(ds.labels * (2 if hflip else 1), dtype=torch.int64)
    captions = [ds.caption(i) for i in range(n)] * (2 if hflip else 1)
    return CodeSet(out, labels, captions, list(ds.class_names), codebook_hash(vqgan))


def save_codes(cs: CodeSet, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = torch.int16 if int(cs.codes.max()) < 32768 else torch.int32
    meta = {"format": CODES_FORMAT, "class_names": json.dumps(cs.class_names), "codebook": cs.codebook}
    save_safetensors({"codes": cs.codes.to(dtype).contiguous(), "labels": cs.labels.contiguous()}, path, meta)
    cap = path.with_suffix(".captions.json")
    cap.write_text(json.dumps(cs.captions), encoding="utf-8")
    return path


def load_codes(path: str | Path) -> CodeSet:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"codes file {path} not found (write it with python -m training.precompute_codes)")
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
        if meta.get("format") != CODES_FORMAT:
            raise ValueError(f"{path} is not a codes file from training.precompute_codes")
        codes = f.get_tensor("codes").to(torch.int64)
        labels = f.get_tensor("labels").to(torch.int64)
    cap = path.with_suffix(".captions.json")
    captions = json.loads(cap.read_text(encoding="utf-8")) if cap.is_file() else [""] * len(labels)
    return CodeSet(codes, labels, captions, json.loads(meta.get("class_names", "[]")), meta.get("codebook", ""))


def main(argv=None) -> None:
    from .distributed import cleanup_distributed, init_distributed
    from .run_log import setup_logging

    p = argparse.ArgumentParser(prog="python -m training.precompute_codes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="model config JSON (training.model_config)")
    p.add_argument("--data", required=True, help="image folder")
    p.add_argument("--out", required=True, help="codes file to write (.safetensors)")
    p.add_argument("--vqgan", default=None, help="VQGAN file (default: the one recorded in the config)")
    p.add_argument("--shrink", default=None, help="shrink list (default: the one recorded in the config)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--hflip", action="store_true", help="also store mirrored images (doubles the data; captions "
                   "that say left/right become wrong)")
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    setup_logging()
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise SystemExit(f"{out} exists; pass --overwrite to replace it")
    env = init_distributed(args.device)
    try:
        cfg = load_model_config(args.config)
        vq = load_vqgan_for(cfg, *resolve_vqgan_paths(cfg, args.vqgan, args.shrink), device=env.device)
        cs = encode_folder(cfg, vq, args.data, args.batch_size, env.device, args.hflip, env)
        if env.is_main:
            save_codes(cs, out)
            print(f"wrote {len(cs)} code grids {tuple(cs.codes.shape[1:])} to {out}")  # noqa: T201 (CLI summary)
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main()
