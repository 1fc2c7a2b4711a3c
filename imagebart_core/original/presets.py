"""The seven released CompVis ImageBART architectures as :class:`ModelConfig` factories.

Sizes come from the released per-scale yaml configs (see the reference sheet of the original code):
x-transformers encoder-decoder scales with 16 heads of 64 (attention width 1024 whatever ``dim``),
a minGPT top scale, the 16x16 grid of a factor-16 VQGAN, and each release's shrunk vocabulary K.
Weights are not included: these configs build random-weight models (benchmarks) and are what the
converter produces for the real files.
"""

from __future__ import annotations

from ..config import (
    DECODER_ONLY,
    ENCODER_DECODER,
    ConditioningConfig,
    ModelConfig,
    SamplingDefaults,
    ScheduleConfig,
    TransformerConfig,
    VQGANConfig,
)
from ..schedule import geometric_betas

N_TOKENS = 256  # 16 x 16 grid

# betas (= the original temperature_range) of the metric-derived "custom" schedules, as float32 values
_CUSTOM_BETAS = {
    "ffhq_bernoulli_PSIM": [0.0, 0.36395246, 1.0],
    "bernoulli_PSIM_5": [0.0, 0.09011113, 0.10417974, 0.13920249, 0.26602155, 1.0],
    "bernoulli_PSIM_3": [0.0, 0.15172876, 0.23063573, 1.0],
}


def _xt(dim: int, depth: int, input_vocab: int, vocab: int, context: int, residual_scalors: int = 0):
    return TransformerConfig(
        kind=ENCODER_DECODER, dim=dim, heads=16, dim_head=64, depth=depth, decoder_depth=6, ff_mult=4,
        input_vocab_size=input_vocab, vocab_size=vocab, context_len=context, target_len=N_TOKENS,
        qkv_bias=False, residual=residual_scalors > 0, residual_num_scalors=residual_scalors,
    )


def _gpt(dim: int, layers: int, input_vocab: int, vocab: int, block: int, unmasked: int = 0):
    return TransformerConfig(
        kind=DECODER_ONLY, dim=dim, heads=16, dim_head=dim // 16, depth=layers, decoder_depth=0, ff_mult=4,
        input_vocab_size=input_vocab, vocab_size=vocab, context_len=block, target_len=N_TOKENS,
        qkv_bias=True, unmasked_prefix=unmasked,
    )


def _vqgan(n_embed: int) -> VQGANConfig:
    return VQGANConfig(base_channels=128, channel_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,),
                       resolution=256, z_channels=256, embed_dim=256, n_embed=n_embed)


def _defaults(k: int, n_scales: int, geometric: bool) -> SamplingDefaults:
    passes = [3] * n_scales if geometric else [5] * (n_scales - 1) + [1]
    return SamplingDefaults(temperature=[1.0] * n_scales, top_k=[k] * n_scales, top_p=[None] * n_scales,
                            refine_passes=passes)


def _model(name, k, n_embed, scales, betas, kind, cond=None) -> ModelConfig:
    n = len(scales)
    cfg = ModelConfig(
        name=name, vqgan=_vqgan(n_embed), scales=scales, schedule=ScheduleConfig(betas=list(betas), kind=kind),
        conditioning=cond or ConditioningConfig(), grid=(16, 16), vocab_size=k,
        sampling=_defaults(k, n, kind == "geometric"), source={"original_release": name},
    )
    cfg.validate()
    return cfg


def _imagenet_class() -> ConditioningConfig:
    return ConditioningConfig(kind="class", num_classes=1000, shared_class_embedding=True, null_condition=False)


def _lsun(name: str, k: int, context: int) -> ModelConfig:
    scales = [_xt(1152, 32, k, k, context), _xt(1152, 32, k, k, context), _gpt(1216, 36, k, k, 256)]
    return _model(name, k, 16384, scales, _CUSTOM_BETAS["bernoulli_PSIM_3"], "custom")


def original_config(name: str) -> ModelConfig:
    """Config of a released model by its folder name (see :data:`ORIGINAL_MODELS`)."""
    if name == "ffhq_4_scales_geometric":
        k = 548
        scales = [_xt(752, 18, k, k, 257, residual_scalors=4) for _ in range(3)] + [_gpt(800, 26, k, k, 256)]
        return _model(name, k, 1024, scales, geometric_betas(4), "geometric")
    if name == "ffhq_2_scales_custom":
        k = 548
        scales = [_xt(1152, 32, k, k, 257), _gpt(1216, 36, k, k, 256)]
        return _model(name, k, 1024, scales, _CUSTOM_BETAS["ffhq_bernoulli_PSIM"], "custom")
    if name == "cin_4_scales_geometric":
        k = 973
        scales = [_xt(1152, 32, 1000, k, 258, residual_scalors=4) for _ in range(3)]
        scales.append(_gpt(1216, 36, 1000, k, 258, unmasked=2))
        return _model(name, k, 16384, scales, geometric_betas(4), "geometric", _imagenet_class())
    if name == "cin_5_scales_custom":
        k = 973
        scales = [_xt(1152, 32, 1000, k, 258) for _ in range(4)] + [_gpt(1216, 36, 1000, k, 258, unmasked=2)]
        return _model(name, k, 16384, scales, _CUSTOM_BETAS["bernoulli_PSIM_5"], "custom", _imagenet_class())
    if name == "bedrooms_3_scales":
        return _lsun(name, 1017, 257)
    if name == "cats_3_scales":
        return _lsun(name, 1014, 257)
    if name == "churches_3_scales":
        return _lsun(name, 1022, 258)
    raise ValueError(f"unknown original model {name!r}; known: {', '.join(ORIGINAL_MODELS)}")


ORIGINAL_MODELS = (
    "ffhq_4_scales_geometric",
    "ffhq_2_scales_custom",
    "cin_4_scales_geometric",
    "cin_5_scales_custom",
    "bedrooms_3_scales",
    "cats_3_scales",
    "churches_3_scales",
)
