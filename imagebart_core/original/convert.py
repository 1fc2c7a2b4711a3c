"""Convert an original CompVis ImageBART release into one native ``.safetensors`` model file.

    python -m imagebart_core.convert --release DIR --model NAME --out FILE [--overwrite]
    python -m imagebart_core.convert --ckpt s1.ckpt ... --config s1.yaml ... --out FILE

What it does, in two passes over the scale checkpoints (one checkpoint open at a time):

1. **Plan.** Read the yamls (plain data only), the shrink list and the schedule; build the native
   config; open each scale checkpoint (weights-only, memory-mapped), check that every key maps, every
   shape fits, the EMA copy is complete, the GPT masks and the stored schedule agree. Nothing is
   written yet, so a broken release fails fast.
2. **Write.** Open each scale again, copy the VQGAN (scale 1's ``first_stage_model.*``, which is what
   the original scripts encode and decode with) and the scale's **EMA** weights into the output file,
   tensor by tensor, then let the checkpoint go. Peak memory is about one scale's EMA tensors.

No code from the pickles runs: checkpoints go through ``torch.load(weights_only=True)`` and the
schedule pickle through a numpy-only unpickler (see :mod:`.safe_pickle`).
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import CONFIG_CHECKSUM_KEY, config_checksum
from ..codes import codebook_identity
from ..config import DECODER_ONLY, FORMAT_VERSION, ModelConfig
from ..fileio import StreamingSafetensorsWriter, sha256_file
from ..transformer import prefix_mask
from ..validate import check_finite
from . import keymap
from .releases import RELEASES
from .safe_pickle import OriginalFileError, load_checkpoint, state_dict_of
from .schedule import betas_from_alphats, parse_redraw_prob, schedule_betas
from .sizes import STORAGE_DTYPES
from .yaml_config import ScaleSpec, model_config, parse_scale_yaml, read_sampling_yaml, read_yaml

logger = logging.getLogger(__name__)

FORMAT_NAME = "imagebart"
SOURCE_KIND = "original-compvis-imagebart"
UPSTREAM = "https://github.com/CompVis/imagebart"
_TOP_LEVEL_IGNORED = {"epoch", "global_step", "pytorch-lightning_version", "state_dict", "callbacks",
                      "optimizer_states", "lr_schedulers", "hparams_name", "hyper_parameters", "hparams_type"}


class ConversionError(OriginalFileError):
    """A release that cannot be converted; the message names the file and the problem."""


@dataclass
class ReleaseFiles:
    """Where the files of one release are. Paths inside the yamls are relative to ``root``."""

    name: str
    root: Path
    checkpoints: list[Path]
    configs: list[Path]
    sampling_config: Path | None = None
    vqgan_checkpoint: Path | None = None  # optional: the scale checkpoints carry the VQGAN too
    indices: Path | None = None  # optional: the scale checkpoints carry the shrink list too
    schedule_pickle: Path | None = None  # needed for custom (metric) schedules, else checkpoint alphas are used

    def rel(self, p: Path | None) -> str | None:
        if p is None:
            return None
        try:
            return str(Path(p).resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(p)


@dataclass
class Plan:
    """Everything decided before writing."""

    files: ReleaseFiles
    config: ModelConfig
    used: torch.Tensor  # int64 [K]
    tensors: dict[str, tuple[torch.dtype, tuple[int, ...]]]  # native name -> dtype, shape
    scale_maps: list[dict[str, str]]  # per scale: native name (under scales.{s-1}.) -> original EMA key
    vqgan_map: dict[str, str]  # native name -> original key in scale 1's state_dict
    file_info: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# -- locating files -----------------------------------------------------------------------------------
def locate_release(release_dir: str | Path, model: str | None = None,
                   sampling_config: str | Path | None = None) -> ReleaseFiles:
    """Find the files of ``model`` in a release folder laid out like the original repository."""
    root = Path(release_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"release folder not found: {root}")
    if model is None and sampling_config is None:
        present = [n for n in RELEASES if (root / "models" / n).is_dir()]
        if len(present) != 1:
            found = ", ".join(present) or "none"
            raise ConversionError(f"{root}: say which model to convert with --model (released models found under "
                                  f"models/: {found}; known: {', '.join(RELEASES)})")
        model = present[0]
    samp = Path(sampling_config) if sampling_config is not None else None
    if samp is not None and not samp.is_absolute() and not samp.exists():
        samp = root / samp
    release = RELEASES.get(model) if model else None
    if samp is None and release is not None:
        samp = root / release.sampling_config
    if samp is None and model is not None:
        samp = _find_sampling_yaml(root, model)
    if samp is not None and samp.is_file():
        ckpts, cfgs = read_sampling_yaml(samp)
    elif release is not None:
        logger.warning("sampling config %s not found; using the released layout of %s", samp, model)
        ckpts, cfgs = list(release.checkpoints), list(release.scale_configs)
        samp = None
    else:
        raise ConversionError(f"{root}: no sampling config for model {model!r} (looked for configs/sampling/**/*.yaml "
                              f"listing models/{model}/scale*.ckpt). Give --sampling-config or explicit "
                              "--ckpt/--config paths.")
    name = model or (samp.stem if samp is not None else "imagebart")
    files = ReleaseFiles(name=name, root=root, checkpoints=[root / c for c in ckpts],
                         configs=[root / c for c in cfgs], sampling_config=samp)
    return files


def _find_sampling_yaml(root: Path, model: str) -> Path | None:
    base = root / "configs" / "sampling"
    if not base.is_dir():
        return None
    for path in sorted(base.rglob("*.yaml")):
        try:
            ckpts, _ = read_sampling_yaml(path)
        except (OriginalFileError, OSError):
            continue
        if any(Path(c).parts[:2] == ("models", model) for c in ckpts):
            return path
    return None


def explicit_release(checkpoints: list[str | Path], configs: list[str | Path], root: str | Path | None = None,
                     name: str | None = None) -> ReleaseFiles:
    """A release given file by file (scale 1 first). ``root`` resolves paths written inside the yamls."""
    if len(checkpoints) != len(configs) or not checkpoints:
        raise ConversionError(f"give one --config per --ckpt (scale 1 first); got {len(checkpoints)} checkpoints "
                              f"and {len(configs)} configs")
    ck = [Path(c) for c in checkpoints]
    return ReleaseFiles(name=name or ck[0].parent.name or "imagebart", root=Path(root) if root else Path.cwd(),
                        checkpoints=ck, configs=[Path(c) for c in configs])


# -- planning --------------------------------------------------------------------------------------------
def _resolve(root: Path, value: str | None) -> Path | None:
    if not value:
        return None
    p = Path(value)
    return p if p.is_absolute() else root / p


def _load_indices(path: Path) -> torch.Tensor:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ConversionError(f"{path}: not a readable .npy shrink list (plain int arrays only): {exc}") from exc
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ConversionError(f"{path}: the shrink list must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    return torch.from_numpy(arr.astype(np.int64))


def _check_transformer_keys(sd: dict[str, torch.Tensor], where: str) -> tuple[list[str], list[str]]:
    """Split the state_dict keys; error on anything outside the original layout."""
    raw, ema, unknown = [], [], []
    for k in sd:
        if k.startswith("transformer."):
            raw.append(k[len("transformer."):])
        elif k.startswith("transformer_ema."):
            ema.append(k[len("transformer_ema."):])
        elif k.startswith("first_stage_model.") or k in ("sos_token", "alphats", "alphacum"):
            continue
        else:
            unknown.append(k)
    if unknown:
        raise ConversionError(f"{where}: state_dict keys outside the original ImageBART layout: {unknown[:8]}")
    return raw, ema


def plan_conversion(files: ReleaseFiles, weights: str = "ema", hash_files: bool = True) -> Plan:
    """Read configs and check every checkpoint; decide the output layout. Writes nothing, and leaves ``files`` as
    given: the paths it resolves (shrink list, VQGAN checkpoint, schedule pickle) are in the returned plan's
    ``files``."""
    if weights not in ("ema", "raw"):
        raise ValueError("weights must be 'ema' or 'raw'")
    files = replace(files)  # resolved below; the caller's object is not changed
    for p in files.checkpoints + files.configs:
        if not Path(p).is_file():
            raise FileNotFoundError(f"release file missing: {p}")
    specs: list[ScaleSpec] = [parse_scale_yaml(read_yaml(c), str(c)) for c in files.configs]
    T = len(specs)
    fs = specs[0].first_stage
    if files.indices is None:
        files.indices = _resolve(files.root, fs.get("remap"))
    if files.vqgan_checkpoint is None:
        files.vqgan_checkpoint = _resolve(files.root, fs.get("ckpt_path"))
    spec = parse_redraw_prob(specs[0].redraw_prob)
    if spec["kind"] == "metric" and files.schedule_pickle is None:
        files.schedule_pickle = files.root / spec["pickle"]
    notes: list[str] = []

    # shrink list: the .npy when present, else scale 1's buffer (checked against each other below)
    npy_used = None
    if files.indices is not None and files.indices.is_file():
        npy_used = _load_indices(files.indices)
    elif files.indices is not None:
        notes.append(f"shrink list {files.indices} not found; using the copy stored in the checkpoints")
        files.indices = None

    # schedule: exact float32 betas from the yaml's redraw_prob
    betas_np: np.ndarray | None = None
    schedule_source: dict[str, Any]
    if spec["kind"] != "metric" or (files.schedule_pickle is not None and files.schedule_pickle.is_file()):
        betas_np, schedule_source = schedule_betas(specs[0].redraw_prob, T + 1, files.root, files.schedule_pickle)
        schedule_source = {"redraw_prob": specs[0].redraw_prob, **{k: v for k, v in schedule_source.items()
                                                                    if k != "pickle"}}
        if spec["kind"] == "metric":
            schedule_source["pickle"] = files.rel(files.schedule_pickle)
    else:
        schedule_source = {"redraw_prob": specs[0].redraw_prob, "from": "checkpoint alphats buffer"}
        notes.append(f"schedule pickle {files.schedule_pickle} not found: betas recovered from the checkpoints' "
                     "alphats buffers (alphas exact, betas within one float32 rounding)")
        files.schedule_pickle = None

    file_info: list[dict[str, Any]] = []
    scale_maps: list[dict[str, str]] = []
    vqgan_map: dict[str, str] = {}
    used: torch.Tensor | None = None
    config: ModelConfig | None = None
    expected: dict[str, torch.Tensor] | None = None
    codebook_ref: tuple[torch.Tensor, torch.Tensor] | None = None

    for s, (ckpt_path, sspec) in enumerate(zip(files.checkpoints, specs), start=1):
        where = str(ckpt_path)
        ckpt = load_checkpoint(ckpt_path)
        sd = state_dict_of(ckpt, where)
        extra_top = sorted(set(map(str, ckpt)) - _TOP_LEVEL_IGNORED)
        if extra_top:
            logger.info("%s: ignoring top-level entries %s", where, extra_top)
        info = {"role": f"scale{s}", "path": files.rel(ckpt_path), "bytes": Path(ckpt_path).stat().st_size,
                "global_step": _int_or_none(ckpt.get("global_step")), "epoch": _int_or_none(ckpt.get("epoch"))}
        if "global_step" not in ckpt:
            raise ConversionError(f"{where}: no 'global_step' (the original loader requires it); "
                                  "is this an ImageBART scale checkpoint?")
        raw, ema = _check_transformer_keys(sd, where)
        if s == 1:
            used, vqgan_map, codebook_ref = _plan_vqgan(sd, where, files, npy_used, notes)
            if betas_np is None:
                betas_np = _betas_from_checkpoint(sd, where, T)
            config = model_config(specs, betas_np.tolist(), int(used.numel()), files.name)
            with torch.device("meta"):
                from ..model import ImageBART

                meta = ImageBART(config, used=torch.zeros(int(used.numel()), dtype=torch.long), init=False)
            expected = {k: v for k, v in meta.state_dict().items()}
            del meta
        else:
            _check_same_codebook(sd, where, codebook_ref, notes)
        assert config is not None and expected is not None
        _check_schedule_buffers(sd, where, betas_np)
        scale_maps.append(_plan_scale(s, sd, raw, ema, config, expected, where, weights))
        check_finite({k: sd[k] for k in [*scale_maps[-1].values(), *vqgan_map.values()] if k in sd}, where, ConversionError)
        if hash_files:
            info["sha256"] = sha256_file(Path(ckpt_path))
        file_info.append(info)
        del sd, ckpt
        _release(ckpt_path)

    assert config is not None and used is not None and expected is not None
    for i, c in enumerate(files.configs, start=1):
        file_info.append({"role": f"scale{i}_config", "path": files.rel(c)})
    for role, p in (("sampling_config", files.sampling_config), ("shrink_list", files.indices),
                    ("schedule_pickle", files.schedule_pickle)):
        if p is not None:
            entry = {"role": role, "path": files.rel(p)}
            if hash_files:
                entry["sha256"] = sha256_file(Path(p))
            file_info.append(entry)
    if any(sp.extra.get("ignored_tanh_out") for sp in specs):
        notes.append("ddconfig.tanh_out is set in the yamls and ignored, as the original taming decoder ignores it")
    tensors = {k: (v.dtype, tuple(v.shape)) for k, v in expected.items()}
    tensors["vqgan.quantize.used"] = (torch.int64, (int(used.numel()),))
    # every native tensor must have a source
    sourced = set(vqgan_map) | {f"scales.{s - 1}.{k}" for s, m in enumerate(scale_maps, start=1) for k in m}
    missing = sorted(set(tensors) - sourced)
    if missing:
        raise ConversionError(f"no source in the release for native tensors {missing[:8]}")
    config.source = {
        "kind": SOURCE_KIND,
        "model": files.name,
        "upstream": UPSTREAM,
        "weights": weights,
        "converter": "imagebart_core.convert",
        "release_dir": str(files.root.resolve()),
        "sampling_config": files.rel(files.sampling_config),
        "schedule": schedule_source,
        "files": file_info,
        "notes": notes,
    }
    return Plan(files=files, config=config, used=used, tensors=tensors, scale_maps=scale_maps,
                vqgan_map=vqgan_map, file_info=file_info, notes=notes)


def _int_or_none(v: Any) -> int | None:
    if isinstance(v, (int, np.integer)):
        return int(v)
    if torch.is_tensor(v) and v.numel() == 1:
        return int(v.item())
    return None


def _plan_vqgan(sd: dict[str, torch.Tensor], where: str, files: ReleaseFiles, npy_used: torch.Tensor | None,
                notes: list[str]) -> tuple[torch.Tensor, dict[str, str], tuple[torch.Tensor, torch.Tensor]]:
    """Map scale 1's ``first_stage_model.*`` (or the VQGAN checkpoint) to ``vqgan.*``; return the shrink list."""
    vq_keys = [k for k in sd if k.startswith("first_stage_model.")]
    if vq_keys:
        vmap = {}
        for k in vq_keys:
            native = keymap.vqgan_key(k[len("first_stage_model."):])
            if native is not None:
                vmap[native] = k
        source_sd, source = sd, where
    else:
        if files.vqgan_checkpoint is None or not files.vqgan_checkpoint.is_file():
            raise ConversionError(f"{where}: no first_stage_model.* weights and no VQGAN checkpoint "
                                  f"({files.vqgan_checkpoint}) to take them from")
        notes.append(f"VQGAN taken from {files.vqgan_checkpoint} (the scale checkpoints carry no copy)")
        vsd = state_dict_of(load_checkpoint(files.vqgan_checkpoint), files.vqgan_checkpoint)
        vmap = {}
        for k in vsd:
            native = keymap.vqgan_key(k)
            if native is not None:
                vmap[native] = "vqgan:" + k
        source_sd, source = {"vqgan:" + k: v for k, v in vsd.items()}, str(files.vqgan_checkpoint)
    used_key = vmap.get("vqgan.quantize.used")
    emb_key = vmap.get("vqgan.quantize.embedding.weight")
    if used_key is None or emb_key is None:
        raise ConversionError(f"{source}: the VQGAN has no quantize.used (shrink list) or no codebook")
    used = source_sd[used_key].to(torch.int64).clone()
    if npy_used is not None and not torch.equal(npy_used, used):
        raise ConversionError(f"{files.indices}: the shrink list ({npy_used.numel()} ids) differs from the one stored "
                              f"in {source} ({used.numel()} ids)")
    emb = source_sd[emb_key].detach().float().clone()
    return used, vmap, (used, emb)


def _check_same_codebook(sd, where, ref, notes) -> None:
    used = sd.get("first_stage_model.quantize.used")
    emb = sd.get("first_stage_model.quantize.embedding.weight")
    if used is None or emb is None or ref is None:
        return
    if not torch.equal(used.to(torch.int64), ref[0]) or not torch.equal(emb.float(), ref[1]):
        notes.append(f"{where}: its VQGAN copy differs from scale 1's; the converted model uses scale 1's "
                     "(the one the original scripts encode and decode with)")
        logger.warning(notes[-1])


def _betas_from_checkpoint(sd, where: str, T: int) -> np.ndarray:
    a = sd.get("alphats")
    if a is None or tuple(a.shape) != (T + 1,):
        raise ConversionError(f"{where}: no alphats buffer of length {T + 1} to recover the schedule from; "
                              "provide the schedule pickle (data/*_schedule_vs_metric.p)")
    betas = betas_from_alphats(a.float().numpy())
    betas[0] = 0.0
    return betas


def _check_schedule_buffers(sd, where: str, betas: np.ndarray) -> None:
    a = sd.get("alphats")
    if a is None:
        return
    ours = (np.float32(1.0) - betas.astype(np.float32)).astype(np.float32)
    theirs = a.float().numpy()
    if theirs.shape != ours.shape or not np.array_equal(ours, theirs):
        raise ConversionError(f"{where}: the stored schedule (alphats {theirs.tolist()}) does not match the yaml's "
                              f"redraw_prob (alphas {ours.tolist()}); wrong config for this checkpoint?")


def _plan_scale(s: int, sd: dict[str, torch.Tensor], raw: list[str], ema: list[str], config: ModelConfig,
                expected: dict[str, torch.Tensor], where: str, weights: str) -> dict[str, str]:
    """Map one scale's transformer: native name (relative to ``scales.{s-1}.``) -> original state_dict key."""
    sc = config.scales[s - 1]
    decoder_only = sc.kind == DECODER_ONLY
    prefix = f"scales.{s - 1}."
    want = {k[len(prefix):]: v for k, v in expected.items() if k.startswith(prefix)}
    ema_set = set(ema) - {"decay", "num_updates"}
    mapping: dict[str, str] = {}
    flat_seen: dict[str, str] = {}
    for name in raw:
        try:
            native = keymap.transformer_key(name, decoder_only)
        except keymap.KeyMapError as exc:
            raise ConversionError(f"{where}: {exc} (scale {s} is {'minGPT' if decoder_only else 'x-transformers'})"
                                  ) from None
        if keymap.is_mask_buffer(name):
            _check_mask(sd["transformer." + name], sc, where, name)
            continue
        flat = keymap.ema_flat_name(name)
        if flat in flat_seen:
            raise ConversionError(f"{where}: EMA names of transformer.{name} and transformer.{flat_seen[flat]} "
                                  "collide")
        flat_seen[flat] = name
        if native is None:  # unused by the original (encoder.to_logits)
            continue
        if weights == "ema":
            if flat not in ema_set:
                raise ConversionError(f"{where}: no EMA copy transformer_ema.{flat} of transformer.{name}; the "
                                      "original samples use EMA weights (convert with --weights raw to use the "
                                      "last training weights instead)")
            src = "transformer_ema." + flat
        else:
            src = "transformer." + name
        if native not in want:
            raise ConversionError(f"{where}: transformer.{name} maps to {prefix}{native}, which the config from the "
                                  "yaml does not have (yaml and checkpoint disagree)")
        shape = tuple(sd[src].shape)
        if shape != tuple(want[native].shape):
            raise ConversionError(f"{where}: {src} has shape {shape}, but the yaml config needs "
                                  f"{tuple(want[native].shape)} for {prefix}{native}")
        mapping[native] = src
    if weights == "ema":
        leftover = sorted(ema_set - set(flat_seen))
        if leftover:
            raise ConversionError(f"{where}: EMA entries without a transformer parameter: "
                                  f"{['transformer_ema.' + k for k in leftover[:8]]}")
    missing = sorted(set(want) - set(mapping))
    if missing:
        raise ConversionError(f"{where}: the checkpoint lacks weights the yaml config needs: "
                              f"{[prefix + m for m in missing[:8]]}")
    return mapping


def _check_mask(mask: torch.Tensor, sc, where: str, name: str) -> None:
    L = sc.context_len
    if tuple(mask.shape) != (1, 1, L, L):
        raise ConversionError(f"{where}: transformer.{name} has shape {tuple(mask.shape)}, expected (1, 1, {L}, {L})")
    ours = prefix_mask(L, sc.unmasked_prefix)
    if not torch.equal(mask[0, 0] != 0, ours):
        raise ConversionError(f"{where}: transformer.{name} is not the causal mask with {sc.unmasked_prefix} "
                              "unmasked prefix positions that the yaml (n_unmasked) describes")


def _check_fits(name: str, tensor: torch.Tensor, dtype: torch.dtype, where, src: str) -> None:
    """Refuse a float16 storage that would turn a weight into inf (float16 ends at 65504)."""
    if dtype != torch.float16 or not tensor.is_floating_point() or tensor.numel() == 0:
        return
    peak = float(tensor.detach().abs().max())
    if peak > float(torch.finfo(torch.float16).max):
        raise ConversionError(f"{where}: {src} (for {name}) holds {peak:.6g}, beyond float16's range (65504); "
                              "convert with --dtype bf16 or --dtype fp32")


_COLLECT_FROM_BYTES = 1 << 28


def _release(checkpoint: Path) -> None:
    """Make sure a big checkpoint's mapping is gone before the next opens (a full collection costs ~0.1-0.5 s
    in a process with torch loaded, so small checkpoints are left to reference counting)."""
    try:
        big = Path(checkpoint).stat().st_size >= _COLLECT_FROM_BYTES
    except OSError:
        big = True
    if big:
        gc.collect()


# -- writing ---------------------------------------------------------------------------------------------
def write_plan(plan: Plan, out: str | Path, overwrite: bool = False) -> Path:
    """Second pass: stream the mapped tensors into ``out`` (atomic; one checkpoint open at a time).

    Floating-point scale tensors are stored in the dtype ``plan.tensors`` gives them (see
    :func:`store_transformers_as`); the VQGAN always in float32.
    """
    files = plan.files
    emb_key = plan.vqgan_map["vqgan.quantize.embedding.weight"]
    meta = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "config": plan.config.to_json()}
    meta[CONFIG_CHECKSUM_KEY] = config_checksum(meta["config"])
    # codebook_id needs the codebook bytes; read them from scale 1 before opening the writer
    first = state_dict_of(load_checkpoint(files.checkpoints[0]), files.checkpoints[0]) \
        if not emb_key.startswith("vqgan:") else None
    vq_sd = first if first is not None else {"vqgan:" + k: v for k, v in state_dict_of(
        load_checkpoint(files.vqgan_checkpoint), files.vqgan_checkpoint).items()}
    meta["codebook_id"] = codebook_identity(plan.used, vq_sd[emb_key])
    meta["source"] = f"{SOURCE_KIND}:{files.name}"
    with StreamingSafetensorsWriter(out, plan.tensors, meta, overwrite=overwrite) as writer:
        for native, src in plan.vqgan_map.items():
            writer.write(native, vq_sd[src])
        del vq_sd, first
        _release(files.checkpoints[0])
        for s, mapping in enumerate(plan.scale_maps, start=1):
            t0 = time.time()
            sd = state_dict_of(load_checkpoint(files.checkpoints[s - 1]), files.checkpoints[s - 1])
            for native, src in mapping.items():
                name = f"scales.{s - 1}.{native}"
                _check_fits(name, sd[src], plan.tensors[name][0], files.checkpoints[s - 1], src)
                writer.write(name, sd[src])
            del sd
            _release(files.checkpoints[s - 1])
            logger.info("scale %d written (%.1fs)", s, time.time() - t0)
        return writer.commit()


def store_transformers_as(plan: Plan, dtype: torch.dtype) -> None:
    """Store the scales' floating-point tensors in ``dtype`` (fp32, fp16 or bf16); the VQGAN stays float32."""
    if dtype not in STORAGE_DTYPES.values():
        raise ValueError(f"dtype must be one of {', '.join(STORAGE_DTYPES)} (torch.float32/float16/bfloat16), "
                         f"got {dtype}")
    for name, (dt, shape) in plan.tensors.items():
        if name.startswith("scales.") and dt.is_floating_point:
            plan.tensors[name] = (dtype, shape)
    plan.config.source["stored_dtype"] = {v: k for k, v in STORAGE_DTYPES.items()}[dtype]


def convert_release(files: ReleaseFiles, out: str | Path, overwrite: bool = False, weights: str = "ema",
                    hash_files: bool = True, dtype: torch.dtype = torch.float32,
                    provenance: dict[str, Any] | None = None) -> Path:
    """Plan (check everything) and write ``out``. Returns the output path.

    ``dtype`` stores the transformers in float32 (default), float16 or bfloat16; the VQGAN stays float32.
    ``provenance`` entries are added to the recorded ``config.source`` (e.g. the downloads it came from).
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    plan = plan_conversion(files, weights=weights, hash_files=hash_files)
    store_transformers_as(plan, dtype)
    if provenance:
        plan.config.source.update(provenance)
    for note in plan.notes:
        logger.info(note)
    return write_plan(plan, out, overwrite=overwrite)


# -- command line ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m imagebart_core.convert",
        description="Convert an original CompVis ImageBART release (Lightning .ckpt + yaml) into one native "
                    ".safetensors model file. Nothing from the pickles is executed.",
    )
    ap.add_argument("--release", help="release folder laid out like the original repo (configs/, data/, models/, vqgan/)")
    ap.add_argument("--model", help=f"model name under models/ (released: {', '.join(RELEASES)})")
    ap.add_argument("--sampling-config", help="the configs/sampling/...yaml listing checkpoints and configs")
    ap.add_argument("--ckpt", action="append", default=[], help="scale checkpoint, scale 1 first (repeat)")
    ap.add_argument("--config", action="append", default=[], help="per-scale training yaml, scale 1 first (repeat)")
    ap.add_argument("--vqgan", help="vqgan/*.ckpt (only needed if the scale checkpoints carry no VQGAN copy)")
    ap.add_argument("--indices", help="data/vqgan_indices/*.npy shrink list (checked against the checkpoints)")
    ap.add_argument("--schedule-pickle", help="data/*_schedule_vs_metric.p (custom schedules)")
    ap.add_argument("--name", help="model name to record (default: --model or the checkpoint folder)")
    ap.add_argument("--out", required=True, help="output .safetensors file")
    ap.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    ap.add_argument("--weights", choices=("ema", "raw"), default="ema",
                    help="ema (default, what the original samples use) or the raw last training weights")
    ap.add_argument("--no-hash", action="store_true", help="skip the sha256 of the input files (faster)")
    ap.add_argument("--dtype", choices=tuple(STORAGE_DTYPES), default="fp32",
                    help="storage precision of the transformers (the VQGAN stays float32); fp16 or bf16 halve the "
                         "file. See docs/original-checkpoints.md for what each changes")
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap


def files_from_args(args: argparse.Namespace) -> ReleaseFiles:
    if args.ckpt or args.config:
        files = explicit_release(args.ckpt, args.config, root=args.release, name=args.name or args.model)
        if args.sampling_config:
            files.sampling_config = Path(args.sampling_config)
    elif args.release:
        files = locate_release(args.release, args.model, args.sampling_config)
        if args.name:
            files.name = args.name
    else:
        raise ConversionError("give --release DIR [--model NAME] or explicit --ckpt/--config paths")
    if args.vqgan:
        files.vqgan_checkpoint = Path(args.vqgan)
    if args.indices:
        files.indices = Path(args.indices)
    if args.schedule_pickle:
        files.schedule_pickle = Path(args.schedule_pickle)
    return files


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    t0 = time.time()
    try:
        files = files_from_args(args)
        out = convert_release(files, args.out, overwrite=args.overwrite, weights=args.weights,
                              hash_files=not args.no_hash, dtype=STORAGE_DTYPES[args.dtype])
    except (OriginalFileError, FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 (CLI)
        return 2
    size = out.stat().st_size / 2**20
    print(f"wrote {out} ({size:.1f} MiB) from {files.name} in {time.time() - t0:.1f}s")  # noqa: T201 (CLI)
    return 0
