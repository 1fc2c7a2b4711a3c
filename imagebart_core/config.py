"""Configuration dataclasses for an ImageBART model, with a JSON round trip.

Indexing used throughout the library (the paper's):

* level 1 holds the clean VQGAN codes, level ``T`` pure noise (uniform codes);
* a model has ``n_scales = T - 1`` transformers; **scale s** (1-based) models the transition
  from level ``s + 1`` to level ``s``, i.e. ``p(x_s | x_{s+1})``. Scale 1 writes the clean codes,
  scale ``n_scales`` (the "top" scale) starts from noise. The original CompVis code calls
  the same network ``scale{s}.ckpt`` and feeds ``s`` as its scale token.
* Per-scale lists (temperatures, top-k, ...) are always ordered scale 1 first.

The whole :class:`ModelConfig` is stored as JSON in the native model file, so a model can be
rebuilt from the file alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .schedule import geometric_betas

#: Version of the native ``.safetensors`` model-file layout. Bump on incompatible changes.
FORMAT_VERSION = 1

ENCODER_DECODER = "encoder_decoder"
DECODER_ONLY = "decoder_only"


@dataclass
class VQGANConfig:
    """The compression stage (taming-transformers VQGAN family).

    The image side is ``2 ** (len(channel_mult) - 1)`` (the ``factor``) times the token grid.
    """

    in_channels: int = 3
    out_channels: int = 3
    base_channels: int = 128  # "ch": channels after conv_in
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # one entry per resolution level
    num_res_blocks: int = 2  # per encoder level (the decoder has one more)
    attn_resolutions: tuple[int, ...] = (16,)  # nominal resolutions that get self-attention
    resolution: int = 256  # nominal training resolution; only decides where attention sits
    z_channels: int = 256
    embed_dim: int = 256  # codebook vector size
    n_embed: int = 1024  # full codebook size (before shrinking)
    dropout: float = 0.0

    @property
    def factor(self) -> int:
        """Pixels per token along each side."""
        return 2 ** (len(self.channel_mult) - 1)


@dataclass
class TransformerConfig:
    """One scale's network.

    ``kind == "encoder_decoder"``: a bidirectional encoder over ``[scale, condition, x_{s+1}]``
    and a causal decoder (cross-attending to the encoder) that writes ``x_s``; ``depth`` is the
    encoder depth and ``decoder_depth`` the decoder's. ``kind == "decoder_only"`` (the top scale,
    whose input is pure noise): one causal stack over ``[scale, condition, x_s]``, ``depth``
    layers, ``decoder_depth`` unused.
    """

    kind: str = ENCODER_DECODER
    dim: int = 512
    heads: int = 8
    dim_head: int = 64  # attention inner width is heads * dim_head (independent of dim)
    depth: int = 8
    decoder_depth: int = 4
    ff_mult: int = 4
    input_vocab_size: int = 1024  # token table shared by the scale token, x tokens (and shared class ids)
    vocab_size: int = 1024  # K, the output vocabulary
    context_len: int = 257  # positions of the encoder (enc-dec) or of the whole stack (decoder-only)
    target_len: int = 256  # decoder positions (enc-dec): tokens of one trained grid
    qkv_bias: bool = False  # False for the x-transformers scales, True for the minGPT scales
    residual: bool = False  # "ResidualScaled": logits * exp(log_scalor) + log q(x_{s+1} | x_s = k)
    residual_num_scalors: int = 0  # length of the learned log_scalors vector (residual only)
    unmasked_prefix: int = 0  # decoder-only: leading positions that attend to each other freely


@dataclass
class ScheduleConfig:
    """The fixed multinomial forward process.

    ``betas[s]`` (s = 1..n_scales) is the redraw probability of the step from level ``s`` to
    level ``s + 1``; ``betas[0] = 0`` stands for level 1 (the clean codes). The last beta is 1, so
    the top level is uniform noise. These are the original code's ``temperature_range``.
    """

    betas: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    kind: str = "geometric"  # provenance: geometric | custom (metric-derived) | alpha_bar | explicit


@dataclass
class ConditioningConfig:
    """How a condition enters every scale: as tokens prepended after the scale token."""

    kind: str = "none"  # none | class | text
    num_classes: int = 0
    class_names: list[str] | None = None  # None with 1000 classes means the ImageNet names
    shared_class_embedding: bool = False  # original cIN: class ids index the image-token table
    text_vocab_size: int = 49408  # CLIP BPE vocabulary (len(text_token_ids) + 1 with a compact vocabulary)
    text_length: int = 77  # CLIP context length
    # A compact text vocabulary (small models): the sorted CLIP ids the model knows; tokens become their
    # position + 1, and 0 stands for padding and unknown ids. None = the whole CLIP vocabulary.
    text_token_ids: list[int] | None = None
    null_condition: bool = False  # trained with condition dropout: an unconditional row exists

    @property
    def prefix_length(self) -> int:
        """Condition tokens per sequence (the scale token not counted)."""
        if self.kind == "class":
            return 1
        if self.kind == "text":
            return self.text_length
        return 0


@dataclass
class SamplingDefaults:
    """Per-scale defaults (scale 1 first). ``None`` in top_k / top_p means no truncation."""

    temperature: list[float] = field(default_factory=list)
    top_k: list[int | None] = field(default_factory=list)
    top_p: list[float | None] = field(default_factory=list)
    refine_passes: list[int] = field(default_factory=list)  # masked-refinement passes per scale


@dataclass
class ModelConfig:
    """A whole ImageBART model: compression stage, schedule, one transformer per scale."""

    name: str = "imagebart"
    vqgan: VQGANConfig = field(default_factory=VQGANConfig)
    scales: list[TransformerConfig] = field(default_factory=list)  # scale 1 first
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    grid: tuple[int, int] = (16, 16)  # trained token grid (h, w)
    vocab_size: int = 1024  # K: size of the shrunk codebook the transformers use
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)
    source: dict[str, Any] = field(default_factory=dict)  # provenance (converter, trainer, ...)

    @property
    def n_scales(self) -> int:
        return len(self.scales)

    @property
    def num_levels(self) -> int:
        """T: levels 1 (clean) .. T (noise)."""
        return len(self.scales) + 1

    @property
    def prefix_length(self) -> int:
        """Tokens before the image tokens in every scale: the scale token plus the condition."""
        return 1 + self.conditioning.prefix_length

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistency."""
        s = self.n_scales
        if s < 1:
            raise ValueError("a model needs at least one scale")
        if len(self.schedule.betas) != s + 1:
            raise ValueError(f"schedule has {len(self.schedule.betas)} betas, expected n_scales + 1 = {s + 1}")
        if self.schedule.betas[0] != 0.0:
            raise ValueError("betas[0] must be 0 (level 1 is the clean codes)")
        if abs(self.schedule.betas[-1] - 1.0) > 1e-6:
            raise ValueError("the last beta must be 1 so the top level is uniform noise")
        if any(not 0.0 <= b <= 1.0 for b in self.schedule.betas):
            raise ValueError("betas must lie in [0, 1]")
        n_tokens = self.grid[0] * self.grid[1]
        for i, sc in enumerate(self.scales, start=1):
            if sc.kind not in (ENCODER_DECODER, DECODER_ONLY):
                raise ValueError(f"scale {i}: unknown kind {sc.kind!r}")
            if sc.vocab_size != self.vocab_size:
                raise ValueError(f"scale {i}: vocab_size {sc.vocab_size} != model vocab_size {self.vocab_size}")
            if sc.input_vocab_size < max(self.vocab_size, s + 1):
                raise ValueError(f"scale {i}: input_vocab_size {sc.input_vocab_size} cannot hold the tokens")
            if sc.kind == ENCODER_DECODER:
                if sc.context_len < self.prefix_length + n_tokens:
                    raise ValueError(f"scale {i}: context_len {sc.context_len} < prefix + grid tokens")
                if sc.target_len < n_tokens:
                    raise ValueError(f"scale {i}: target_len {sc.target_len} < grid tokens {n_tokens}")
            else:
                if sc.context_len < self.prefix_length + n_tokens - 1:
                    raise ValueError(f"scale {i}: context_len {sc.context_len} < prefix + grid tokens - 1")
        if self.vocab_size > self.vqgan.n_embed:
            raise ValueError("vocab_size (shrunk codebook) cannot exceed the VQGAN's n_embed")
        cond = self.conditioning
        if cond.kind not in ("none", "class", "text"):
            raise ValueError(f"unknown conditioning kind {cond.kind!r}")
        if cond.kind == "class" and cond.num_classes < 1:
            raise ValueError("class conditioning needs num_classes >= 1")
        if cond.text_token_ids is not None:
            ids = cond.text_token_ids
            if any(b <= a for a, b in zip(ids, ids[1:])) or cond.text_vocab_size != len(ids) + 1:
                raise ValueError("text_token_ids must be sorted and unique, with text_vocab_size = len + 1")
        if cond.class_names is not None and len(cond.class_names) != cond.num_classes:
            raise ValueError("class_names must have num_classes entries")
        for name in ("temperature", "top_k", "top_p", "refine_passes"):
            values = getattr(self.sampling, name)
            if values and len(values) != s:
                raise ValueError(f"sampling.{name} has {len(values)} entries, expected {s}")

    # -- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        d = dict(data)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        return cls(
            name=d.get("name", "imagebart"),
            vqgan=from_plain(VQGANConfig, d.get("vqgan", {})),
            scales=[from_plain(TransformerConfig, s) for s in d.get("scales", [])],
            schedule=from_plain(ScheduleConfig, d.get("schedule", {})),
            conditioning=from_plain(ConditioningConfig, d.get("conditioning", {})),
            grid=tuple(d.get("grid", (16, 16))),
            vocab_size=int(d.get("vocab_size", 1024)),
            sampling=from_plain(SamplingDefaults, d.get("sampling", {})),
            source=dict(d.get("source", {})),
        )

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _to_plain(v) for k, v in obj.items()}
    return obj


def from_plain(cls: type, data: dict[str, Any]) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    kwargs = {}
    for key, value in data.items():
        default = getattr(cls(), key) if names[key].default_factory is dataclasses.MISSING else None
        kwargs[key] = tuple(value) if isinstance(default, tuple) else value
    return cls(**kwargs)


def chain_scales(
    n_scales: int,
    *,
    vocab_size: int,
    n_tokens: int,
    prefix_length: int,
    dim: int,
    heads: int,
    dim_head: int,
    depth: int,
    decoder_depth: int,
    top_dim: int | None = None,
    top_heads: int | None = None,
    top_dim_head: int | None = None,
    top_depth: int | None = None,
    residual: bool = False,
) -> list[TransformerConfig]:
    """Configs of a new chain (scale 1 first): encoder-decoder scales, then a decoder-only top scale.

    ``prefix_length`` counts the scale token and the condition tokens; the top scale's prefix attends to
    itself freely. ``top_*`` default to the encoder-decoder values.
    """
    scales = []
    for s in range(1, n_scales + 1):
        top = s == n_scales
        scales.append(
            TransformerConfig(
                kind=DECODER_ONLY if top else ENCODER_DECODER,
                dim=(top_dim or dim) if top else dim,
                heads=(top_heads or heads) if top else heads,
                dim_head=(top_dim_head or dim_head) if top else dim_head,
                depth=(top_depth or depth) if top else depth,
                decoder_depth=0 if top else decoder_depth,
                input_vocab_size=max(vocab_size, n_scales + 1),
                vocab_size=vocab_size,
                context_len=prefix_length + n_tokens,
                target_len=n_tokens,
                qkv_bias=top,
                residual=residual and not top,
                residual_num_scalors=n_scales if residual and not top else 0,
                unmasked_prefix=prefix_length if top else 0,
            )
        )
    return scales


def tiny_config(
    *,
    n_scales: int = 2,
    vocab_size: int = 32,
    grid: tuple[int, int] = (4, 4),
    conditioning: str = "none",
    num_classes: int = 4,
    residual: bool = False,
    n_embed: int = 48,
    dim: int = 32,
) -> ModelConfig:
    """A very small model config for tests and benchmarks of the machinery (random weights).

    The VQGAN has 2 down-samplings (factor 4): a ``grid`` of (4, 4) means 16x16 pixel images.
    """
    cond = ConditioningConfig(kind=conditioning)
    if conditioning == "class":
        cond.num_classes = num_classes
        cond.class_names = [f"class_{i}" for i in range(num_classes)]
        cond.null_condition = True
    elif conditioning == "text":
        cond.text_length = 8
        cond.null_condition = True
    scales = chain_scales(n_scales, vocab_size=vocab_size, n_tokens=grid[0] * grid[1],
                          prefix_length=1 + cond.prefix_length, dim=dim, heads=2, dim_head=16, depth=2,
                          decoder_depth=1, residual=residual)
    betas = geometric_betas(n_scales)  # float32 values, like every schedule
    cfg = ModelConfig(
        name="tiny",
        vqgan=VQGANConfig(
            base_channels=16,
            channel_mult=(1, 2, 2),
            num_res_blocks=1,
            attn_resolutions=(4,),
            resolution=grid[0] * 4,
            z_channels=8,
            embed_dim=8,
            n_embed=n_embed,
        ),
        scales=scales,
        schedule=ScheduleConfig(betas=betas, kind="geometric"),
        conditioning=cond,
        grid=grid,
        vocab_size=vocab_size,
        sampling=SamplingDefaults(
            temperature=[1.0] * n_scales,
            top_k=[None] * n_scales,
            top_p=[None] * n_scales,
            refine_passes=[2] * n_scales,
        ),
        source={"kind": "random", "note": "tiny random-weight model for tests"},
    )
    cfg.validate()
    return cfg
