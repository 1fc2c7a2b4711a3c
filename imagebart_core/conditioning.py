"""Conditions: class labels (ImageNet names included) and text prompts (CLIP BPE tokens).

A condition enters every scale's transformer as tokens prepended after the scale token
(``[scale, condition..., x]``, see :class:`~imagebart_core.config.ConditioningConfig`):

* ``kind == "class"``: one token per item, the class index ``0 .. num_classes - 1`` (the original
  cIN models feed the raw ImageNet label). Models trained with condition dropout
  (``null_condition``) have one extra row, index ``num_classes``, for "no class".
* ``kind == "text"``: ``text_length`` (77) tokens per item from OpenAI CLIP's BPE tokenizer
  (open_clip's ``SimpleTokenizer``; vocabulary 49408, start-of-text 49406, end-of-text 49407,
  zero padding). The unconditional text is the tokenization of the empty string.

Only the tokenizer is used (no CLIP weights, no network). ``open_clip`` is imported lazily, so
importing this module stays light. This module never imports ComfyUI.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import ConditioningConfig

logger = logging.getLogger(__name__)

__all__ = [
    "NULL_LABEL",
    "ClassTable",
    "Condition",
    "class_condition",
    "imagenet_class_names",
    "null_condition",
    "ignored_words",
    "prompt_words",
    "text_condition",
    "text_vocabulary",
]

#: Label of an unconditional row.
NULL_LABEL = "(unconditional)"

_DATA_DIR = Path(__file__).resolve().parent / "data"
_INT_RE = re.compile(r"[+-]?\d+")


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ILSVRC-2012 class names in label order (0 = "tench", 207 = "golden retriever").

    Read from ``imagebart_core/data/imagenet_classes.json`` (written by
    ``scripts/make_imagenet_classes.py``).
    """
    path = _DATA_DIR / "imagenet_classes.json"
    names = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(names, list) or len(names) != 1000:
        raise RuntimeError(
            f"{path} must hold a list of 1000 class names; regenerate it with scripts/make_imagenet_classes.py"
        )
    return tuple(str(n) for n in names)


def _normalize(text: str) -> str:
    """Case-folded, underscores as spaces, single spaces."""
    return " ".join(text.replace("_", " ").split()).casefold()


class ClassTable:
    """Class names of a class-conditional model and lookup of user input (index or name).

    Built from a :class:`ConditioningConfig`: its ``class_names``; when those are ``None`` and
    ``num_classes == 1000``, the ImageNet names; otherwise ``"class_<i>"``.
    """

    def __init__(self, cfg: ConditioningConfig):
        if cfg.num_classes < 1:
            raise ValueError(
                f"the model has no classes (conditioning kind {cfg.kind!r}, num_classes {cfg.num_classes})"
            )
        if cfg.class_names is not None:
            names = [str(n) for n in cfg.class_names]
            if len(names) != cfg.num_classes:
                raise ValueError(f"class_names has {len(names)} entries but num_classes is {cfg.num_classes}")
        elif cfg.num_classes == 1000:
            names = list(imagenet_class_names())
        else:
            names = [f"class_{i}" for i in range(cfg.num_classes)]
        self._names = tuple(names)
        # normalized full name / synonym part -> class indices (sorted, unique)
        self._full: dict[str, list[int]] = {}
        self._parts: dict[str, list[int]] = {}
        for i, name in enumerate(self._names):
            _add(self._full, _normalize(name), i)
            for part in name.split(","):
                if part.strip():
                    _add(self._parts, _normalize(part), i)

    @property
    def names(self) -> tuple[str, ...]:
        """Class names, index order."""
        return self._names

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"ClassTable({len(self)} classes)"

    def resolve(self, value: int | str) -> int:
        """The class index for ``value``.

        Accepts an int index, a string of digits, or a name: exact match first (case-sensitive,
        then case-insensitive), then any comma-separated synonym part of a name, then a unique
        prefix of a name or part. Raises ``ValueError`` for out-of-range indices and for unknown or
        ambiguous names (listing up to 5 candidates).
        """
        if isinstance(value, bool):
            raise ValueError(f"class must be an index or a name, not {value!r}")
        if isinstance(value, str):
            text = value.strip()
            if _INT_RE.fullmatch(text):
                return self._check_index(int(text))
            return self._resolve_name(text)
        try:
            index = operator.index(value)
        except TypeError:
            raise ValueError(f"class must be an index or a name, not {type(value).__name__} {value!r}") from None
        return self._check_index(index)

    def _check_index(self, index: int) -> int:
        if not 0 <= index < len(self._names):
            raise ValueError(f"class index {index} is out of range; valid indices are 0..{len(self._names) - 1}"
                             f"{self.valid_hint()}")
        return index

    def valid_hint(self, limit: int = 30) -> str:
        """"; this model's classes: 'circle' (0), ..." for small tables; for the 1000 ImageNet classes, where
        the names are listed."""
        if len(self._names) <= limit:
            return f"; this model's classes: {self._describe(range(len(self._names)))}"
        if self._names == imagenet_class_names():
            return ("; this model takes the 1000 ImageNet (ILSVRC-2012) classes, listed in label order in "
                    "imagebart_core/data/imagenet_classes.json (e.g. 'golden retriever' = 207)")
        return f"; this model has {len(self._names)} classes, e.g. {self._describe(range(3))}"

    def _resolve_name(self, text: str) -> int:
        if not text:
            raise ValueError("empty class name; give a class name or an index")
        exact = [i for i, n in enumerate(self._names) if n.strip() == text]
        if len(exact) == 1:
            return exact[0]
        key = _normalize(text)
        for table in (self._full, self._parts):
            hits = table.get(key, [])
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise self._ambiguous(text, hits)
        prefixed = sorted(
            {i for table in (self._full, self._parts) for k, idx in table.items() if k.startswith(key) for i in idx}
        )
        if len(prefixed) == 1:
            return prefixed[0]
        if len(prefixed) > 1:
            raise self._ambiguous(text, prefixed)
        close = difflib.get_close_matches(key, list(self._full) + list(self._parts), n=5, cutoff=0.6)
        seen: list[int] = []
        for k in close:
            for i in self._full.get(k, []) + self._parts.get(k, []):
                if i not in seen:
                    seen.append(i)
        hint = f"; close matches: {self._describe(seen[:5])}" if seen else ""
        raise ValueError(f"unknown class {text!r}{hint} (give a name or an index 0..{len(self._names) - 1})"
                         f"{self.valid_hint()}")

    def _ambiguous(self, text: str, indices: list[int]) -> ValueError:
        more = f" and {len(indices) - 5} more" if len(indices) > 5 else ""
        return ValueError(
            f"class name {text!r} is ambiguous: {self._describe(indices[:5])}{more}; give the full name or the index"
        )

    def _describe(self, indices: Sequence[int]) -> str:
        return ", ".join(f"{self._names[i]!r} ({i})" for i in indices)


def _add(table: dict[str, list[int]], key: str, index: int) -> None:
    bucket = table.setdefault(key, [])
    if index not in bucket:
        bucket.append(index)


@dataclass
class Condition:
    """A batch of conditions, ready to be prepended after the scale token.

    Attributes:
        kind: ``"class"`` or ``"text"``.
        tokens: ``torch.int64`` ``[B, P]``; ``P = 1`` for class (the class index, ``num_classes`` for
            the null row), ``P = text_length`` for text (CLIP BPE ids, zero padded).
        labels: ``B`` human-readable strings (class name or prompt; ``NULL_LABEL`` for null rows).
        null: ``torch.bool`` ``[B]``, True where the row is the unconditional one.
    """

    kind: str
    tokens: torch.Tensor
    labels: list[str]
    null: torch.Tensor

    def __post_init__(self) -> None:
        if self.kind not in ("class", "text"):
            raise ValueError(f"condition kind must be 'class' or 'text', not {self.kind!r}")
        if self.tokens.dim() != 2 or self.tokens.dtype != torch.int64:
            raise ValueError(
                f"condition tokens must be int64 [B, P], got {self.tokens.dtype} {list(self.tokens.shape)}"
            )
        b = self.tokens.shape[0]
        if b < 1:
            raise ValueError("a condition needs at least one row")
        if self.null.shape != (b,) or self.null.dtype != torch.bool:
            raise ValueError(f"condition null flags must be bool [{b}], got {self.null.dtype} {list(self.null.shape)}")
        if len(self.labels) != b:
            raise ValueError(f"condition has {len(self.labels)} labels for {b} rows")
        self.labels = list(self.labels)

    def batch_size(self) -> int:
        """B, the number of rows."""
        return int(self.tokens.shape[0])

    @property
    def length(self) -> int:
        """P, condition tokens per row."""
        return int(self.tokens.shape[1])

    def repeat_to(self, batch: int) -> Condition:
        """This condition for a batch of ``batch`` items: a single row is broadcast (copied) to all.

        Raises ``ValueError`` when the sizes differ and neither is 1.
        """
        b = self.batch_size()
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if b == batch:
            return self
        if b != 1:
            raise ValueError(f"condition has {b} rows but the batch has {batch} items; give 1 or {batch} conditions")
        return Condition(
            kind=self.kind,
            tokens=self.tokens.expand(batch, -1).clone(),
            labels=self.labels * batch,
            null=self.null.expand(batch).clone(),
        )

    def select(self, indices: Sequence[int] | torch.Tensor) -> Condition:
        """The rows at ``indices`` (in that order; repeats allowed)."""
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        b = self.batch_size()
        if idx.numel() == 0:
            raise ValueError("select needs at least one index")
        if bool(((idx < -b) | (idx >= b)).any()):
            raise ValueError(f"select indices out of range for a condition of {b} rows: {idx.tolist()}")
        idx = idx % b
        return Condition(
            kind=self.kind,
            tokens=self.tokens[idx.to(self.tokens.device)],
            labels=[self.labels[i] for i in idx.tolist()],
            null=self.null[idx.to(self.null.device)],
        )

    def to(self, device: torch.device | str) -> Condition:
        """The same condition with its tensors on ``device``."""
        return Condition(self.kind, self.tokens.to(device), list(self.labels), self.null.to(device))


def _require_kind(cfg: ConditioningConfig, kind: str) -> None:
    if cfg.kind != kind:
        what = "unconditional" if cfg.kind == "none" else f"{cfg.kind}-conditional"
        raise ValueError(f"this model is {what}; a {kind} condition does not apply")


def class_condition(cfg: ConditioningConfig, values: Sequence[int | str]) -> Condition:
    """A class condition, one row per value (index, digit string or class name; see :meth:`ClassTable.resolve`).

    Returns a :class:`Condition` with ``tokens`` int64 ``[B, 1]`` holding class indices.
    """
    _require_kind(cfg, "class")
    if isinstance(values, (str, int)):
        values = [values]
    values = list(values)
    if not values:
        raise ValueError("no class given")
    table = ClassTable(cfg)
    indices = [table.resolve(v) for v in values]
    return Condition(
        kind="class",
        tokens=torch.tensor(indices, dtype=torch.int64).reshape(-1, 1),
        labels=[table.names[i] for i in indices],
        null=torch.zeros(len(indices), dtype=torch.bool),
    )


def null_condition(cfg: ConditioningConfig, batch: int = 1) -> Condition:
    """The unconditional condition for ``batch`` items (all rows flagged ``null``).

    Class: token ``num_classes`` (the extra row of a model trained with condition dropout); raises
    ``ValueError`` if the model has no such row. Text: the tokenization of the empty string.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if cfg.kind == "class":
        if not cfg.null_condition or cfg.shared_class_embedding:
            raise ValueError(
                "this class-conditional model was not trained with condition dropout, so it has no "
                "unconditional (null) class; give a class instead"
            )
        return Condition(
            kind="class",
            tokens=torch.full((batch, 1), cfg.num_classes, dtype=torch.int64),
            labels=[NULL_LABEL] * batch,
            null=torch.ones(batch, dtype=torch.bool),
        )
    if cfg.kind == "text":
        return text_condition(cfg, [""] * batch, allow_empty=True)
    raise ValueError("this model is unconditional; it takes no condition")


@functools.lru_cache(maxsize=1)
def clip_tokenizer():
    """open_clip's CLIP BPE tokenizer (vocabulary file shipped with open_clip; no network)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def remap_text_tokens(tokens: torch.Tensor, known_ids: Sequence[int], prompts: Sequence[str] = ()) -> torch.Tensor:
    """CLIP ids int64 [B, L] -> a model's compact text vocabulary: position in ``known_ids`` (sorted) + 1;
    0 stands for padding and for every id the model never saw (logged, since those words are ignored)."""
    ids = torch.as_tensor(list(known_ids), dtype=torch.int64)  # (V,)
    pos = torch.searchsorted(ids, tokens).clamp(max=ids.numel() - 1)  # (B, L)
    known = ids[pos] == tokens
    out = torch.where(known, pos + 1, torch.zeros_like(tokens))
    unknown = (~known) & (tokens != 0)
    if bool(unknown.any()):
        rows = sorted({int(r) for r in unknown.nonzero()[:, 0]})
        logger.warning("%d prompt token(s) are outside this model's text vocabulary and are ignored (prompts: %s)",
                       int(unknown.sum()), ", ".join(repr(prompts[r]) for r in rows if r < len(prompts)))
    return out


def text_vocabulary(cfg: ConditioningConfig) -> list[str] | None:
    """The words a text model with a compact vocabulary (``text_token_ids``) knows, sorted; ``None`` when the
    model takes the whole CLIP vocabulary. Start/end-of-text markers are left out."""
    _require_kind(cfg, "text")
    if cfg.text_token_ids is None:
        return None
    tokenizer = clip_tokenizer()
    special = {tokenizer.encoder.get("<start_of_text>"), tokenizer.encoder.get("<end_of_text>")}
    return sorted(tokenizer.decode([i]).strip() for i in cfg.text_token_ids if i not in special)


def prompt_words(cfg: ConditioningConfig, prompt: str) -> tuple[list[str], list[str]]:
    """(known, ignored): the words (BPE pieces) of ``prompt`` a text model knows and those it never saw, in
    prompt order, each once. :func:`text_condition` turns ignored ones into padding (no effect). With the whole
    CLIP vocabulary (no ``text_token_ids``) every word is known."""
    _require_kind(cfg, "text")
    if not prompt.strip():
        return [], []
    tokenizer = clip_tokenizer()
    special = {tokenizer.encoder.get("<start_of_text>"), tokenizer.encoder.get("<end_of_text>")}
    known_ids = None if cfg.text_token_ids is None else set(cfg.text_token_ids)
    ids = tokenizer([prompt], context_length=cfg.text_length)[0].tolist()
    known: list[str] = []
    ignored: list[str] = []
    for i in ids:
        if i == 0 or i in special:
            continue
        word = tokenizer.decode([i]).strip()
        bucket = known if known_ids is None or i in known_ids else ignored
        if word not in bucket:
            bucket.append(word)
    return known, ignored


def ignored_words(cfg: ConditioningConfig, prompt: str) -> list[str]:
    """The words of ``prompt`` the model never saw (see :func:`prompt_words`)."""
    return prompt_words(cfg, prompt)[1]


def text_condition(cfg: ConditioningConfig, prompts: Sequence[str], *, allow_empty: bool = False) -> Condition:
    """A text condition, one row per prompt.

    Returns a :class:`Condition` with ``tokens`` int64 ``[B, cfg.text_length]``: start-of-text id,
    the BPE ids, end-of-text id, zeros. Longer prompts are truncated, keeping end-of-text last.
    Empty or whitespace-only prompts raise ``ValueError`` unless ``allow_empty=True``, in which case
    they are the unconditional rows (flagged ``null``).
    """
    _require_kind(cfg, "text")
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompt given")
    for p in prompts:
        if not isinstance(p, str):
            raise ValueError(f"prompts must be strings, got {type(p).__name__}")
    empty = [not p.strip() for p in prompts]
    if any(empty) and not allow_empty:
        i = empty.index(True)
        raise ValueError(f"empty prompt: item {i} ({prompts[i]!r}) has no text")
    if cfg.text_length < 2:
        raise ValueError(f"text_length must be >= 2 (start and end tokens), got {cfg.text_length}")
    tokenizer = clip_tokenizer()
    cleaned = ["" if e else p for p, e in zip(prompts, empty)]
    tokens = tokenizer(cleaned, context_length=cfg.text_length).to(torch.int64)  # (B, text_length)
    if cfg.text_token_ids is not None:
        tokens = remap_text_tokens(tokens, cfg.text_token_ids, prompts)
    if int(tokens.max()) >= cfg.text_vocab_size:
        raise ValueError(f"the CLIP tokenizer's ids exceed the model's text vocabulary of {cfg.text_vocab_size}")
    return Condition(
        kind="text",
        tokens=tokens,
        labels=[NULL_LABEL if e else p for p, e in zip(prompts, empty)],
        null=torch.tensor(empty, dtype=torch.bool),
    )


@dataclass
class ConditionBlend:
    """Conditions whose influence varies from left to right.

    ``conditions[i]`` dominates at horizontal position ``stops[i]`` (fractions 0..1 of the image width,
    increasing; default evenly spaced, so two conditions go from the left edge to the right edge).
    Between two stops the logits are mixed linearly. All conditions have the same kind.
    """

    conditions: Sequence[Condition]
    stops: Sequence[float] | None = None

    def __post_init__(self):
        if len(self.conditions) < 1:
            raise ValueError("a blend needs at least one condition")
        kinds = {c.kind for c in self.conditions}
        if len(kinds) != 1:
            raise ValueError(f"all blended conditions must be of one kind, got {sorted(kinds)}")
        n = len(self.conditions)
        if self.stops is None:
            self.stops = [i / (n - 1) for i in range(n)] if n > 1 else [0.5]
        if len(self.stops) != n or any(b <= a for a, b in zip(self.stops, self.stops[1:])):
            raise ValueError("stops must give one increasing position per condition")

    @property
    def kind(self) -> str:
        return self.conditions[0].kind

    def weights(self, x: float) -> list[float]:
        """Mixing weights (sum 1) at horizontal fraction ``x`` in 0..1."""
        stops = list(self.stops)
        n = len(stops)
        if n == 1 or x <= stops[0]:
            return [1.0] + [0.0] * (n - 1)
        if x >= stops[-1]:
            return [0.0] * (n - 1) + [1.0]
        out = [0.0] * n
        for i in range(n - 1):
            if stops[i] <= x <= stops[i + 1]:
                f = (x - stops[i]) / (stops[i + 1] - stops[i])
                out[i], out[i + 1] = 1.0 - f, f
                return out
        return out
