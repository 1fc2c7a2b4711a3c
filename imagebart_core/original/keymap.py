"""Original state_dict names -> names of the native model (``imagebart_core``).

Original layouts (see the reference sheet, section 2.3):

* x-transformers encoder-decoder scales (``transformer.*``)::

    encoder.token_emb.weight                         -> enc_token_emb.weight
    encoder.pos_emb.emb.weight                       -> enc_pos_emb.weight
    encoder.attn_layers.layers.{2i}.0.*              -> encoder.{i}.attn_norm.*
    encoder.attn_layers.layers.{2i}.1.to_{q,k,v,out} -> encoder.{i}.attn.to_{q,k,v,out}
    encoder.attn_layers.layers.{2i+1}.0.*            -> encoder.{i}.ff_norm.*
    encoder.attn_layers.layers.{2i+1}.1.net.0.0.*    -> encoder.{i}.ff.fc1.*
    encoder.attn_layers.layers.{2i+1}.1.net.2.*      -> encoder.{i}.ff.fc2.*
    encoder.norm.*                                   -> enc_norm.*
    encoder.to_logits.*                              -> (dropped: never used by the original)
    decoder.token_emb / pos_emb.emb / norm / to_logits -> dec_token_emb / dec_pos_emb / dec_norm / to_logits
    decoder.attn_layers.layers.{3i}   (self)  .0 / .1 -> decoder.{i}.self_norm / self_attn
    decoder.attn_layers.layers.{3i+1} (cross) .0 / .1 -> decoder.{i}.cross_norm / cross_attn
    decoder.attn_layers.layers.{3i+2} (ff)    .0 / .1 -> decoder.{i}.ff_norm / ff (fc1, fc2)
    log_scalors                                      -> log_scalors

* minGPT decoder-only top scale::

    tok_emb.weight -> token_emb.weight;  pos_emb -> pos_emb;  ln_f -> norm;  head -> head
    blocks.{n}.ln1 / ln2 -> blocks.{n}.attn_norm / ff_norm
    blocks.{n}.attn.{query,key,value,proj} -> blocks.{n}.attn.{to_q,to_k,to_v,to_out}
    blocks.{n}.mlp.0 / mlp.2 -> blocks.{n}.ff.fc1 / ff.fc2
    blocks.{n}.attn.mask -> (dropped; checked against the native causal/prefix mask)

* VQGAN: ``first_stage_model.X`` (scale checkpoints) or ``X`` (``vqgan/*.ckpt``) -> ``vqgan.X``;
  ``loss.*`` is ignored.

EMA copies are stored as ``transformer_ema.<name with every '.' removed>``.
"""

from __future__ import annotations

import re

DROP = None  # marker: the original tensor has no counterpart and is not needed

_ATTN = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out"}
_GPT_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj": "to_out"}

_ENC_LAYER = re.compile(r"^encoder\.attn_layers\.layers\.(\d+)\.([01])\.(.+)$")
_DEC_LAYER = re.compile(r"^decoder\.attn_layers\.layers\.(\d+)\.([01])\.(.+)$")
_GPT_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


class KeyMapError(KeyError):
    """An original key that the map does not know."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


def _ff(rest: str) -> str | None:
    if rest.startswith("net.0.0."):
        return "fc1." + rest[len("net.0.0."):]
    if rest.startswith("net.2."):
        return "fc2." + rest[len("net.2."):]
    return None


def _attn(rest: str, table: dict[str, str]) -> str | None:
    head, _, tail = rest.partition(".")
    if head in table and tail in ("weight", "bias"):
        return f"{table[head]}.{tail}"
    return None


def xtransformer_key(name: str) -> str | None:
    """Map one ``transformer.``-stripped key of an encoder-decoder scale; ``DROP`` for unused tensors.

    Raises KeyMapError for a key outside the known layout.
    """
    fixed = {
        "encoder.token_emb.weight": "enc_token_emb.weight",
        "encoder.pos_emb.emb.weight": "enc_pos_emb.weight",
        "encoder.norm.weight": "enc_norm.weight",
        "encoder.norm.bias": "enc_norm.bias",
        "encoder.to_logits.weight": DROP,
        "encoder.to_logits.bias": DROP,
        "decoder.token_emb.weight": "dec_token_emb.weight",
        "decoder.pos_emb.emb.weight": "dec_pos_emb.weight",
        "decoder.norm.weight": "dec_norm.weight",
        "decoder.norm.bias": "dec_norm.bias",
        "decoder.to_logits.weight": "to_logits.weight",
        "decoder.to_logits.bias": "to_logits.bias",
        "log_scalors": "log_scalors",
    }
    if name in fixed:
        return fixed[name]
    m = _ENC_LAYER.match(name)
    if m:
        idx, part, rest = int(m.group(1)), m.group(2), m.group(3)
        i, kind = divmod(idx, 2)  # layers alternate attention, feed-forward
        if part == "0" and rest in ("weight", "bias"):
            return f"encoder.{i}.{'attn_norm' if kind == 0 else 'ff_norm'}.{rest}"
        if part == "1":
            sub = _attn(rest, _ATTN) if kind == 0 else _ff(rest)
            if sub is not None:
                return f"encoder.{i}.{'attn' if kind == 0 else 'ff'}.{sub}"
    m = _DEC_LAYER.match(name)
    if m:
        idx, part, rest = int(m.group(1)), m.group(2), m.group(3)
        i, kind = divmod(idx, 3)  # self-attention, cross-attention, feed-forward
        norm = ("self_norm", "cross_norm", "ff_norm")[kind]
        block = ("self_attn", "cross_attn", "ff")[kind]
        if part == "0" and rest in ("weight", "bias"):
            return f"decoder.{i}.{norm}.{rest}"
        if part == "1":
            sub = _attn(rest, _ATTN) if kind < 2 else _ff(rest)
            if sub is not None:
                return f"decoder.{i}.{block}.{sub}"
    raise KeyMapError(f"unknown x-transformers key transformer.{name}")


def mingpt_key(name: str) -> str | None:
    """Map one ``transformer.``-stripped key of a minGPT scale; ``DROP`` for the mask buffers."""
    fixed = {
        "tok_emb.weight": "token_emb.weight",
        "pos_emb": "pos_emb",
        "ln_f.weight": "norm.weight",
        "ln_f.bias": "norm.bias",
        "head.weight": "head.weight",
    }
    if name in fixed:
        return fixed[name]
    m = _GPT_BLOCK.match(name)
    if m:
        n, rest = int(m.group(1)), m.group(2)
        if rest == "attn.mask":
            return DROP
        for old, new in (("ln1.", "attn_norm."), ("ln2.", "ff_norm.")):
            if rest.startswith(old) and rest[len(old):] in ("weight", "bias"):
                return f"blocks.{n}.{new}{rest[len(old):]}"
        if rest.startswith("attn."):
            sub = _attn(rest[len("attn."):], _GPT_ATTN)
            if sub is not None:
                return f"blocks.{n}.attn.{sub}"
        for old, new in (("mlp.0.", "ff.fc1."), ("mlp.2.", "ff.fc2.")):
            if rest.startswith(old) and rest[len(old):] in ("weight", "bias"):
                return f"blocks.{n}.{new}{rest[len(old):]}"
    raise KeyMapError(f"unknown minGPT key transformer.{name}")


def is_mask_buffer(name: str) -> bool:
    """True for the minGPT causal-mask buffers (``blocks.N.attn.mask``), which have no EMA copy."""
    return bool(re.match(r"^blocks\.\d+\.attn\.mask$", name))


def transformer_key(name: str, decoder_only: bool) -> str | None:
    """Native key (relative to ``scales.{s-1}.``) of a ``transformer.``-stripped original key."""
    return mingpt_key(name) if decoder_only else xtransformer_key(name)


def ema_flat_name(name: str) -> str:
    """``transformer_ema`` buffer name of a transformer parameter: the name with every '.' removed."""
    return name.replace(".", "")


def vqgan_key(name: str) -> str | None:
    """Native key of an original VQGAN key (prefix already stripped); ``DROP`` for ``loss.*``."""
    if name.startswith("loss."):
        return DROP
    return "vqgan." + name
