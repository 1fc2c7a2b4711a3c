"""The compression stage: a VQGAN of the taming-transformers family, with ImageBART's shrunk codebook.

The network maps an image ``[B, 3, H, W]`` in ``[-1, 1]`` to a grid of codebook ids ``[B, H/f, W/f]``
(``f = cfg.factor``) and back. The layout of parameters and buffers follows the original checkpoints
one to one (``encoder.down.{i}.block.{j}.conv1.weight``, ``quantize.embedding.weight``, ``quantize.used`` ...),
so an original ``state_dict`` (with the ``first_stage_model.`` prefix stripped and ``loss.*`` dropped) loads
with ``strict=True``.

Two kinds of code ids exist:

* **full ids** index the whole codebook, ``[0, n_embed)``;
* **shrunk ids** index the sorted list ``used`` of the codes the transformers know, ``[0, K)`` with
  ``K = len(used)``; ``full = used[shrunk]``.

Encoding picks the nearest code of the FULL codebook; a code outside ``used`` (an "outlier") has no shrunk
id and is replaced according to an outlier policy (see :meth:`VQGAN.to_shrunk`).

Only torch is needed; nothing here knows about ComfyUI.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import VQGANConfig

__all__ = ["VQGAN", "AttnBlock", "Decoder", "Encoder", "ResnetBlock", "VectorQuantizer"]

OUTLIER_POLICIES = ("nearest_used", "random")

# Rows of the [N, n_embed] distance matrix computed at once (bounds memory for large grids / codebooks).
_DISTANCE_CHUNK_ELEMENTS = 1 << 25


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm as in the original (32 groups, eps 1e-6, affine).

    Channel counts that 32 does not divide (only in toy configs) fall back to ``gcd(32, channels)`` groups.
    """
    groups = 32 if channels % 32 == 0 else math.gcd(32, channels)
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


def _swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    """norm1, swish, conv1 3x3, norm2, swish, dropout, conv2 3x3, plus a (1x1 ``nin_shortcut``) skip.

    ``[B, in_ch, H, W] -> [B, out_ch, H, W]``.
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_swish(self.norm1(x)))  # [B, out, H, W]
        h = self.conv2(self.dropout(_swish(self.norm2(h))))  # [B, out, H, W]
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)  # [B, in, H, W] -> [B, out, H, W]
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1 q/k/v/proj_out convs and a residual; ``[B,C,H,W] -> same``."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hn = self.norm(x)

        def tokens(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, 1, c, h * w).transpose(2, 3)  # [B, C, H, W] -> [B, 1, HW, C]

        q, k, v = tokens(self.q(hn)), tokens(self.k(hn)), tokens(self.v(hn))
        # softmax(q k^T * C^-0.5) v; the default SDPA scale is 1/sqrt(last dim) = C^-0.5
        out = F.scaled_dot_product_attention(q, k, v)  # [B, 1, HW, C]
        out = out.transpose(2, 3).reshape(b, c, h, w)  # [B, C, H, W]
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Asymmetric zero pad (right 1, bottom 1) then a stride-2 3x3 conv: ``[B,C,H,W] -> [B,C,H/2,W/2]``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0)  # [B, C, H+1, W+1]
        return self.conv(x)  # [B, C, H/2, W/2]


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv: ``[B,C,H,W] -> [B,C,2H,2W]``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # [B, C, 2H, 2W]
        return self.conv(x)


class _Mid(nn.Module):
    """block_1, attn_1, block_2 at the bottleneck (channels unchanged)."""

    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """``[B, in_channels, H, W] -> [B, z_channels, H/f, W/f]``."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        ch, mult = cfg.base_channels, tuple(cfg.channel_mult)
        self.num_levels = len(mult)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, kernel_size=3, stride=1, padding=1)
        in_mult = (1,) + mult
        res = cfg.resolution
        self.down = nn.ModuleList()
        block_in = ch
        for i in range(self.num_levels):
            level = nn.Module()
            level.block = nn.ModuleList()
            level.attn = nn.ModuleList()
            block_in = ch * in_mult[i]
            block_out = ch * mult[i]
            for _ in range(cfg.num_res_blocks):
                level.block.append(ResnetBlock(block_in, block_out, cfg.dropout))
                block_in = block_out
                if res in cfg.attn_resolutions:
                    level.attn.append(AttnBlock(block_in))
            if i != self.num_levels - 1:
                level.downsample = Downsample(block_in)
                res = res // 2
            self.down.append(level)
        self.mid = _Mid(block_in, cfg.dropout)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.z_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)  # [B, ch, H, W]
        for i, level in enumerate(self.down):
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if i != self.num_levels - 1:
                h = level.downsample(h)  # halves H, W
        h = self.mid(h)  # [B, ch*mult[-1], H/f, W/f]
        return self.conv_out(_swish(self.norm_out(h)))  # [B, z_channels, H/f, W/f]


class Decoder(nn.Module):
    """``[B, z_channels, h, w] -> [B, out_channels, h*f, w*f]``; raw conv output (no tanh, no clamp)."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        ch, mult = cfg.base_channels, tuple(cfg.channel_mult)
        self.num_levels = len(mult)
        block_in = ch * mult[-1]
        res = cfg.resolution // 2 ** (self.num_levels - 1)
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, kernel_size=3, stride=1, padding=1)
        self.mid = _Mid(block_in, cfg.dropout)
        levels: list[nn.Module] = []
        for i in reversed(range(self.num_levels)):
            level = nn.Module()
            level.block = nn.ModuleList()
            level.attn = nn.ModuleList()
            block_out = ch * mult[i]
            for _ in range(cfg.num_res_blocks + 1):
                level.block.append(ResnetBlock(block_in, block_out, cfg.dropout))
                block_in = block_out
                if res in cfg.attn_resolutions:
                    level.attn.append(AttnBlock(block_in))
            if i != 0:
                level.upsample = Upsample(block_in)
                res = res * 2
            levels.insert(0, level)  # keep up[i] == level i (the checkpoint's numbering)
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.out_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))  # [B, ch*mult[-1], h, w]
        for i in reversed(range(self.num_levels)):
            level = self.up[i]
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if i != 0:
                h = level.upsample(h)  # doubles H, W
        return self.conv_out(_swish(self.norm_out(h)))  # [B, out_channels, h*f, w*f]


def check_used(used: torch.Tensor, n_embed: int) -> torch.Tensor:
    if used.dim() != 1 or used.numel() == 0:
        raise ValueError(f"the shrink list `used` must be a non-empty 1-D tensor, got shape {tuple(used.shape)}")
    if used.dtype.is_floating_point or used.dtype == torch.bool:
        raise ValueError(f"the shrink list `used` must hold integer ids, got {used.dtype}")
    used = used.to(torch.int64)
    if used.device.type == "meta":  # shape-only construction (loading): checked when the values arrive
        return used
    if int(used.min()) < 0 or int(used.max()) >= n_embed:
        raise ValueError(
            f"the shrink list `used` must lie in [0, {n_embed}), got [{int(used.min())}, {int(used.max())}]"
        )
    if used.numel() > 1 and not bool((used[1:] > used[:-1]).all()):
        raise ValueError("the shrink list `used` must be sorted ascending without duplicates")
    return used


class VectorQuantizer(nn.Module):
    """Holds the codebook ``embedding.weight`` ``[n_embed, embed_dim]`` and the shrink list buffer ``used`` ``[K]``.

    Loading a state dict whose ``used`` has another length than the current one replaces the buffer (after
    checking it), so a model built with the default list can take any checkpoint's list.
    """

    def __init__(self, n_embed: int, embed_dim: int, used: torch.Tensor | None = None):
        super().__init__()
        self.n_embed = n_embed
        self.embed_dim = embed_dim
        self.embedding = nn.Embedding(n_embed, embed_dim)
        # taming's initialisation of the codebook
        self.embedding.weight.data.uniform_(-1.0 / n_embed, 1.0 / n_embed)
        used = torch.arange(n_embed, dtype=torch.int64) if used is None else check_used(torch.as_tensor(used), n_embed)
        self.register_buffer("used", used.clone(), persistent=True)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        key = prefix + "used"
        if key in state_dict:
            try:
                incoming = check_used(state_dict[key], self.n_embed)
            except ValueError as exc:
                error_msgs.append(f"{key}: {exc}")
            else:
                if incoming.shape != self.used.shape:
                    self.used = torch.empty_like(incoming, device=self.used.device)
                state_dict[key] = incoming
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class VQGAN(nn.Module):
    """A taming-style VQGAN (encoder, quantizer with a shrunk codebook, decoder).

    Args:
        cfg: the architecture.
        used: the shrink list, int64 ``[K]`` sorted unique full-codebook ids; ``None`` means all codes
            (``arange(n_embed)``). A checkpoint's ``quantize.used`` replaces it on ``load_state_dict``.
    """

    def __init__(self, cfg: VQGANConfig, used: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = VectorQuantizer(cfg.n_embed, cfg.embed_dim, used)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, kernel_size=1)

    # -- properties ---------------------------------------------------------------------------
    @property
    def used(self) -> torch.Tensor:
        """The shrink list, int64 ``[K]``."""
        return self.quantize.used

    @property
    def vocab_size(self) -> int:
        """K, the number of shrunk ids."""
        return int(self.quantize.used.numel())

    @property
    def factor(self) -> int:
        return self.cfg.factor

    @property
    def last_decoder_layer_weight(self) -> torch.Tensor:
        """``decoder.conv_out.weight`` ``[out_channels, C, 3, 3]``, for the adaptive GAN-loss weight."""
        return self.decoder.conv_out.weight

    # -- encoding -----------------------------------------------------------------------------
    def encode_prequant(self, images: torch.Tensor) -> torch.Tensor:
        """``quant_conv(encoder(images))``.

        Args:
            images: float ``[B, in_channels, H, W]`` in ``[-1, 1]``; H and W multiples of ``cfg.factor``.

        Returns:
            float ``[B, embed_dim, H/f, W/f]``, the continuous latents before quantisation.
        """
        if images.dim() != 4:
            raise ValueError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
        _, c, h, w = images.shape
        if c != self.cfg.in_channels:
            raise ValueError(f"images have {c} channels, the VQGAN expects {self.cfg.in_channels}")
        f = self.cfg.factor
        if h % f != 0 or w % f != 0:
            raise ValueError(f"image size {h}x{w} is not a multiple of the VQGAN factor {f}")
        return self.quant_conv(self.encoder(images))  # [B, embed_dim, H/f, W/f]

    @staticmethod
    def _nearest(prequant: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        """argmin over the rows of ``codebook`` [N, D] of ||z||^2 + ||e||^2 - 2 z.e; -> int64 [B, h, w]."""
        b, d, h, w = prequant.shape
        with torch.autocast(prequant.device.type, enabled=False):  # distances in fp32 also under a trainer's autocast
            z = prequant.detach().float().permute(0, 2, 3, 1).reshape(-1, d)  # [B*h*w, D]
            e = codebook.detach().float()  # [N, D]
            e_sq = (e**2).sum(dim=1)  # [N]
            rows = max(1, _DISTANCE_CHUNK_ELEMENTS // max(1, e.shape[0]))
            out = []
            for start in range(0, z.shape[0], rows):
                zc = z[start : start + rows]  # [n, D]
                dist = (zc**2).sum(dim=1, keepdim=True) + e_sq - 2.0 * (zc @ e.t())  # [n, N]
                out.append(dist.argmin(dim=1))
        ids = torch.cat(out) if out else z.new_zeros((0,), dtype=torch.int64)
        return ids.reshape(b, h, w)  # [B, h, w]

    def nearest_codes(self, prequant: torch.Tensor) -> torch.Tensor:
        """Nearest code of the FULL codebook per latent position.

        Args:
            prequant: float ``[B, embed_dim, h, w]``.

        Returns:
            int64 ``[B, h, w]`` full ids in ``[0, n_embed)`` (argmin of ||z||^2 + ||e||^2 - 2 z.e, in float32).
        """
        self._check_prequant(prequant)
        return self._nearest(prequant, self.quantize.embedding.weight)

    def to_shrunk(
        self,
        full_ids: torch.Tensor,
        prequant: torch.Tensor | None = None,
        outlier_policy: str = "nearest_used",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Map full ids to shrunk ids (positions in ``used``).

        Args:
            full_ids: int64 ``[B, h, w]`` (any shape works for ids that are all in ``used``) in ``[0, n_embed)``.
            prequant: float ``[B, embed_dim, h, w]``; needed by ``"nearest_used"`` when outliers exist.
            outlier_policy: what an id not in ``used`` becomes:
                ``"nearest_used"`` (deterministic): the shrunk id of the nearest code among the used ones;
                ``"random"`` (the original): one ``torch.randint(0, K, (n_outliers,), generator=generator)``
                call, written into the outlier positions in row-major order (batch 0 first).
            generator: the RNG of the ``"random"`` policy (``None``: torch's default CPU generator).

        Returns:
            int64 tensor shaped like ``full_ids``, values in ``[0, K)``.
        """
        if outlier_policy not in OUTLIER_POLICIES:
            raise ValueError(f"unknown outlier_policy {outlier_policy!r}; expected one of {OUTLIER_POLICIES}")
        used = self.quantize.used
        k = used.numel()
        ids = full_ids.to(torch.int64)
        pos = torch.searchsorted(used, ids.reshape(-1)).reshape(ids.shape)  # same shape as ids
        pos = pos.clamp(max=k - 1)
        outlier = used[pos] != ids  # True where the id is not in `used`
        if outlier_policy == "random":
            n = int(outlier.sum())
            gen_device = generator.device if generator is not None else torch.device("cpu")
            draw = torch.randint(0, k, (n,), generator=generator, device=gen_device)  # [n_outliers]
            pos = pos.masked_scatter(outlier, draw.to(pos.device))  # row-major fill of the outliers
            return pos
        if bool(outlier.any()):
            if prequant is None:
                raise ValueError("outlier_policy 'nearest_used' needs `prequant` when some ids are not in `used`")
            self._check_prequant(prequant)
            if tuple(prequant.shape[:1] + prequant.shape[2:]) != tuple(ids.shape):
                raise ValueError(
                    f"prequant {tuple(prequant.shape)} does not match the id grid {tuple(ids.shape)} ([B, D, h, w])"
                )
            near = self._nearest(prequant, self.quantize.embedding.weight[used])  # [B, h, w] in [0, K)
            pos = torch.where(outlier, near.to(pos.device), pos)
        return pos

    def shrunk_to_full(self, codes: torch.Tensor) -> torch.Tensor:
        """``used[codes]``: shrunk ids (any shape, in ``[0, K)``) -> int64 full ids of the same shape."""
        self._check_codes(codes)
        return self.quantize.used[codes.to(torch.int64)]

    def encode_to_codes(
        self,
        images: torch.Tensor,
        outlier_policy: str = "nearest_used",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Images float ``[B, 3, H, W]`` in ``[-1, 1]`` -> shrunk ids int64 ``[B, H/f, W/f]`` in ``[0, K)``."""
        prequant = self.encode_prequant(images)  # [B, D, h, w]
        full = self.nearest_codes(prequant)  # [B, h, w]
        return self.to_shrunk(full, prequant, outlier_policy=outlier_policy, generator=generator)

    # -- decoding -----------------------------------------------------------------------------
    def decode_full_ids(self, full_ids: torch.Tensor) -> torch.Tensor:
        """Full ids int64 ``[B, h, w]`` in ``[0, n_embed)`` -> float ``[B, out_channels, h*f, w*f]`` (unclamped)."""
        if full_ids.dim() != 3:
            raise ValueError(f"ids must be [B, h, w], got shape {tuple(full_ids.shape)}")
        if full_ids.numel() and (int(full_ids.min()) < 0 or int(full_ids.max()) >= self.cfg.n_embed):
            raise ValueError(f"full codebook ids must lie in [0, {self.cfg.n_embed})")
        z_q = self.quantize.embedding(full_ids.to(torch.int64))  # [B, h, w, D]
        z_q = z_q.permute(0, 3, 1, 2).contiguous()  # [B, D, h, w]
        return self.decode_latents(z_q)

    def decode_latents(self, z_q: torch.Tensor) -> torch.Tensor:
        """Quantised latents float ``[B, embed_dim, h, w]`` -> ``decoder(post_quant_conv(z_q))`` ``[B, 3, h*f, w*f]``.

        Decodes in channels-last (NHWC) memory when the decoder's weights are stored that way (see
        :func:`imagebart_core.fast_decode.decoder_layout`, applied by ``ImageBART.decode`` on CPU); the output is
        NCHW either way and agrees to float rounding.
        """
        if self.channels_last_decoding:
            z_q = z_q.contiguous(memory_format=torch.channels_last)
            return self.decoder(self.post_quant_conv(z_q)).contiguous()  # NHWC inside, NCHW out
        return self.decoder(self.post_quant_conv(z_q))

    @property
    def channels_last_decoding(self) -> bool:
        """The decoder's weights are stored channels-last (read from the weights, not a flag)."""
        w = self.decoder.conv_in.weight  # [C_out, z_channels, 3, 3]
        return w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()

    def decode_modules(self) -> list[nn.Module]:
        """The modules that decode latents (``post_quant_conv`` and the decoder)."""
        return [self.post_quant_conv, *self.decoder.modules()]

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode shrunk ids.

        Args:
            codes: int64 ``[B, h, w]``, values in ``[0, K)``.

        Returns:
            float ``[B, out_channels, h*f, w*f]``, roughly in ``[-1, 1]`` but NOT clamped (no tanh either).
        """
        if codes.dim() != 3:
            raise ValueError(f"codes must be [B, h, w], got shape {tuple(codes.shape)}")
        return self.decode_full_ids(self.shrunk_to_full(codes))  # used[codes] -> [B, h, w]

    # -- training -----------------------------------------------------------------------------
    def quantize_st(
        self, prequant: torch.Tensor, beta: float = 0.25
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantise with a straight-through gradient (taming's legacy loss form).

        Args:
            prequant: float ``[B, embed_dim, h, w]``.
            beta: weight of the second term.

        Returns:
            ``(z_q, loss, ids)``: z_q float ``[B, embed_dim, h, w]`` (value = nearest codes, gradient passes to
            ``prequant``), loss a float scalar ``mean((z_q.detach() - z)^2) + beta * mean((z_q - z.detach())^2)``,
            ids int64 ``[B, h, w]`` full-codebook ids.
        """
        z = prequant.float()  # a trainer's bf16 autocast leaves the quantiser and its loss in fp32
        ids = self.nearest_codes(z)  # [B, h, w]
        z_q = self.quantize.embedding(ids).permute(0, 3, 1, 2)  # [B, h, w, D] -> [B, D, h, w]
        loss = torch.mean((z_q.detach() - z) ** 2) + beta * torch.mean((z_q - z.detach()) ** 2)
        z_q = z + (z_q - z).detach()  # straight-through
        return z_q, loss, ids

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: images float ``[B, 3, H, W]`` -> (reconstruction ``[B, 3, H, W]``, vq loss scalar,
        full ids int64 ``[B, H/f, W/f]``)."""
        z = self.encode_prequant(images)  # [B, D, h, w]
        z_q, loss, ids = self.quantize_st(z)
        return self.decode_latents(z_q), loss, ids

    # -- checks -------------------------------------------------------------------------------
    def _check_prequant(self, prequant: torch.Tensor) -> None:
        if prequant.dim() != 4 or prequant.shape[1] != self.cfg.embed_dim:
            raise ValueError(f"prequant must be [B, {self.cfg.embed_dim}, h, w], got shape {tuple(prequant.shape)}")

    def _check_codes(self, codes: torch.Tensor) -> None:
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
        k = self.vocab_size
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= k):
            raise ValueError(f"shrunk code ids must lie in [0, {k}), got [{int(codes.min())}, {int(codes.max())}]")
