"""Count the codes a trained VQGAN uses on a data set and write the shrink list (paper Sec. 3.2: the
transformers only model the codebook entries that occur).

    python -m training.shrink_codebook --vqgan runs/vqgan/vqgan.safetensors --data DATA --image-size 256 \\
        --out runs/shrink.npy

Writes ``shrink.npy`` (int64 ``[K]``, sorted unique full-codebook ids, the original's format) and
``shrink.json`` (K, the usage count of every code, the share of tokens the kept codes cover).
``--min-count`` drops codes seen fewer times (their tokens then map to the nearest kept code).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .data import DataError, ImageFolder
from .files import load_vqgan, save_shrink


@torch.no_grad()
def count_codes(vqgan, data: str | Path, image_size: int, batch_size: int = 32, device="cpu") -> torch.Tensor:
    """Usage count of every full-codebook id over the (centre-cropped) images: int64 [n_embed]."""
    ds = ImageFolder(data, image_size)
    counts = torch.zeros(vqgan.cfg.n_embed, dtype=torch.int64)
    vqgan = vqgan.to(device).eval()
    for i in range(0, len(ds), batch_size):
        imgs = torch.stack([ds.load(j) for j in range(i, min(i + batch_size, len(ds)))]).to(device)
        ids = vqgan.nearest_codes(vqgan.encode_prequant(imgs))  # [b, h, w] full ids
        counts += torch.bincount(ids.reshape(-1).cpu(), minlength=vqgan.cfg.n_embed)
    return counts


def shrink_list(counts: torch.Tensor, min_count: int = 1) -> torch.Tensor:
    """Sorted ids with count >= min_count: int64 [K]."""
    used = torch.nonzero(counts >= max(1, min_count)).reshape(-1)
    if used.numel() == 0:
        raise ValueError("no code reaches --min-count; lower it")
    return used.to(torch.int64)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.shrink_codebook", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vqgan", required=True, help="trained VQGAN (.safetensors from training.train_vqgan)")
    p.add_argument("--data", required=True, help="image folder (the transformers' training data)")
    p.add_argument("--image-size", type=int, required=True, help="crop side in pixels (as in training)")
    p.add_argument("--out", required=True, help="shrink list to write (.npy); a .json summary goes beside it")
    p.add_argument("--min-count", type=int, default=1, help="keep codes used at least this often (default 1)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.suffix != ".npy":
        raise SystemExit(f"--out must end in .npy, got {out}")
    if out.exists() and not args.overwrite:
        raise SystemExit(f"{out} exists; pass --overwrite to replace it")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    vq = load_vqgan(args.vqgan)
    if args.image_size % vq.cfg.factor:
        raise SystemExit(f"--image-size {args.image_size} is not a multiple of the VQGAN factor {vq.cfg.factor}")
    try:
        counts = count_codes(vq, args.data, args.image_size, args.batch_size, device)
        used = shrink_list(counts, args.min_count)
    except (DataError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    total = int(counts.sum())
    covered = int(counts[used].sum())
    save_shrink(used, out, info={"K": int(used.numel()), "n_embed": vq.cfg.n_embed, "tokens": total,
                                 "coverage": covered / max(total, 1), "min_count": args.min_count,
                                 "counts": counts.tolist()})
    print(f"{used.numel()} of {vq.cfg.n_embed} codes used ({100 * covered / max(total, 1):.2f}% of {total} tokens "  # noqa: T201
          f"kept) -> {out}")


if __name__ == "__main__":
    main()
