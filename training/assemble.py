"""Assemble one native ImageBART model file from the trained parts.

    python -m training.assemble --config runs/model_config.json --scales runs/scale1 runs/scale2 runs/scale3 \\
        --out models/imagebart/my_model.safetensors

VQGAN + shrink list (default: the paths recorded in the config) + schedule (from the config) + one trained
scale per transition (``scale{s}.safetensors`` in each run folder, or the files themselves) -> a
``.safetensors`` that ``imagebart_core.load_model`` and the Load ImageBART node read. Every scale must
have been trained for exactly this config (checked by fingerprint).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import imagebart_core as ib
from imagebart_core.checkpoint import save_model
from imagebart_core.model import ImageBART

from .files import config_fingerprint, load_model_config, load_scale, load_shrink, load_vqgan
from .precompute_codes import resolve_vqgan_paths


def _scale_file(p: Path) -> Path:
    if p.is_dir():
        found = sorted(p.glob("scale*.safetensors"))
        if len(found) != 1:
            raise SystemExit(f"{p}: expected one scale*.safetensors in the run folder, found {len(found)}")
        return found[0]
    return p


STORE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def assemble(config: str | Path, scales: list[str | Path], out: str | Path, vqgan: str | None = None,
             shrink: str | None = None, name: str | None = None, overwrite: bool = False,
             store_dtype: str = "fp32") -> Path:
    """Build and save the model; returns the written path. Raises SystemExit with a reason on mismatch."""
    cfg = load_model_config(config)
    fp = config_fingerprint(cfg)
    vq_path, sh_path = resolve_vqgan_paths(cfg, vqgan, shrink)
    used = load_shrink(sh_path, cfg.vqgan.n_embed)
    if used.numel() != cfg.vocab_size:
        raise SystemExit(f"the shrink list has {used.numel()} codes; the config expects {cfg.vocab_size}")
    vq = load_vqgan(vq_path, used=used)
    if vq.cfg != cfg.vqgan:
        raise SystemExit(f"the VQGAN {vq_path} does not match the config's VQGAN section")
    by_scale: dict[int, dict[str, torch.Tensor]] = {}
    for p in scales:
        f = _scale_file(Path(p))
        state, s, sfp, _ = load_scale(f)
        if sfp != fp:
            raise SystemExit(f"{f} (scale {s}) was trained for another model config (fingerprint {sfp}, "
                             f"this config {fp})")
        if s in by_scale:
            raise SystemExit(f"scale {s} given twice")
        by_scale[s] = state
    missing = [s for s in range(1, cfg.n_scales + 1) if s not in by_scale]
    if missing:
        raise SystemExit(f"missing trained scales {missing} (the config has {cfg.n_scales})")
    extra = sorted(set(by_scale) - set(range(1, cfg.n_scales + 1)))
    if extra:
        raise SystemExit(f"scales {extra} do not exist in this config")
    if name:
        cfg.name = name
    with torch.random.fork_rng(devices=[]):
        model = ImageBART(cfg, used=used, init=False)
    model.vqgan.load_state_dict(vq.state_dict(), strict=True)
    for s, state in by_scale.items():
        model.scales[s - 1].load_state_dict(state, strict=True)
    model = model.to_runtime("cpu", torch.float32)
    path = save_model(model, out, overwrite=overwrite, transformer_dtype=STORE_DTYPES[store_dtype])
    ib.load_model(path)  # check the file reads back
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.assemble", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="model config JSON the scales were trained with")
    p.add_argument("--scales", nargs="+", required=True, help="train_scale run folders or scale*.safetensors")
    p.add_argument("--out", required=True, help="model file to write (.safetensors)")
    p.add_argument("--vqgan", default=None, help="VQGAN file (default: recorded in the config)")
    p.add_argument("--shrink", default=None, help="shrink list (default: recorded in the config)")
    p.add_argument("--name", default=None, help="model name stored in the file")
    p.add_argument("--store-dtype", default="fp32", choices=sorted(STORE_DTYPES),
                   help="dtype of the transformers' weights in the file (fp16 halves it; the VQGAN stays fp32)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    try:
        path = assemble(args.config, args.scales, args.out, args.vqgan, args.shrink, args.name, args.overwrite, args.store_dtype)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"wrote {path}: {ib.checkpoint.describe(path)}")  # noqa: T201 (CLI summary)


if __name__ == "__main__":
    main()
