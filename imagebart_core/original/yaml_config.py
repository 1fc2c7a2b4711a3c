"""The original yaml configs -> a native :class:`~imagebart_core.config.ModelConfig`.

Only plain data is read (``yaml.safe_load``); ``target:`` class paths are compared as strings and
never imported. One released sampling yaml (``imagenet_5_scales_custom.yaml``) ends with a stray
``>`` line, which makes it invalid YAML; trailing lines consisting of ``>`` alone are stripped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

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
from .safe_pickle import OriginalFileError

DENOISING_X = "imagebart.models.diffusion.DenoisingXTransformer"
DECODER_ONLY_DENOISER = "imagebart.models.diffusion.DecoderOnlyDenoiser"
XTRANSFORMER = "imagebart.modules.xtransformers.x_transformer.XTransformer"
RESIDUAL_XTRANSFORMER = "imagebart.modules.xtransformers.x_transformer.ResidualScaledXTransformer"
MINGPT = "imagebart.modules.transformer.mingpt.GPT"
CLASS_PROVIDER = "imagebart.util.ClassProvider"
VQGAN_TARGETS = ("imagebart.models.vqgan.VQGANWrapper", "taming.models.vqgan.VQModel")

#: x-transformers options the original configs use; anything else would change the architecture.
_X_KEYS = {"dim", "enc_num_tokens", "enc_depth", "enc_heads", "enc_max_seq_len", "dec_num_tokens", "dec_depth",
           "dec_heads", "dec_max_seq_len", "tie_token_emb", "wrap_decoder", "scale_pos", "n_scales", "xt_start",
           "xt_size"}
_GPT_KEYS = {"vocab_size", "block_size", "n_layer", "n_head", "n_embd", "input_vocab_size", "n_unmasked",
             "embd_pdrop", "resid_pdrop", "attn_pdrop"}
X_DIM_HEAD = 64  # the vendored x-transformers' default head width (inner dim = heads * 64)
CLASS_COUNT = 1000  # ImageNet classes of the ClassProvider conditioning


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Parse an original yaml as plain data. Strips trailing ``>``-only lines (a release quirk)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OriginalFileError(f"{p}: cannot read the config: {exc}") from exc
    lines = text.rstrip().splitlines()
    stripped = False
    while lines and lines[-1].strip() == ">":
        lines.pop()
        stripped = True
    try:
        data = yaml.safe_load("\n".join(lines) + "\n")
    except yaml.YAMLError as exc:
        raise OriginalFileError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise OriginalFileError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    if stripped:
        data["__stripped_trailing_gt__"] = True
    return data


def read_sampling_yaml(path: str | Path) -> tuple[list[str], list[str]]:
    """``configs/sampling/**.yaml`` -> (checkpoint paths, per-scale config paths), scale 1 first."""
    data = read_yaml(path)
    ckpts, cfgs = data.get("checkpoints"), data.get("configs")
    if not isinstance(ckpts, list) or not isinstance(cfgs, list) or not ckpts:
        raise OriginalFileError(f"{path}: a sampling yaml needs non-empty 'checkpoints' and 'configs' lists")
    if len(ckpts) != len(cfgs):
        raise OriginalFileError(f"{path}: {len(ckpts)} checkpoints but {len(cfgs)} configs")
    return [str(c) for c in ckpts], [str(c) for c in cfgs]


@dataclass
class ScaleSpec:
    """What one per-scale yaml says (plain values)."""

    where: str
    model_target: str
    transformer_target: str
    transformer: dict[str, Any]
    n_scales: int
    single_scale: int
    redraw_prob: Any
    top_k: int | None
    conditioner: str | None
    first_stage: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def decoder_only(self) -> bool:
        return self.model_target == DECODER_ONLY_DENOISER


def _get(d: Any, key: str, where: str, kind: type | tuple = object):
    if not isinstance(d, dict) or key not in d:
        raise OriginalFileError(f"{where}: missing '{key}'")
    v = d[key]
    if not isinstance(v, kind):
        raise OriginalFileError(f"{where}: '{key}' should be {kind}, got {v!r}")
    return v


def parse_scale_yaml(data: dict[str, Any], where: str) -> ScaleSpec:
    """One per-scale training yaml -> ScaleSpec (checks the model kinds it supports)."""
    model = _get(data, "model", where, dict)
    target = _get(model, "target", f"{where}: model", str)
    params = _get(model, "params", f"{where}: model", dict)
    if target not in (DENOISING_X, DECODER_ONLY_DENOISER):
        raise OriginalFileError(f"{where}: model.target {target} is not an ImageBART scale "
                                f"({DENOISING_X} or {DECODER_ONLY_DENOISER})")
    tcfg = _get(params, "transformer_config", f"{where}: model.params", dict)
    ttarget = _get(tcfg, "target", f"{where}: transformer_config", str)
    tparams = _get(tcfg, "params", f"{where}: transformer_config", dict)
    allowed = {DENOISING_X: (XTRANSFORMER, RESIDUAL_XTRANSFORMER), DECODER_ONLY_DENOISER: (MINGPT,)}[target]
    if ttarget not in allowed:
        raise OriginalFileError(f"{where}: transformer {ttarget} is not supported with {target} "
                                f"(supported: {', '.join(allowed)})")
    known = _GPT_KEYS if ttarget == MINGPT else _X_KEYS
    unknown = sorted(set(tparams) - known)
    if unknown:
        raise OriginalFileError(f"{where}: transformer options {unknown} are not in any released ImageBART "
                                "config and are not supported")
    cond = params.get("conditioner_config")
    cond_target = None
    if cond is not None:
        cond_target = _get(cond, "target", f"{where}: conditioner_config", str)
        if cond_target != CLASS_PROVIDER:
            raise OriginalFileError(f"{where}: conditioner {cond_target} is not supported (only {CLASS_PROVIDER}, "
                                    "the class conditioning of the released ImageNet models)")
    fs = _get(params, "first_stage_config", f"{where}: model.params", dict)
    fs_target = _get(fs, "target", f"{where}: first_stage_config", str)
    if fs_target not in VQGAN_TARGETS:
        raise OriginalFileError(f"{where}: first stage {fs_target} is not a taming VQGAN")
    top_k = params.get("top_k")
    return ScaleSpec(
        where=where,
        model_target=target,
        transformer_target=ttarget,
        transformer=dict(tparams),
        n_scales=int(_get(params, "n_scales", f"{where}: model.params", int)),
        single_scale=int(_get(params, "single_scale", f"{where}: model.params", int)),
        redraw_prob=_get(params, "redraw_prob", f"{where}: model.params", (str, int, float)),
        top_k=None if top_k is None else int(top_k),
        conditioner=cond_target,
        first_stage=_get(fs, "params", f"{where}: first_stage_config", dict),
        extra={"ignored_tanh_out": bool(fs.get("params", {}).get("ddconfig", {}).get("tanh_out", False))},
    )


def vqgan_config(first_stage: dict[str, Any], where: str) -> VQGANConfig:
    """``first_stage_config.params`` -> VQGANConfig (``tanh_out`` is ignored, as taming ignores it)."""
    dd = _get(first_stage, "ddconfig", where, dict)
    if dd.get("double_z", False):
        raise OriginalFileError(f"{where}: ddconfig.double_z true is not a VQGAN first stage")
    if int(dd.get("z_channels", -1)) <= 0:
        raise OriginalFileError(f"{where}: ddconfig.z_channels missing")
    return VQGANConfig(
        in_channels=int(dd.get("in_channels", 3)),
        out_channels=int(dd.get("out_ch", 3)),
        base_channels=int(_get(dd, "ch", where, int)),
        channel_mult=tuple(int(c) for c in _get(dd, "ch_mult", where, list)),
        num_res_blocks=int(_get(dd, "num_res_blocks", where, int)),
        attn_resolutions=tuple(int(r) for r in dd.get("attn_resolutions", [])),
        resolution=int(_get(dd, "resolution", where, int)),
        z_channels=int(dd["z_channels"]),
        embed_dim=int(_get(first_stage, "embed_dim", where, int)),
        n_embed=int(_get(first_stage, "n_embed", where, int)),
        dropout=float(dd.get("dropout", 0.0)),
    )


def transformer_config(spec: ScaleSpec, prefix_len: int, n_tokens: int) -> TransformerConfig:
    """One scale's TransformerConfig from its yaml (x-transformers or minGPT options)."""
    t, where = spec.transformer, spec.where
    if spec.transformer_target == MINGPT:
        n_embd, n_head = int(t["n_embd"]), int(t["n_head"])
        if n_embd % n_head:
            raise OriginalFileError(f"{where}: n_embd {n_embd} is not a multiple of n_head {n_head}")
        vocab = int(t["vocab_size"])
        return TransformerConfig(
            kind=DECODER_ONLY, dim=n_embd, heads=n_head, dim_head=n_embd // n_head, depth=int(t["n_layer"]),
            decoder_depth=0, ff_mult=4, input_vocab_size=int(t.get("input_vocab_size") or vocab), vocab_size=vocab,
            context_len=int(t["block_size"]), target_len=n_tokens, qkv_bias=True,
            unmasked_prefix=int(t.get("n_unmasked", 0)),
        )
    if t.get("tie_token_emb", False) or t.get("wrap_decoder", False):
        raise OriginalFileError(f"{where}: tie_token_emb / wrap_decoder are not used by any release and not supported")
    if int(t["enc_heads"]) != int(t["dec_heads"]):
        raise OriginalFileError(f"{where}: enc_heads {t['enc_heads']} != dec_heads {t['dec_heads']} is not supported")
    residual = spec.transformer_target == RESIDUAL_XTRANSFORMER
    if residual:
        if int(t.get("scale_pos", 0)) != 0:
            raise OriginalFileError(f"{where}: scale_pos {t['scale_pos']} (the scale token must come first)")
        if int(t.get("xt_start", -1)) != prefix_len:
            raise OriginalFileError(f"{where}: xt_start {t.get('xt_start')} does not point behind the "
                                    f"{prefix_len} prefix tokens")
        if int(t.get("xt_size", n_tokens)) != n_tokens:
            raise OriginalFileError(f"{where}: xt_size {t.get('xt_size')} != {n_tokens} grid tokens")
    return TransformerConfig(
        kind=ENCODER_DECODER, dim=int(t["dim"]), heads=int(t["enc_heads"]), dim_head=X_DIM_HEAD,
        depth=int(t["enc_depth"]), decoder_depth=int(t["dec_depth"]), ff_mult=4,
        input_vocab_size=int(t["enc_num_tokens"]), vocab_size=int(t["dec_num_tokens"]),
        context_len=int(t["enc_max_seq_len"]), target_len=int(t["dec_max_seq_len"]), qkv_bias=False,
        residual=residual, residual_num_scalors=int(t.get("n_scales", spec.n_scales)) if residual else 0,
    )


def check_specs(specs: list[ScaleSpec]) -> None:
    """The per-scale yamls must describe one chain: same T, schedule, first stage, conditioning."""
    T = len(specs)
    first = specs[0]
    for s, spec in enumerate(specs, start=1):
        if spec.n_scales != T:
            raise OriginalFileError(f"{spec.where}: n_scales {spec.n_scales}, but the release lists {T} scales")
        if spec.single_scale != s:
            raise OriginalFileError(f"{spec.where}: single_scale {spec.single_scale}, expected {s} (scale order)")
        if spec.redraw_prob != first.redraw_prob:
            raise OriginalFileError(f"{spec.where}: redraw_prob {spec.redraw_prob!r} differs from scale 1's "
                                    f"{first.redraw_prob!r}")
        if spec.conditioner != first.conditioner:
            raise OriginalFileError(f"{spec.where}: conditioning differs from scale 1's")
        if {k: v for k, v in spec.first_stage.get("ddconfig", {}).items() if k != "tanh_out"} != \
                {k: v for k, v in first.first_stage.get("ddconfig", {}).items() if k != "tanh_out"} or \
                spec.first_stage.get("n_embed") != first.first_stage.get("n_embed"):
            raise OriginalFileError(f"{spec.where}: the first stage differs from scale 1's")
        if spec.decoder_only != (s == T):
            raise OriginalFileError(f"{spec.where}: only the top scale (scale {T}) may be decoder-only "
                                    f"(got {spec.model_target} for scale {s})")


def default_refine_passes(schedule_kind: str, n_scales: int) -> list[int]:
    """The inpainting script's chain lengths: geometric 3 per scale; custom 5, except 1 for the top."""
    if schedule_kind == "geometric":
        return [3] * n_scales
    return [5] * (n_scales - 1) + [1]


def model_config(specs: list[ScaleSpec], betas: list[float], vocab_size: int, name: str,
                 source: dict[str, Any] | None = None) -> ModelConfig:
    """All per-scale specs (scale 1 first) + exact betas + K -> a validated ModelConfig."""
    check_specs(specs)
    T = len(specs)
    vq = vqgan_config(specs[0].first_stage, specs[0].where)
    side = vq.resolution // vq.factor
    grid = (side, side)
    n_tokens = side * side
    conditional = specs[0].conditioner is not None
    cond = ConditioningConfig(kind="class", num_classes=CLASS_COUNT, class_names=None, shared_class_embedding=True,
                              null_condition=False) if conditional else ConditioningConfig()
    prefix_len = 1 + cond.prefix_length
    scales = [transformer_config(spec, prefix_len, n_tokens) for spec in specs]
    for s, (spec, sc) in enumerate(zip(specs, scales), start=1):
        if sc.vocab_size != vocab_size:
            raise OriginalFileError(f"{spec.where}: output vocabulary {sc.vocab_size} != {vocab_size} entries of "
                                    "the shrink list")
        if conditional and sc.input_vocab_size < CLASS_COUNT:
            raise OriginalFileError(f"{spec.where}: input vocabulary {sc.input_vocab_size} cannot hold the "
                                    f"{CLASS_COUNT} class ids that share it")
        if sc.kind == DECODER_ONLY and sc.context_len < prefix_len + n_tokens - 1:
            raise OriginalFileError(f"{spec.where}: block_size {sc.context_len} < {prefix_len + n_tokens - 1}")
        if sc.kind == ENCODER_DECODER and sc.target_len != n_tokens:
            raise OriginalFileError(f"{spec.where}: dec_max_seq_len {sc.target_len} != {n_tokens} grid tokens")
    schedule_kind = "geometric" if specs[0].redraw_prob == "geometric" else "custom"
    cfg = ModelConfig(
        name=name,
        vqgan=vq,
        scales=scales,
        schedule=ScheduleConfig(betas=[float(b) for b in betas], kind=schedule_kind),
        conditioning=cond,
        grid=grid,
        vocab_size=vocab_size,
        sampling=SamplingDefaults(
            temperature=[1.0] * T,
            top_k=[vocab_size] * T,
            top_p=[None] * T,
            refine_passes=default_refine_passes(schedule_kind, T),
        ),
        source=dict(source or {}),
    )
    try:
        cfg.validate()
    except ValueError as exc:
        raise OriginalFileError(f"{name}: the yaml configs give an inconsistent model: {exc}") from exc
    return cfg
