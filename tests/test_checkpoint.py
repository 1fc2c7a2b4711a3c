"""The native model file: bit-exact round trip, atomic writes, clear errors for bad files."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

import imagebart_core as ib
from imagebart_core import checkpoint


@pytest.mark.parametrize("conditioning,residual", [("none", True), ("class", False), ("text", False)])
def test_save_load_is_bit_exact(tmp_path, conditioning, residual):
    model = ib.build_model(ib.tiny_config(conditioning=conditioning, residual=residual), seed=4)
    path = ib.save_model(model, tmp_path / "m.safetensors")
    loaded = ib.load_model(path)
    assert loaded.config.to_dict() == model.config.to_dict()
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name
    assert loaded.codebook_id == model.codebook_id
    cond = None
    if conditioning == "class":
        cond = model.class_condition([1])
    elif conditioning == "text":
        cond = model.text_condition(["a green triangle"])
    assert torch.equal(model.sample(1, cond=cond, seed=3).tokens, loaded.sample(1, cond=cond, seed=3).tokens)
    meta = checkpoint.read_metadata(path)
    assert meta["format"] == "imagebart" and int(meta["format_version"]) == ib.config.FORMAT_VERSION


def test_load_in_bf16_keeps_the_vqgan_in_float32(tmp_path):
    model = ib.build_model(ib.tiny_config(), seed=0)
    path = ib.save_model(model, tmp_path / "m.safetensors")
    loaded = ib.load_model(path, dtype=torch.bfloat16)
    assert loaded.scales[0].to_logits.weight.dtype == torch.bfloat16
    assert loaded.vqgan.decoder.conv_out.weight.dtype == torch.float32
    assert loaded.sample(1, seed=0).level == 1


def test_save_refuses_to_overwrite_and_is_atomic(tmp_path, monkeypatch):
    model = ib.build_model(ib.tiny_config(), seed=0)
    path = ib.save_model(model, tmp_path / "m.safetensors")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        ib.save_model(model, path)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ib.save_model(model, path, overwrite=True)
    assert path.read_bytes() == before  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left


def test_truncated_file_raises_a_clear_error(tmp_path):
    model = ib.build_model(ib.tiny_config(), seed=0)
    path = ib.save_model(model, tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ib.ModelFileError, match="truncated or corrupt"):
        ib.load_model(path)
    path.write_bytes(b"\x00" * 5)
    with pytest.raises(ib.ModelFileError):
        ib.load_model(path)


def _rewrite(path, mutate):
    """Rewrite a model file after ``mutate(tensors)``, keeping its metadata."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    mutate(tensors)
    path.unlink()
    save_file(tensors, str(path), metadata=meta)


def test_wrong_shape_and_missing_or_unexpected_tensors_are_named(tmp_path):
    model = ib.build_model(ib.tiny_config(), seed=0)
    path = ib.save_model(model, tmp_path / "m.safetensors")
    _rewrite(path, lambda t: t.__setitem__("scales.0.to_logits.weight", torch.zeros(3, 3)))
    with pytest.raises(ib.ModelFileError, match=r"scales\.0\.to_logits\.weight has shape \(3, 3\)"):
        ib.load_model(path)
    _rewrite(path, lambda t: (t.pop("scales.0.to_logits.weight"), t.__setitem__("extra.thing", torch.zeros(1))))
    with pytest.raises(ib.ModelFileError, match=r"missing tensors scales\.0\.to_logits\.weight.*unexpected tensors extra"):
        ib.load_model(path)


def test_other_files_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        ib.load_model(tmp_path / "nope.safetensors")
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(other))
    with pytest.raises(ib.ModelFileError, match="not an ImageBART model"):
        ib.load_model(other)
    newer = tmp_path / "newer.safetensors"
    save_file({"x": torch.zeros(2)}, str(newer), metadata={"format": "imagebart", "format_version": "99"})
    with pytest.raises(ib.ModelFileError, match="Update the pack"):
        ib.load_model(newer)


def test_header_is_plain_json_with_the_config(tmp_path):
    model = ib.build_model(ib.tiny_config(conditioning="class"), seed=0)
    path = ib.save_model(model, tmp_path / "m.safetensors")
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    config = json.loads(header["__metadata__"]["config"])
    assert config["conditioning"]["kind"] == "class" and config["vocab_size"] == 32
    assert ib.read_config(path).to_dict() == model.config.to_dict()


def test_transformers_can_be_stored_in_half_precision(tmp_path):
    model = ib.build_model(ib.tiny_config(), seed=0)
    full = ib.save_model(model, tmp_path / "full.safetensors")
    half = ib.save_model(model, tmp_path / "half.safetensors", transformer_dtype=torch.float16)
    assert half.stat().st_size < full.stat().st_size
    loaded = ib.load_model(half)
    assert loaded.scales[0].to_logits.weight.dtype == torch.float32  # cast back on load
    assert torch.equal(loaded.vqgan.quantize.embedding.weight, model.vqgan.quantize.embedding.weight)
    w = model.scales[0].to_logits.weight
    assert torch.equal(loaded.scales[0].to_logits.weight, w.half().float())
