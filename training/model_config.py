"""Build the model config of a new ImageBART: the JSON that train_scale and assemble agree on.

    python -m training.model_config --vqgan runs/vqgan/vqgan.safetensors --shrink runs/shrink.npy \\
        --image-size 256 --n-scales 3 --preset base --conditioning class --data DATA --out runs/model_config.json

The token grid is image size / VQGAN factor; K (the transformers' vocabulary) is the length of the shrink
list; the schedule is the original geometric one (beta_s = 1/(S - s + 1)) or given as an alpha-bar list;
conditioning: none, class (class names = the data folder's sorted sub-folders) or text (CLIP tokens). The
file is plain JSON: edit per-scale sizes there if the presets do not fit.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from imagebart_core.config import (
    ConditioningConfig,
    ModelConfig,
    SamplingDefaults,
    ScheduleConfig,
    VQGANConfig,
    chain_scales,
)
from imagebart_core.schedule import betas_from_alpha_bar, geometric_betas


@dataclass
class ScaleSize:
    """Width / depth of the scales: encoder-decoder scales use dim/depth/decoder_depth, the top (decoder-only)
    scale top_dim/top_depth; heads * dim_head is the attention width."""

    dim: int
    heads: int
    dim_head: int
    depth: int
    decoder_depth: int
    top_dim: int
    top_heads: int
    top_dim_head: int
    top_depth: int


PRESETS: dict[str, ScaleSize] = {
    # for tests and smoke runs
    "tiny": ScaleSize(32, 2, 16, 2, 1, 32, 2, 16, 2),
    # quick experiments on one GPU
    "small": ScaleSize(256, 8, 32, 8, 4, 256, 8, 32, 12),
    "base": ScaleSize(512, 8, 64, 12, 4, 512, 8, 64, 16),
    # the original FFHQ 4-scale model (scales 1-3: 752 wide, 18 + 6 layers; top GPT 800 wide, 26 layers)
    "ffhq": ScaleSize(752, 16, 64, 18, 6, 800, 16, 50, 26),
    # the original ImageNet / LSUN models (1152 wide, 32 + 6 layers; top GPT 1216 wide, 36 layers)
    "large": ScaleSize(1152, 16, 64, 32, 6, 1216, 16, 76, 36),
}


class ConfigError(ValueError):
    """A model config that does not fit the VQGAN, the data or itself."""


def build_model_config(
    *,
    vqgan: VQGANConfig,
    vocab_size: int,
    image_size: int | tuple[int, int],
    n_scales: int,
    size: ScaleSize | str = "small",
    alpha_bar: list[float] | None = None,
    conditioning: str = "none",
    class_names: list[str] | None = None,
    text_length: int = 77,
    text_token_ids: list[int] | None = None,
    null_condition: bool = True,
    residual: bool = False,
    name: str = "imagebart",
    source: dict | None = None,
) -> ModelConfig:
    """A validated :class:`ModelConfig` for a new model (see the module doc). Raises ConfigError."""
    if isinstance(size, str):
        if size not in PRESETS:
            raise ConfigError(f"unknown preset {size!r}; choose one of {sorted(PRESETS)}")
        size = PRESETS[size]
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    f = vqgan.factor
    if h % f or w % f:
        raise ConfigError(f"image size {h}x{w} is not a multiple of the VQGAN factor {f} "
                          f"(its {len(vqgan.channel_mult) - 1} down-samplings); use e.g. {max(f, h // f * f)}")
    grid = (h // f, w // f)
    if not 1 <= vocab_size <= vqgan.n_embed:
        raise ConfigError(f"vocab_size {vocab_size} must lie in 1..{vqgan.n_embed} (the VQGAN's codebook)")
    if n_scales < 1:
        raise ConfigError("n_scales must be >= 1")
    if alpha_bar is not None:
        if len(alpha_bar) != n_scales + 1:
            raise ConfigError(f"--alpha-bar needs n_scales + 1 = {n_scales + 1} values (1 first, 0 last)")
        betas = betas_from_alpha_bar(alpha_bar)
        kind = "alpha_bar"
    else:
        betas = geometric_betas(n_scales)
        kind = "geometric"
    cond = ConditioningConfig(kind=conditioning)
    if conditioning == "class":
        if not class_names:
            raise ConfigError("class conditioning needs class names (give --data with class sub-folders, "
                              "or --class-names)")
        cond.num_classes = len(class_names)
        cond.class_names = list(class_names)
        cond.null_condition = null_condition
    elif conditioning == "text":
        cond.text_length = int(text_length)
        cond.null_condition = null_condition
        if text_token_ids is not None:
            cond.text_token_ids = sorted(set(int(i) for i in text_token_ids))
            cond.text_vocab_size = len(cond.text_token_ids) + 1
    elif conditioning != "none":
        raise ConfigError(f"unknown conditioning {conditioning!r} (none | class | text)")
    scales = chain_scales(n_scales, vocab_size=vocab_size, n_tokens=grid[0] * grid[1],
                          prefix_length=1 + cond.prefix_length, dim=size.dim, heads=size.heads,
                          dim_head=size.dim_head, depth=size.depth, decoder_depth=size.decoder_depth,
                          top_dim=size.top_dim, top_heads=size.top_heads, top_dim_head=size.top_dim_head,
                          top_depth=size.top_depth, residual=residual)
    cfg = ModelConfig(
        name=name,
        vqgan=vqgan,
        scales=scales,
        schedule=ScheduleConfig(betas=betas, kind=kind),
        conditioning=cond,
        grid=grid,
        vocab_size=vocab_size,
        sampling=SamplingDefaults(temperature=[1.0] * n_scales, top_k=[None] * n_scales,
                                  top_p=[None] * n_scales, refine_passes=[2] * n_scales),
        source=dict(source or {"kind": "trained", "trainer": "imagebart training package"}),
    )
    try:
        cfg.validate()
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return cfg


def caption_token_ids(data, text_length: int) -> list[int]:
    """Sorted CLIP ids (without padding 0) of every caption ``.txt`` beside the images of ``data``."""
    from imagebart_core.conditioning import clip_tokenizer

    from .data import find_images

    captions = [p.with_suffix(".txt").read_text().strip() for p in find_images(data) if p.with_suffix(".txt").exists()]
    if not captions:
        raise SystemExit(f"no caption .txt files beside the images of {data}")
    ids: set[int] = set()
    tokens = clip_tokenizer()(captions, context_length=text_length)  # (N, L)
    ids.update(int(t) for t in tokens.unique() if int(t) != 0)
    return sorted(ids)


def main(argv=None) -> None:
    from pathlib import Path

    from .data import class_names_of
    from .files import load_shrink, read_vqgan_config, save_model_config

    p = argparse.ArgumentParser(prog="python -m training.model_config", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vqgan", required=True, help="trained VQGAN (.safetensors from training.train_vqgan)")
    p.add_argument("--shrink", required=True, help="shrink list (.npy from training.shrink_codebook)")
    p.add_argument("--image-size", type=int, nargs="+", required=True, help="training image size: S or H W")
    p.add_argument("--n-scales", type=int, default=3, help="number of transitions / transformers (default 3)")
    p.add_argument("--preset", default="small", choices=sorted(PRESETS), help="scale sizes (default small)")
    for name in ("dim", "heads", "dim-head", "depth", "decoder-depth", "top-dim", "top-heads", "top-dim-head",
                 "top-depth"):
        p.add_argument(f"--{name}", type=int, default=None, help=f"override the preset's {name}")
    p.add_argument("--alpha-bar", type=float, nargs="+", default=None,
                   help="explicit schedule: alpha-bar per level, 1 first, 0 last (default: geometric)")
    p.add_argument("--conditioning", default="none", choices=["none", "class", "text"])
    p.add_argument("--data", default=None, help="image folder whose sub-folders name the classes")
    p.add_argument("--class-names", nargs="+", default=None, help="class names (instead of --data)")
    p.add_argument("--text-length", type=int, default=77, help="CLIP tokens per caption (default 77)")
    p.add_argument("--text-vocab-from-data", action="store_true",
                   help="text: keep only the CLIP tokens that occur in the captions of --data (a compact text "
                   "embedding for small models; other words are ignored at sampling time, with a warning)")
    p.add_argument("--no-null-condition", action="store_true",
                   help="no unconditional row (then train_scale cannot use condition dropout)")
    p.add_argument("--residual", action="store_true", help="ResidualScaled encoder-decoder scales (as the "
                   "original FFHQ-4 and cIN-4 models)")
    p.add_argument("--name", default="imagebart")
    p.add_argument("--out", required=True, help="where to write the model config JSON")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise SystemExit(f"{out} exists; pass --overwrite to replace it (scales trained for the old config "
                         "will no longer assemble with the new one)")
    vq = read_vqgan_config(args.vqgan)
    used = load_shrink(args.shrink, vq.n_embed)
    size = PRESETS[args.preset]
    for k, v in vars(args).items():
        if hasattr(size, k) and v is not None:
            size = ScaleSize(**{**size.__dict__, k: v})
    names = args.class_names
    if args.conditioning == "class" and names is None:
        if args.data is None:
            raise SystemExit("--conditioning class needs --data (class sub-folders) or --class-names")
        names = class_names_of(args.data)
        if not names:
            raise SystemExit(f"{args.data} has no class sub-folders with images")
    img = tuple(args.image_size) if len(args.image_size) == 2 else args.image_size[0]
    text_ids = None
    if args.text_vocab_from_data:
        if args.conditioning != "text" or args.data is None:
            raise SystemExit("--text-vocab-from-data needs --conditioning text and --data with captions")
        text_ids = caption_token_ids(args.data, args.text_length)
    try:
        cfg = build_model_config(vqgan=vq, vocab_size=int(used.numel()), image_size=img, n_scales=args.n_scales,
                                 size=size, alpha_bar=args.alpha_bar, conditioning=args.conditioning, class_names=names,
                                 text_length=args.text_length, text_token_ids=text_ids,
                                 null_condition=not args.no_null_condition,
                                 residual=args.residual, name=args.name,
                                 source={"kind": "trained", "vqgan": str(args.vqgan), "shrink": str(args.shrink)})
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    save_model_config(cfg, out)
    print(f"wrote {out}: {cfg.n_scales} scales, grid {cfg.grid[0]}x{cfg.grid[1]}, K={cfg.vocab_size}, "  # noqa: T201
          f"conditioning={cfg.conditioning.kind}, betas={[round(b, 4) for b in cfg.schedule.betas]}")


if __name__ == "__main__":
    main()
