"""Issue 14: every bad input of the hostile-user run gives a clear error (type and message asserted) or the
documented correct result; none gives a silent result."""

from __future__ import annotations

import json
import os
import re
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import imagebart_core as ib
from imagebart_core.conditioning import Condition
from imagebart_core.fileio import save_safetensors


@pytest.fixture(scope="module")
def model():
    return ib.build_model(ib.tiny_config(n_scales=2, conditioning="class"), seed=0)


@pytest.fixture(scope="module")
def pack_modules():
    """The pack's nodes modules, imported against the stub ComfyUI API (as tests/test_nodes.py does)."""
    from tools.comfy_stub import load_nodes, stubbed_comfy_api

    with stubbed_comfy_api():
        load_nodes()
        from nodes import comfy_bridge, common, loader

        yield common, comfy_bridge, loader


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    return ib.save_model(model, tmp_path_factory.mktemp("m") / "tiny.safetensors")


def _images(b=1, size=16, seed=0):
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _rewrite(src: Path, dst: Path, tensors=None, meta=None) -> Path:
    """A copy of a model file with some tensors or metadata replaced (written by the canonical writer)."""
    with safe_open(str(src), framework="pt") as f:
        old_meta = dict(f.metadata())
        old = {k: f.get_tensor(k) for k in f.keys()}
    old.update(tensors or {})
    old_meta.update(meta or {})
    return save_safetensors(old, dst, old_meta)


# -- probabilities and settings ------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1e-45, 1e-40])
def test_temperature_too_small_for_float32_is_refused(model, temperature):
    with pytest.raises(ValueError, match=r"temperature .* is too small for float32"):
        model.sample(1, cond=model.class_condition(0), temperature=temperature)


@pytest.mark.parametrize("guidance", [float("inf"), float("nan"), -float("inf")])
def test_non_finite_guidance_is_refused(model, guidance):
    with pytest.raises(ValueError, match="guidance must be a finite number"):
        model.sample(1, cond=model.class_condition(0), guidance=guidance)


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": float("nan")}, "temperature must be a finite number"),
    ({"temperature": float("inf")}, "temperature must be a finite number"),
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"top_k": 2.5}, "top_k must be an integer, got float 2.5"),
    ({"top_k": 0}, "top_k must be >= 1"),
    ({"top_p": float("nan")}, "top_p must be a finite number"),
    ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
    ({"guidance": "2"}, "guidance must be a number"),
])
def test_sampling_settings_are_validated_up_front(model, kwargs, message):
    calls = []
    with pytest.raises(ValueError, match=message):
        model.sample(1, cond=model.class_condition(0), callback=calls.append, **kwargs)
    assert not calls


def test_huge_guidance_overflow_names_the_guidance(model):
    with pytest.raises(ib.NonFiniteProbabilities, match=r"scale 2, token 0 .*guidance 1e\+300 overflows the logits"):
        model.sample(1, cond=model.class_condition(0), guidance=1e300)


def test_nan_weights_in_memory_name_the_network(model):
    broken = ib.build_model(model.config, seed=0)
    with torch.no_grad():
        broken.scales[1].head.weight.fill_(float("nan"))
    with pytest.raises(ib.NonFiniteProbabilities, match=r"network's logits are NaN or inf"):
        broken.sample(1, cond=broken.class_condition(0))


def test_nan_weights_in_a_model_file_are_refused_at_load(model, saved, tmp_path):
    name = "scales.0.to_logits.weight"
    with safe_open(str(saved), framework="pt") as f:
        w = f.get_tensor(name).clone()
    w[0, 0] = float("nan")
    bad = _rewrite(saved, tmp_path / "nan.safetensors", tensors={name: w})
    with pytest.raises(ib.ModelFileError, match=rf"tensor {name} has 1 of {w.numel()} values NaN or inf"):
        ib.load_model(bad)


# -- images and masks ------------------------------------------------------------------------------------------------
def test_uint8_images_are_accepted_and_divided_by_255(model):
    x8 = (torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 255).round().to(torch.uint8)
    assert torch.equal(model.encode(x8).tokens, model.encode(x8.float() / 255).tokens)


@pytest.mark.parametrize("transform, message", [
    (lambda x: x * 255, r"must lie in 0\.\.1, got values in \[.*\] \(this looks like 0\.\.255"),
    (lambda x: x * 2 - 1, r"must lie in 0\.\.1.*\(this looks like -1\.\.1"),
    (lambda x: x.index_fill(2, torch.tensor([3]), float("nan")), "contain NaN or inf"),
    (lambda x: x.index_fill(2, torch.tensor([3]), float("inf")), "contain NaN or inf"),
    (lambda x: (x * 255).to(torch.int32), "must be float in 0..1 or uint8 in 0..255, got dtype torch.int32"),
    (lambda x: x > 0.5, "got dtype torch.bool"),
])
def test_images_outside_0_1_are_refused(model, transform, message):
    with pytest.raises(ValueError, match=message):
        model.encode(transform(_images()))


def test_the_encode_node_refuses_nan_images(pack_modules):
    image_to_core = pack_modules[0].image_to_core

    image = torch.rand(1, 16, 16, 3)
    image[0, 2, 2, 1] = float("nan")
    with pytest.raises(ValueError, match="IMAGE contains NaN or inf"):
        image_to_core(image)
    assert torch.equal(image_to_core(torch.full((1, 4, 4, 3), 2.0)), torch.ones(1, 3, 4, 4))  # clamp still applies


def test_nan_mask_is_refused(model):
    codes = model.encode(_images())
    mask = torch.zeros(1, 16, 16)
    mask[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"mask contains NaN or inf values; give values in 0\.\.1"):
        model.masked_refine(codes, mask, cond=model.class_condition(0))


# -- integers, classes, conditions -------------------------------------------------------------------------------------
def test_numpy_integer_seed_batch_and_class_work_like_python_ints(model):
    a = model.sample(np.int64(2), cond=model.class_condition(np.int64(1)), seed=np.int32(5))
    b = model.sample(2, cond=model.class_condition(1), seed=5)
    assert torch.equal(a.tokens, b.tokens)
    c = model.sample(2, cond=model.class_condition(1), seed=[np.int64(5), np.int64(6)])
    assert torch.equal(c.tokens, b.tokens)


@pytest.mark.parametrize("call, message", [
    (lambda m: m.sample(2.0), "batch must be an integer, got float 2.0"),
    (lambda m: m.sample(True), "batch must be an integer, got bool True"),
    (lambda m: m.random_codes(0), "batch must be >= 1, got 0"),
    (lambda m: m.sample(1, seed=1.5), "seed must be an integer, got float 1.5"),
    (lambda m: m.sample(1, seed=False), "seed must be an integer, got bool False"),
    (lambda m: m.sample(2, seed=[1, 2.5]), r"seed\[1\] must be an integer, got float 2.5"),
    (lambda m: m.sample(2, seed=[1, 2, 3]), "got 3 seeds for a batch of 2"),
    (lambda m: m.sample(1, grid=(4.5, 4)), "grid height must be an integer"),
    (lambda m: m.reverse_step(m.random_codes(1), steps=1.0), "steps must be an integer"),
    (lambda m: m.noise(m.encode(_images()), level=2.0), "level must be an integer"),
    (lambda m: m.class_condition(7), r"class index 7 is out of range; valid indices are 0\.\.3"),
    (lambda m: m.class_condition(np.int64(-1)), r"class index -1 is out of range"),
])
def test_type_mistakes_name_the_argument(model, call, message):
    with pytest.raises(ValueError, match=message):
        call(model)


@pytest.mark.parametrize("value", [9, -1])
def test_out_of_range_condition_names_the_range(model, value):
    cond = Condition("class", torch.tensor([[value]]), ["x"], torch.zeros(1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"cond: token values .* out of range; this model takes class indices 0\.\.3"):
        model.sample(1, cond=cond)


# -- model files ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["abc", "", "-1", "1.5", "0"])
def test_malformed_format_version_is_named(saved, tmp_path, version):
    bad = _rewrite(saved, tmp_path / "v.safetensors", meta={"format_version": version})
    with pytest.raises(ib.ModelFileError, match=rf"format_version {version!r} is not a positive integer"):
        ib.load_model(bad)


def test_hand_edited_config_is_an_error(saved, tmp_path):
    with safe_open(str(saved), framework="pt") as f:
        cfg = json.loads(f.metadata()["config"])
    cfg["scales"][0]["target_len"] = 8  # e.g. a halved grid
    bad = _rewrite(saved, tmp_path / "edited.safetensors", meta={"config": json.dumps(cfg, sort_keys=True)})
    with pytest.raises(ib.ModelFileError, match="does not match its checksum .* changed after the file was written"):
        ib.load_model(bad)
    with pytest.raises(ib.ModelFileError, match="checksum"):
        ib.read_config(bad)


def test_files_without_a_checksum_still_load(model, saved, tmp_path):
    """Files written before the checksum existed (no config_sha256) load unverified."""
    with safe_open(str(saved), framework="pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k != "config_sha256"}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    old = save_safetensors(tensors, tmp_path / "old.safetensors", meta)
    assert ib.load_model(old).codebook_id == model.codebook_id


@pytest.mark.parametrize("dtype", [torch.int8, torch.float64, torch.uint8, torch.float8_e4m3fn])
def test_save_model_refuses_dtypes_it_cannot_load_back(model, tmp_path, dtype):
    with pytest.raises(ValueError, match=r"transformer_dtype .* cannot be stored and loaded back"):
        ib.save_model(model, tmp_path / "x.safetensors", transformer_dtype=dtype)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_save_model_round_trips_the_supported_dtypes(model, tmp_path, dtype):
    path = ib.save_model(model, tmp_path / "x.safetensors", transformer_dtype=dtype)
    back = ib.load_model(path, dtype=dtype)
    assert next(back.scales[0].parameters()).dtype == dtype


@pytest.mark.parametrize("key", ["config", "format", "format_version", "codebook_id", "config_sha256"])
def test_save_model_refuses_reserved_metadata_keys(model, tmp_path, key):
    with pytest.raises(ValueError, match=rf"extra_metadata may not set the reserved keys \['{key}'\]"):
        ib.save_model(model, tmp_path / "x.safetensors", extra_metadata={key: "x"})
    assert not any(tmp_path.iterdir())
    ib.save_model(model, tmp_path / "ok.safetensors", extra_metadata={"note": "kept"})


def test_save_model_refuses_a_float64_model(model, tmp_path):
    doubled = ib.build_model(model.config, seed=0, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"is torch.float64, which cannot be stored.*transformer_dtype"):
        ib.save_model(doubled, tmp_path / "x.safetensors")


# -- data folders and model names -------------------------------------------------------------------------------------
def test_training_data_below_a_dotted_path_is_found(tmp_path):
    from training.data import find_images

    root = tmp_path / ".cache" / "train" / "shapes"
    (root / "circle").mkdir(parents=True)
    (root / ".hidden").mkdir()
    from PIL import Image

    for p in (root / "circle" / "a.png", root / "circle" / ".b.png", root / ".hidden" / "c.png"):
        Image.new("RGB", (4, 4)).save(p)
    assert find_images(root) == [root / "circle" / "a.png"]
    rel = os.path.relpath(root, Path.cwd())
    assert find_images(Path(rel)) == [Path(rel) / "circle" / "a.png"]


def test_training_data_relative_path_with_dotdot(tmp_path, monkeypatch):
    from PIL import Image

    from training.data import find_images

    (tmp_path / "train" / "shapes").mkdir(parents=True)
    (tmp_path / "work").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "train" / "shapes" / "a.png")
    monkeypatch.chdir(tmp_path / "work")
    assert find_images("../train/shapes") == [Path("../train/shapes/a.png")]


@pytest.mark.parametrize("name", ["../outside.safetensors", "sub/../../outside.safetensors", "/etc/passwd",
                                  "..\\outside.safetensors", "C:\\models\\x.safetensors"])
def test_loader_fallback_stays_inside_its_folders(tmp_path, name, monkeypatch, pack_modules):
    comfy_bridge = pack_modules[1]

    inside = tmp_path / "models"
    inside.mkdir()
    (tmp_path / "outside.safetensors").write_bytes(b"x")
    monkeypatch.setattr(comfy_bridge, "FALLBACK_MODEL_DIRS", [str(inside)])
    with pytest.raises(ValueError, match="must name a file inside the 'imagebart' model folder"):
        comfy_bridge.model_path(name)


def test_loader_validate_inputs_refuses_names_outside(tmp_path, monkeypatch, pack_modules):
    _, comfy_bridge, loader = pack_modules
    ImageBARTLoader = loader.ImageBARTLoader

    inside = tmp_path / "models"
    (inside / "sub").mkdir(parents=True)
    (inside / "sub" / "m.safetensors").write_bytes(b"x")
    (tmp_path / "outside.safetensors").write_bytes(b"x")
    monkeypatch.setattr(comfy_bridge, "FALLBACK_MODEL_DIRS", [str(inside)])
    assert "inside the 'imagebart' model folder" in ImageBARTLoader.validate_inputs("../outside.safetensors")
    assert "inside" in ImageBARTLoader.validate_inputs(str(tmp_path / "outside.safetensors"))
    assert ImageBARTLoader.validate_inputs("sub/m.safetensors") is True


# -- temporary files --------------------------------------------------------------------------------------------------
def _killed_write_leftover(target: Path, suffix: str = ".tmp") -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=str(target.parent))
    os.write(fd, struct.pack("<Q", 1 << 40))  # half a file, as a kill -9 leaves it
    os.close(fd)
    return Path(tmp)


def test_save_model_removes_what_a_killed_save_left(model, tmp_path):
    target = tmp_path / "m.safetensors"
    stale = [_killed_write_leftover(target), _killed_write_leftover(target)]
    other = _killed_write_leftover(tmp_path / "other.safetensors")
    (tmp_path / ".m.safetensors.notes").write_text("a user's file")
    ib.save_model(model, target)
    assert not any(p.exists() for p in stale)
    assert other.exists() and (tmp_path / ".m.safetensors.notes").exists()  # only our temp names, only this target
    assert ib.load_model(target).codebook_id == model.codebook_id


def test_streaming_writer_removes_what_a_killed_conversion_left(tmp_path):
    from imagebart_core.fileio import StreamingSafetensorsWriter

    target = tmp_path / "converted.safetensors"
    stale = _killed_write_leftover(target)
    with StreamingSafetensorsWriter(target, {"x": (torch.float32, (2,))}, {"format": "test"}) as w:
        w.write("x", torch.ones(2))
        w.commit()
    assert not stale.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["converted.safetensors"]


def test_resumed_training_leaves_no_temp_file_and_one_log_row_per_step(tmp_path):
    """A run killed after logging steps 4-5 but before their checkpoint (and during two writes) resumes from
    step 3: the leftovers are removed and log.csv / log.jsonl have exactly one row per step."""
    import shutil

    from _training_fixtures import one_thread, scale_args, tiny_scale_setup

    from training.checkpoints import CHECKPOINT_NAME
    from training.train_scale import run

    threads = one_thread()
    next(threads)
    try:
        cfg, codes = tiny_scale_setup(tmp_path, n_items=12)
        out = tmp_path / "run"
        run(scale_args(cfg, codes, out, 2, 7, "--stop-after", "3"))
        ckpt = out / "checkpoints" / CHECKPOINT_NAME
        shutil.copy(ckpt, tmp_path / "step3.pt")
        run(scale_args(cfg, codes, out, 2, 7, "--stop-after", "5"))  # logs steps 4 and 5 ...
        shutil.copy(tmp_path / "step3.pt", ckpt)  # ... but the kill came before their checkpoint
        stale = [_killed_write_leftover(ckpt), _killed_write_leftover(out / "scale2.safetensors")]
        run(scale_args(cfg, codes, out, 2, 7))
        assert not any(p.exists() for p in stale)
        assert not [p for p in out.rglob(".*") if p.name.endswith(".tmp")]
        rows = (out / "log.csv").read_text().strip().splitlines()
        assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(1, 8))
        steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
        assert steps == list(range(1, 8))
    finally:
        threads.close()


FIXTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "reference" / "official-fixtures"


@pytest.mark.skipif(not (FIXTURES / "README.md").is_file(), reason="original-format fixtures not found")
def test_converter_refuses_a_nan_ema_tensor(tmp_path):
    from imagebart_core.original.convert import ConversionError, convert_release, locate_release

    name = "ffhq_4_scales_geometric"
    rel = tmp_path / name
    for path in (FIXTURES / name).rglob("*"):
        if path.is_file():
            target = rel / path.relative_to(FIXTURES / name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    ckpt = rel / "models" / name / "scale2.ckpt"
    sd = torch.load(os.path.realpath(ckpt), weights_only=True, map_location="cpu")
    key = next(k for k, v in sd["state_dict"].items()
               if k.startswith("transformer_ema.") and v.is_floating_point() and v.ndim == 2)
    sd["state_dict"][key] = torch.full_like(sd["state_dict"][key], float("nan"))
    ckpt.unlink()
    torch.save(sd, ckpt)
    out = tmp_path / "out" / "m.safetensors"
    with pytest.raises(ConversionError, match=rf"scale2\.ckpt: tensor {re.escape(key)} has (\d+) of \1 values NaN or inf"):
        convert_release(locate_release(rel, name), out)
    assert not out.parent.exists() or not any(out.parent.iterdir())
