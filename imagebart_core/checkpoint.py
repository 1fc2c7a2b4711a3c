"""The native model file: one ``.safetensors`` holding every tensor and the config as JSON metadata.

Metadata keys: ``format`` = "imagebart", ``format_version``, ``config`` (the ModelConfig JSON),
``config_sha256`` (the SHA-256 of that JSON text) and ``codebook_id``; these names are reserved.
Loading never unpickles; it checks that the file is complete, that every tensor the config implies is
present with the right shape, that every floating-point tensor is finite, and that the stored config
still matches its checksum (a hand-edited config is an error, not a different model). Files written
before the checksum existed carry none and load unverified; every file this version writes carries one.
Saving is atomic (a temporary file in the same folder, then a rename) and never overwrites an
existing file unless asked.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open

from .config import FORMAT_VERSION, ModelConfig
from .fileio import SafetensorsReader, save_safetensors
from .model import ImageBART
from .validate import nonfinite_message
from .vqgan import check_used

FORMAT_NAME = "imagebart"
CONFIG_CHECKSUM_KEY = "config_sha256"
#: Metadata keys the format owns; ``save_model(extra_metadata=...)`` may not set them.
RESERVED_METADATA_KEYS = frozenset({"format", "format_version", "config", CONFIG_CHECKSUM_KEY, "codebook_id"})
#: Dtypes the scales' weights can be stored in and loaded back from.
TRANSFORMER_STORAGE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def config_checksum(config_json: str) -> str:
    """SHA-256 (hex) of the config JSON text exactly as stored in the file's metadata."""
    return hashlib.sha256(config_json.encode("utf-8")).hexdigest()


class ModelFileError(ValueError):
    """A model file that cannot be used, with a message that says why and where."""


def _check_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"ImageBART model file not found: {p}")
    return p


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The safetensors header metadata of a model file (cheap: no tensors are read)."""
    p = _check_path(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ModelFileError(f"{p} is not a readable .safetensors file (truncated or corrupt?): {exc}") from exc
    if meta.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{p} is a .safetensors file but not an ImageBART model (no format=imagebart metadata)")
    raw = meta.get("format_version")
    if raw is None or not str(raw).isascii() or not str(raw).isdigit() or int(raw) < 1:
        raise ModelFileError(f"{p}: format_version {raw!r} is not a positive integer (damaged or hand-edited "
                             f"metadata?); this pack writes format_version \"{FORMAT_VERSION}\"")
    version = int(raw)
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{p} uses model-file format {version}; this version of the pack reads up to "
                             f"{FORMAT_VERSION}. Update the pack.")
    return meta


def read_config(path: str | os.PathLike) -> ModelConfig:
    """The ModelConfig stored in a model file (its checksum verified when the file has one)."""
    meta = read_metadata(path)
    stored = meta.get(CONFIG_CHECKSUM_KEY)
    if stored is not None and "config" in meta and config_checksum(meta["config"]) != stored:
        raise ModelFileError(f"{path}: the stored model config does not match its checksum ({CONFIG_CHECKSUM_KEY}): "
                             "it was changed after the file was written. Use the original file, or rebuild the "
                             "model and save it again with save_model")
    try:
        return ModelConfig.from_json(meta["config"])
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: the stored model config is missing or invalid: {exc}") from exc


def save_model(model: ImageBART, path: str | os.PathLike, overwrite: bool = False,
               extra_metadata: dict[str, str] | None = None, transformer_dtype: torch.dtype | None = None) -> Path:
    """Write ``model`` to ``path`` atomically. Refuses to replace an existing file unless ``overwrite``.

    ``transformer_dtype`` (e.g. torch.float16) stores the scales' floating-point weights in that dtype to
    halve the file; the VQGAN is always stored in float32. Loading casts to the dtype asked for.
    Only float32, float16 and bfloat16 can be stored (and loaded back); ``extra_metadata`` may not use the
    reserved keys (:data:`RESERVED_METADATA_KEYS`). Both are refused with ValueError before anything is written.
    """
    if transformer_dtype is not None and transformer_dtype not in TRANSFORMER_STORAGE_DTYPES:
        raise ValueError(f"transformer_dtype {transformer_dtype!r} cannot be stored and loaded back; "
                         "use torch.float32, torch.float16 or torch.bfloat16 (or None for the model's own)")
    reserved = sorted(RESERVED_METADATA_KEYS & {str(k) for k in (extra_metadata or {})})
    if reserved:
        raise ValueError(f"extra_metadata may not set the reserved keys {reserved}; "
                         f"reserved: {sorted(RESERVED_METADATA_KEYS)}")
    p = Path(path)
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p} exists; pass overwrite=True to replace it")
    p.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, value in model.state_dict().items():
        value = value.detach().contiguous().cpu()
        if value.is_floating_point():
            store = torch.float32 if name.startswith("vqgan.") else (transformer_dtype or value.dtype)
            if store not in TRANSFORMER_STORAGE_DTYPES:
                raise ValueError(f"tensor {name} is {value.dtype}, which cannot be stored and loaded back; pass "
                                 "transformer_dtype=torch.float32 (or float16 / bfloat16)")
            value = value.to(store)
        tensors[name] = value
    config_json = model.config.to_json()
    meta = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "config": config_json,
        CONFIG_CHECKSUM_KEY: config_checksum(config_json),
        "codebook_id": model.codebook_id,
    }
    if extra_metadata:
        meta.update({str(k): str(v) for k, v in extra_metadata.items()})
    save_safetensors(tensors, p, meta)  # atomic, and the same bytes for the same model
    return p


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> ImageBART:
    """Load a native model file. Transformers in ``dtype``; the VQGAN always float32.

    Raises FileNotFoundError for a missing file and ModelFileError for anything that does not fit.
    """
    p = _check_path(path)
    config = read_config(p)
    try:
        config.validate()
    except ValueError as exc:
        raise ModelFileError(f"{p}: inconsistent model config: {exc}") from exc
    with torch.device("meta"):
        model = ImageBART(config, init=False)
    expected = {k: v for k, v in model.state_dict().items()}
    try:
        # plain reads into owned memory, no memory map: the file's pages never count towards the process's memory
        # and no tensor keeps a mapping of the whole file alive (see fileio.SafetensorsReader)
        with SafetensorsReader(p) as f:
            names = set(f.names)
            missing = sorted(set(expected) - names)
            unexpected = sorted(names - set(expected))
            if missing or unexpected:
                raise ModelFileError(
                    f"{p} does not match its config: missing tensors {_short(missing)}; "
                    f"unexpected tensors {_short(unexpected)}"
                )
            state = {}
            for name in expected:
                shape = f.shape(name)
                want = tuple(expected[name].shape)
                if name == "vqgan.quantize.used":
                    want = (config.vocab_size,)
                if shape != want:
                    raise ModelFileError(f"{p}: tensor {name} has shape {shape}, expected {want}")
                state[name] = _read_checked(f, name, torch.float32 if name.startswith("vqgan.") else dtype, p)
    except ModelFileError:
        raise
    except Exception as exc:
        raise ModelFileError(f"{p} could not be read (truncated or corrupt?): {exc}") from exc
    try:
        check_used(state["vqgan.quantize.used"], config.vqgan.n_embed)
    except ValueError as exc:
        raise ModelFileError(f"{p}: invalid shrink list: {exc}") from exc
    model.load_state_dict(state, strict=True, assign=True)
    _rebuild_derived(model)
    model.to(device)
    model.eval()
    return model


def _read_checked(reader: SafetensorsReader, name: str, float_dtype: torch.dtype, path: Path) -> torch.Tensor:
    """Tensor ``name``, floating point ones in ``float_dtype``, every value checked finite as stored (before the
    cast, which could hide a NaN or make an inf of a large value); read piece by piece, so no full-size
    intermediate copy (e.g. float32 on the way to bfloat16) is made."""
    bad = 0

    def count_nonfinite(values: torch.Tensor) -> None:
        nonlocal bad
        if values.is_floating_point() and not bool(torch.isfinite(values).all()):
            bad += int((~torch.isfinite(values)).sum())

    tensor = reader.read(name, float_dtype if reader.dtype(name).is_floating_point else None,
                         on_chunk=count_nonfinite)
    if bad:
        raise ModelFileError(nonfinite_message(str(path), name, bad, tensor.numel()))
    return tensor


def _rebuild_derived(model: ImageBART) -> None:
    """Re-create non-persistent buffers (left on the meta device by construction there)."""
    model.reset_residual_alphas()


def _short(names: list[str], limit: int = 8) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def describe(path: str | os.PathLike) -> str:
    """One line about a model file: name, scales, grid, vocabulary, conditioning, source."""
    cfg = read_config(path)
    src = json.dumps(cfg.source)[:120]
    return (f"{cfg.name}: {cfg.n_scales} scales, grid {cfg.grid[0]}x{cfg.grid[1]}, K={cfg.vocab_size}, "
            f"conditioning={cfg.conditioning.kind}, source={src}")
