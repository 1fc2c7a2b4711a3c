"""The per-scale transformers.

Two kinds (see :class:`~imagebart_core.config.TransformerConfig`):

* :class:`EncoderDecoderScale` models ``p(x_s | x_{s+1}, c)``: a bidirectional encoder reads
  ``[s, condition, x_{s+1}]``; a causal decoder writes ``x_s`` token by token (raster order,
  starting from SOS = 0) and cross-attends to the encoder output.
* :class:`DecoderOnlyScale` models the top transition, whose input is pure noise: one causal stack
  over ``[s, condition, x_s]``.

Both are pre-norm (LayerNorm eps 1e-5), use ``scaled_dot_product_attention``, learned absolute
positions, and a GELU feed-forward of ``ff_mult * dim``. Autoregressive decoding keeps a KV
cache; the encoder's cross-attention keys/values are computed once per transition.

The scale token ``s`` indexes the same embedding table as the image tokens (as in the original
release); so do class ids when ``shared_class_embedding`` is set. Otherwise classes (plus one null
row) and text tokens have their own table ``cond_emb``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import DECODER_ONLY, ConditioningConfig, TransformerConfig
from .cpu_matmul import Linear

SOS_TOKEN = 0


class StepKernels:
    """How the token steps of a scale multiply by its matrices: here the modules' own products (separate q/k/v).

    The fast kernels for sampling (fused q/k/v, oneDNN-packed copies) are made by
    :func:`imagebart_core.fast_decode.step_kernels` and passed to ``prepare``; the networks here only call
    ``linear`` and ``qkv`` and never change their own weights.
    """

    def linear(self, module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        """``module(x)``: x [..., in] -> [..., out]."""
        return module(x)

    def qkv(self, attn: Attention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, L, D] -> q, k, v [B, H, L, dh]."""
        return (attn.split(attn.to_q(x)), *attn.project_kv(x))

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask=None, causal=False) -> torch.Tensor:
        """Softmax attention: q [B,H,Lq,dh], k/v [B,H,Lk,dh] -> [B,H,Lq,dh]; ``mask`` bool [Lq, Lk], True = attend."""
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)

    def cache_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype a decode state keeps keys/values in, for activations in ``dtype``: the same here."""
        return dtype

    @property
    def unpacked(self) -> StepKernels:
        """The kernels for passes outside the token loop (a decoder-only scale's prefix)."""
        return self


#: The modules' own products (training, teacher forcing, and any ``prepare`` not given faster kernels).
PLAIN = StepKernels()


class Attention(nn.Module):
    """Multi-head attention; q/k/v without bias unless ``qkv_bias``; the output projection has one."""

    def __init__(self, dim: int, heads: int, dim_head: int, qkv_bias: bool):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.to_q = Linear(dim, inner, bias=qkv_bias)
        self.to_k = Linear(dim, inner, bias=qkv_bias)
        self.to_v = Linear(dim, inner, bias=qkv_bias)
        self.to_out = Linear(inner, dim)

    def split(self, t: torch.Tensor) -> torch.Tensor:
        """[B, L, H*dh] -> [B, H, L, dh]."""
        b, n, _ = t.shape
        return t.view(b, n, self.heads, self.dim_head).transpose(1, 2)

    def project_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of ``context`` [B, L, D]: two [B, H, L, dh]."""
        return self.split(self.to_k(context)), self.split(self.to_v(context))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask=None, causal=False,
               kernels: StepKernels = PLAIN) -> torch.Tensor:
        """q [B,H,Lq,dh], k/v [B,H,Lk,dh] -> [B, Lq, D]. ``mask`` bool [Lq, Lk], True = attend."""
        out = kernels.attention(q, k, v, mask=mask, causal=causal)  # [B,H,Lq,dh]
        b, h, n, d = out.shape
        return kernels.linear(self.to_out, out.transpose(1, 2).reshape(b, n, h * d))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask=None, causal=False):
        """Full (non-incremental) attention of x [B, L, D] over itself or ``context``."""
        q = self.split(self.to_q(x))
        k, v = self.project_kv(x if context is None else context)
        return self.attend(q, k, v, mask=mask, causal=causal)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int):
        super().__init__()
        self.fc1 = Linear(dim, dim * mult)
        self.fc2 = Linear(dim * mult, dim)

    def forward(self, x: torch.Tensor, kernels: StepKernels = PLAIN) -> torch.Tensor:
        return kernels.linear(self.fc2, F.gelu(kernels.linear(self.fc1, x)))


class SelfAttentionBlock(nn.Module):
    """Pre-norm self-attention + feed-forward (encoder layers and decoder-only layers)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.attn_norm = nn.LayerNorm(cfg.dim)
        self.attn = Attention(cfg.dim, cfg.heads, cfg.dim_head, cfg.qkv_bias)
        self.ff_norm = nn.LayerNorm(cfg.dim)
        self.ff = FeedForward(cfg.dim, cfg.ff_mult)

    def forward(self, x: torch.Tensor, mask=None, causal=False) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), mask=mask, causal=causal)
        return x + self.ff(self.ff_norm(x))

    def step(self, x: torch.Tensor, cache: LayerCache, mask=None, kernels: StepKernels = PLAIN,
             at: StaticPosition | None = None) -> torch.Tensor:
        """Incremental: x [B, L, D] at positions cache.length .. +L, attending to the cache too; with ``at``, one
        position written at ``at.index`` and the whole (static-shape) cache attended under ``at.bias``."""
        q, k, v = kernels.qkv(self.attn, self.attn_norm(x))  # [B, H, L, dh] each
        k, v = cache.append(k, v) if at is None else cache.write(at.index, k, v)
        x = x + self.attn.attend(q, k, v, mask=mask if at is None else at.bias, kernels=kernels)
        return x + self.ff(self.ff_norm(x), kernels)


class DecoderBlock(nn.Module):
    """Pre-norm causal self-attention, cross-attention to the encoder, feed-forward."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.self_norm = nn.LayerNorm(cfg.dim)
        self.self_attn = Attention(cfg.dim, cfg.heads, cfg.dim_head, cfg.qkv_bias)
        self.cross_norm = nn.LayerNorm(cfg.dim)
        self.cross_attn = Attention(cfg.dim, cfg.heads, cfg.dim_head, cfg.qkv_bias)
        self.ff_norm = nn.LayerNorm(cfg.dim)
        self.ff = FeedForward(cfg.dim, cfg.ff_mult)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.self_norm(x), causal=True)
        x = x + self.cross_attn(self.cross_norm(x), context=context)
        return x + self.ff(self.ff_norm(x))

    def step(self, x: torch.Tensor, cache: LayerCache, cross_kv: tuple[torch.Tensor, torch.Tensor],
             mask: torch.Tensor | None = None, kernels: StepKernels = PLAIN,
             at: StaticPosition | None = None) -> torch.Tensor:
        """New positions x [B, L, D] (usually L = 1) after the cached ones; ``cross_kv`` are the encoder
        keys/values of this layer; ``mask`` bool [L, cached + L] is needed when L > 1 (causal). With ``at``, one
        position written at ``at.index`` and the whole (static-shape) cache attended under ``at.bias``."""
        q, k, v = kernels.qkv(self.self_attn, self.self_norm(x))  # [B, H, L, dh] each
        k, v = cache.append(k, v) if at is None else cache.write(at.index, k, v)
        x = x + self.self_attn.attend(q, k, v, mask=mask if at is None else at.bias, kernels=kernels)
        h = self.cross_norm(x)
        q = self.cross_attn.split(kernels.linear(self.cross_attn.to_q, h))
        x = x + self.cross_attn.attend(q, *cross_kv, kernels=kernels)
        return x + self.ff(self.ff_norm(x), kernels)


@dataclass
class LayerCache:
    """Preallocated keys/values of one layer: [B, H, capacity, dh] each, filled up to ``length``."""

    k: torch.Tensor
    v: torch.Tensor
    length: int = 0

    @classmethod
    def empty(cls, batch: int, heads: int, capacity: int, dim_head: int, like: torch.Tensor,
              dtype: torch.dtype | None = None) -> LayerCache:
        """Zeroed buffers on ``like``'s device, in ``dtype`` (default ``like``'s)."""
        shape = (batch, heads, capacity, dim_head)
        # zeros, not empty: a static-shape step multiplies the unwritten values by a zero weight (0 * NaN = NaN)
        return cls(like.new_zeros(shape, dtype=dtype), like.new_zeros(shape, dtype=dtype))

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k/v [B, H, L, dh] at the end; return views of everything cached so far."""
        n = k.shape[2]
        end = self.length + n
        if end > self.k.shape[2]:
            raise RuntimeError(f"KV cache overflow: {end} > capacity {self.k.shape[2]}")
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def write(self, index: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write one position's k/v [B, H, 1, dh] at ``index`` (int64 [1], a tensor: the same shapes at every
        step); return the whole buffers [B, H, capacity, dh] (the positions not yet written are masked by the
        caller). ``length`` is the caller's to keep."""
        self.k.index_copy_(2, index, k.to(self.k.dtype))
        self.v.index_copy_(2, index, v.to(self.v.dtype))
        return self.k, self.v


@dataclass
class StaticPosition:
    """Where a static-shape token step writes and what it may attend to: ``index`` int64 [1] (the cache position)
    and ``bias`` float [1, capacity] (0 up to and including ``index``, -inf after: an additive attention mask)."""

    index: torch.Tensor
    bias: torch.Tensor

    @classmethod
    def at(cls, index: torch.Tensor, capacity: int, dtype: torch.dtype) -> StaticPosition:
        keys = torch.arange(capacity, device=index.device)  # [capacity]
        bias = torch.where(keys <= index, 0.0, float("-inf")).to(dtype)  # [capacity]
        return cls(index, bias[None])  # [1, capacity]


@dataclass
class DecodeState:
    """Everything one autoregressive pass over a scale needs between token steps."""

    caches: list[LayerCache]
    x_in: torch.Tensor | None  # [B, N] int64 input level (for the residual term), or None
    cross_kv: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    residual: tuple[torch.Tensor, torch.Tensor] | None = None  # (factor [], offset [B, N, K]) once per transition
    prefix_logits: torch.Tensor | None = None  # decoder-only: logits for token 0 [B, K]
    kernels: StepKernels = PLAIN  # how its token steps multiply (see imagebart_core.fast_decode)


class _PrefixEmbedding(nn.Module):
    """Embeds ``[scale, condition]`` with the shared token table or a separate condition table."""

    def __init__(self, dim: int, cond: ConditioningConfig):
        super().__init__()
        self.cond_kind = cond.kind
        self.shared = cond.kind == "class" and cond.shared_class_embedding
        self.cond_emb: nn.Embedding | None = None
        if cond.kind == "class" and not self.shared:
            self.cond_emb = nn.Embedding(cond.num_classes + 1, dim)  # the last row is the null class
        elif cond.kind == "text":
            self.cond_emb = nn.Embedding(cond.text_vocab_size, dim)

    def forward(self, token_emb: nn.Embedding, scale: int, cond_tokens: torch.Tensor | None, batch: int):
        """-> [B, 1 + P, D]: the scale token then the condition tokens."""
        scale_ids = torch.full((batch, 1), scale, dtype=torch.long, device=token_emb.weight.device)
        parts = [token_emb(scale_ids)]
        if self.cond_kind != "none":
            if cond_tokens is None:
                raise ValueError("this model is conditional: a condition is required")
            table = token_emb if self.shared else self.cond_emb
            parts.append(table(cond_tokens.to(token_emb.weight.device)))
        elif cond_tokens is not None and cond_tokens.numel() > 0:
            raise ValueError("this model is unconditional: it takes no condition")
        return torch.cat(parts, dim=1)


class EncoderDecoderScale(nn.Module):
    """``p(x_s | x_{s+1}, c)``: bidirectional encoder + causal decoder with cross-attention."""

    #: Its decode state holds an encoder output worth keeping for a window visited again (see :meth:`fresh_state`).
    keeps_encoder_state = True

    def __init__(self, cfg: TransformerConfig, cond: ConditioningConfig, residual_alpha: float = 1.0):
        super().__init__()
        self.cfg = cfg
        self.prefix = _PrefixEmbedding(cfg.dim, cond)
        self.enc_token_emb = nn.Embedding(cfg.input_vocab_size, cfg.dim)
        self.enc_pos_emb = nn.Embedding(cfg.context_len, cfg.dim)
        self.encoder = nn.ModuleList(SelfAttentionBlock(cfg) for _ in range(cfg.depth))
        self.enc_norm = nn.LayerNorm(cfg.dim)
        self.dec_token_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.dec_pos_emb = nn.Embedding(cfg.target_len, cfg.dim)
        self.decoder = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.decoder_depth))
        self.dec_norm = nn.LayerNorm(cfg.dim)
        self.to_logits = Linear(cfg.dim, cfg.vocab_size)
        if cfg.residual:
            self.log_scalors = nn.Parameter(torch.zeros(cfg.residual_num_scalors))
        # alpha_s = 1 - beta_s of this transition, float32 (the residual term; not a weight)
        self.register_buffer("residual_alpha", torch.tensor(residual_alpha, dtype=torch.float32), persistent=False)

    # -- pieces -----------------------------------------------------------------------------------
    def encode(self, x_in: torch.Tensor, scale: int, cond_tokens: torch.Tensor | None) -> torch.Tensor:
        """[B, N] int64 input level -> encoder output [B, 1 + P + N, D] (final-normed)."""
        b, n = x_in.shape
        prefix = self.prefix(self.enc_token_emb, scale, cond_tokens, b)  # [B, 1+P, D]
        h = torch.cat([prefix, self.enc_token_emb(x_in)], dim=1)  # [B, L, D]
        if h.shape[1] > self.cfg.context_len:
            raise ValueError(f"encoder input of {h.shape[1]} tokens exceeds the trained {self.cfg.context_len}")
        h = h + self.enc_pos_emb.weight[: h.shape[1]]
        for block in self.encoder:
            h = block(h)
        return self.enc_norm(h)

    def residual(self, logits: torch.Tensor, x_in: torch.Tensor, scale: int) -> torch.Tensor:
        """ResidualScaled: logits * exp(log_scalors[s-1]) + log(alpha onehot(x_in) + (1-alpha)/K)."""
        if not self.cfg.residual:
            return logits
        gain, offset = self.residual_terms(x_in, scale, logits.dtype)
        return logits * gain + offset

    def residual_terms(self, x_in: torch.Tensor, scale: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The residual term's factor exp(log_scalors[s-1]) (scalar) and offset log(alpha onehot(x_in) +
        (1-alpha)/K) [B, N, K] in ``dtype`` for x_in int64 [B, N]."""
        alpha = self.residual_alpha
        k = self.cfg.vocab_size
        onehot = F.one_hot(x_in, k).to(torch.float32)  # [B, N, K]
        log_q = torch.log(alpha * onehot + (1.0 - alpha) * 1.0 / k)
        return torch.exp(self.log_scalors[scale - 1]), log_q.to(dtype)

    def forward(self, x_in, target, scale: int, cond_tokens=None) -> torch.Tensor:
        """Teacher-forced logits: x_in, target int64 [B, N] -> float [B, N, K]; position n scores target[n]."""
        enc = self.encode(x_in, scale, cond_tokens)
        b, n = target.shape
        dec_in = torch.cat([target.new_full((b, 1), SOS_TOKEN), target[:, :-1]], dim=1)  # [B, N]
        h = self.dec_token_emb(dec_in) + self.dec_pos_emb.weight[:n]
        for block in self.decoder:
            h = block(h, enc)
        logits = self.to_logits(self.dec_norm(h))  # [B, N, K]
        return self.residual(logits, x_in, scale)

    # -- autoregressive decoding -------------------------------------------------------------------
    def prepare(self, x_in: torch.Tensor, scale: int, cond_tokens=None, n_tokens: int | None = None,
                kernels: StepKernels = PLAIN) -> DecodeState:
        """Run the encoder once and precompute every layer's cross-attention keys/values; the token steps of
        the state run on ``kernels``."""
        enc = self.encode(x_in, scale, cond_tokens)  # [B, L, D]
        n = n_tokens or x_in.shape[1]
        b = x_in.shape[0]
        kv_dtype = kernels.cache_dtype(enc.dtype)
        caches = [LayerCache.empty(b, self.cfg.heads, n, self.cfg.dim_head, enc, kv_dtype) for _ in self.decoder]
        # contiguous [B, H, L, dh]: read at every token step, and a strided layout halves attention speed
        cross = [tuple(t.to(kv_dtype).contiguous() for t in blk.cross_attn.project_kv(enc)) for blk in self.decoder]
        residual = self.residual_terms(x_in, scale, enc.dtype) if self.cfg.residual else None
        return DecodeState(caches=caches, x_in=x_in, cross_kv=cross, residual=residual, kernels=kernels)

    def step_modules(self) -> list[nn.Module]:
        """The modules whose matrices a token step multiplies by (see :mod:`imagebart_core.fast_decode`)."""
        mods: list[nn.Module] = []
        for blk in self.decoder:
            mods += [blk.self_attn, blk.self_attn.to_out, blk.cross_attn.to_q, blk.cross_attn.to_out,
                     blk.ff.fc1, blk.ff.fc2]
        return mods + [self.to_logits]

    def step(self, state: DecodeState, n: int, prev: torch.Tensor | None, scale: int) -> torch.Tensor:
        """Logits [B, K] for token n given the previous token ``prev`` [B] (None at n = 0 = SOS)."""
        b = state.caches[0].k.shape[0]
        if prev is None:
            prev = torch.full((b,), SOS_TOKEN, dtype=torch.long, device=self.dec_pos_emb.weight.device)
        h = self.dec_token_emb(prev[:, None]) + self.dec_pos_emb.weight[n]  # [B, 1, D]
        offset = None if state.residual is None else state.residual[1][:, n : n + 1]  # [B, 1, K]
        return self._decode_position(state, h, offset)

    def step_at(self, state: DecodeState, index: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """:meth:`step` with the same tensor shapes at every token (for ``torch.compile`` and CUDA graphs): logits
        [B, K] for the token at ``index`` (int64 [1], a tensor) given the previous token ``prev`` int64 [B] (SOS at
        index 0). Writes the caches at ``index``; their ``length`` is the caller's to advance."""
        cache = state.caches[0]
        at = StaticPosition.at(index, cache.k.shape[2], cache.k.dtype)
        h = self.dec_token_emb(prev[:, None]) + self.dec_pos_emb(index)  # [B, 1, D]
        offset = None if state.residual is None else state.residual[1].index_select(1, index)  # [B, 1, K]
        return self._decode_position(state, h, offset, at)

    def _decode_position(self, state: DecodeState, h: torch.Tensor, offset: torch.Tensor | None,
                         at: StaticPosition | None = None) -> torch.Tensor:
        """One position's embedding h [B, 1, D] through the decoder (caches appended, or written ``at``) to logits
        [B, K], plus the residual term with this position's ``offset`` [B, 1, K] (see :meth:`residual`)."""
        for block, cache, kv in zip(self.decoder, state.caches, state.cross_kv):
            h = block.step(h, cache, kv, kernels=state.kernels, at=at)
        logits = state.kernels.linear(self.to_logits, self.dec_norm(h))  # [B, 1, K]
        if offset is not None:
            logits = logits * state.residual[0] + offset
        return logits[:, 0]

    def feed(self, state: DecodeState, inputs: torch.Tensor, scale: int) -> None:
        """Append decoder inputs [B, L] (SOS first when starting) to the cache in one causal pass.

        Afterwards ``step(state, cached, prev, scale)`` continues as if those inputs had been fed one by one.
        """
        start, n = state.caches[0].length, inputs.shape[1]
        if n == 0:
            return
        h = self.dec_token_emb(inputs) + self.dec_pos_emb.weight[start : start + n]  # [B, L, D]
        mask = chunk_mask(start, n, h.device)
        for block, cache, kv in zip(self.decoder, state.caches, state.cross_kv):
            h = block.step(h, cache, kv, mask=mask, kernels=state.kernels)

    def warm(self, state: DecodeState, written: torch.Tensor, scale: int) -> None:
        """Feed the tokens ``written`` [B, m] already in place before token m (SOS first), so that
        ``step(state, m, written[:, -1], scale)`` follows; a window's known prefix in one causal pass."""
        if written.shape[1] > 0:
            sos = torch.full_like(written[:, :1], SOS_TOKEN)
            self.feed(state, torch.cat([sos, written[:, :-1]], dim=1), scale)

    def fresh_state(self, state: DecodeState) -> DecodeState:
        """A new decode state over the same encoder output (empty self-attention caches)."""
        b = state.caches[0].k.shape[0]
        n = state.caches[0].k.shape[2]
        like = state.cross_kv[0][0]
        caches = [LayerCache.empty(b, self.cfg.heads, n, self.cfg.dim_head, like) for _ in self.decoder]
        return DecodeState(caches=caches, x_in=state.x_in, cross_kv=state.cross_kv, residual=state.residual,
                           kernels=state.kernels)


def chunk_mask(start: int, length: int, device=None) -> torch.Tensor:
    """bool [L, start + L], True = attend: L new positions after ``start`` cached ones, causal."""
    keys = torch.arange(start + length, device=device)
    queries = torch.arange(start, start + length, device=device)
    return keys[None, :] <= queries[:, None]


def prefix_mask(length: int, unmasked: int, device=None) -> torch.Tensor:
    """bool [L, L], True = attend: causal, except that the first ``unmasked`` positions see each other."""
    mask = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    if unmasked > 0:
        mask[:unmasked, :unmasked] = True
    return mask


class DecoderOnlyScale(nn.Module):
    """The top transition: a causal stack over ``[s, condition, x_s]`` (its input level is noise)."""

    #: No encoder: a window's state is cheap to prepare again.
    keeps_encoder_state = False

    def __init__(self, cfg: TransformerConfig, cond: ConditioningConfig):
        super().__init__()
        self.cfg = cfg
        self.prefix = _PrefixEmbedding(cfg.dim, cond)
        self.token_emb = nn.Embedding(cfg.input_vocab_size, cfg.dim)
        self.pos_emb = nn.Parameter(torch.zeros(1, cfg.context_len, cfg.dim))
        self.blocks = nn.ModuleList(SelfAttentionBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = Linear(cfg.dim, cfg.vocab_size, bias=False)

    def _mask(self, length: int, device) -> torch.Tensor:
        return prefix_mask(length, max(self.cfg.unmasked_prefix, 0), device)

    def forward(self, x_in, target, scale: int, cond_tokens=None) -> torch.Tensor:
        """Teacher-forced logits [B, N, K] for ``target`` [B, N]; ``x_in`` is ignored (pure noise)."""
        b, n = target.shape
        prefix = self.prefix(self.token_emb, scale, cond_tokens, b)  # [B, P1, D]
        p1 = prefix.shape[1]
        h = torch.cat([prefix, self.token_emb(target[:, :-1])], dim=1)  # [B, P1 + N - 1, D]
        length = h.shape[1]
        if length > self.cfg.context_len:
            raise ValueError(f"sequence of {length} tokens exceeds the trained {self.cfg.context_len}")
        h = h + self.pos_emb[:, :length]
        mask = self._mask(length, h.device)
        for block in self.blocks:
            h = block(h, mask=mask)
        return self.head(self.norm(h))[:, p1 - 1 :]

    def prepare(self, x_in, scale: int, cond_tokens=None, n_tokens: int | None = None,
                kernels: StepKernels = PLAIN) -> DecodeState:
        """Run the prefix once, filling the cache; its last position gives the logits of token 0. The token
        steps of the state run on ``kernels``."""
        b = x_in.shape[0]
        n = n_tokens if n_tokens is not None else x_in.shape[1]
        prefix = self.prefix(self.token_emb, scale, cond_tokens, b)  # [B, P1, D]
        p1 = prefix.shape[1]
        capacity = p1 + n - 1
        kv_dtype = kernels.cache_dtype(prefix.dtype)
        caches = [
            LayerCache.empty(b, self.cfg.heads, capacity, self.cfg.dim_head, prefix, kv_dtype) for _ in self.blocks
        ]
        h = prefix + self.pos_emb[:, :p1]
        mask = self._mask(p1, h.device)
        for block, cache in zip(self.blocks, caches):
            h = block.step(h, cache, mask=mask, kernels=kernels.unpacked)
        logits = self.head(self.norm(h[:, -1]))  # [B, K]
        return DecodeState(caches=caches, x_in=None, prefix_logits=logits, kernels=kernels)

    def step_modules(self) -> list[nn.Module]:
        """The modules whose matrices a token step multiplies by (see :mod:`imagebart_core.fast_decode`)."""
        mods: list[nn.Module] = []
        for blk in self.blocks:
            mods += [blk.attn, blk.attn.to_out, blk.ff.fc1, blk.ff.fc2]
        return mods + [self.head]

    def step(self, state: DecodeState, n: int, prev: torch.Tensor | None, scale: int) -> torch.Tensor:
        """Logits [B, K] for token n; ``prev`` [B] is token n-1 (None at n = 0)."""
        if n == 0:
            return state.prefix_logits
        pos = state.caches[0].length
        h = self.token_emb(prev[:, None]) + self.pos_emb[:, pos]  # [B, 1, D]
        return self._decode_position(state, h)

    def step_at(self, state: DecodeState, index: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """:meth:`step` with the same tensor shapes at every token (for ``torch.compile`` and CUDA graphs): logits
        [B, K] of the token after ``prev`` int64 [B], which goes in the cache at ``index`` (int64 [1], a tensor;
        the prefix fills the positions before token 1's input). Writes the caches at ``index``; their ``length``
        is the caller's to advance."""
        cache = state.caches[0]
        at = StaticPosition.at(index, cache.k.shape[2], cache.k.dtype)
        h = self.token_emb(prev[:, None]) + self.pos_emb.index_select(1, index)  # [B, 1, D]
        return self._decode_position(state, h, at)

    def _decode_position(self, state: DecodeState, h: torch.Tensor, at: StaticPosition | None = None) -> torch.Tensor:
        """One position's embedding h [B, 1, D] through the stack (caches appended, or written ``at``) to logits
        [B, K]."""
        for block, cache in zip(self.blocks, state.caches):
            h = block.step(h, cache, kernels=state.kernels, at=at)
        return state.kernels.linear(self.head, self.norm(h))[:, 0]

    def warm(self, state: DecodeState, written: torch.Tensor, scale: int) -> None:
        """Feed the tokens ``written`` [B, m] already in place before token m (the condition prefix stands
        where SOS would be), so that ``step(state, m, written[:, -1], scale)`` follows."""
        if written.shape[1] > 0:
            self.feed(state, written[:, :-1], scale)

    def feed(self, state: DecodeState, inputs: torch.Tensor, scale: int) -> None:
        """Append tokens [B, L] (x_s tokens 0..L-1 after the prefix) to the cache in one causal pass.

        Afterwards ``step(state, L + 1, prev=token L, scale)`` gives the logits of token L + 1.
        """
        start, n = state.caches[0].length, inputs.shape[1]
        if n == 0:
            return
        h = self.token_emb(inputs) + self.pos_emb[:, start : start + n]  # [B, L, D]
        mask = chunk_mask(start, n, h.device)
        for block, cache in zip(self.blocks, state.caches):
            h = block.step(h, cache, mask=mask, kernels=state.kernels)


def build_scale(cfg: TransformerConfig, cond: ConditioningConfig, residual_alpha: float = 1.0) -> nn.Module:
    """The network of one scale from its config."""
    if cfg.kind == DECODER_ONLY:
        return DecoderOnlyScale(cfg, cond)
    return EncoderDecoderScale(cfg, cond, residual_alpha)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """GPT-style initialisation: normal(0, std) for linear/embedding weights, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, DecoderOnlyScale):
            nn.init.normal_(m.pos_emb, 0.0, std)
