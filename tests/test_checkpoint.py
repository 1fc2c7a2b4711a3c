"""The native model file: bit-exact round trip, atomic writes, clear errors for bad files."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import imagebart_core as ib
from imagebart_core import checkpoint, fileio


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

    def broken_write(*args, **kwargs):
        raise OSError("disk full")  # after the header was written: a half-written temporary file exists

    monkeypatch.setattr(fileio, "_tensor_bytes", broken_write)
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


def test_safetensors_writer_is_reproducible_and_readable(tmp_path):
    """Same tensors and metadata -> the same bytes, whatever the dict order; safetensors reads it back."""
    g = torch.Generator().manual_seed(0)
    tensors = {
        "b.weight": torch.randn(3, 5, generator=g), "a.half": torch.randn(7, generator=g).half(),
        "c.bf16": torch.randn(2, 3, generator=g).bfloat16(), "d.ids": torch.arange(5, dtype=torch.int16),
        "e.mask": torch.tensor([True, False, True]), "f.empty": torch.zeros(0, 4), "g.t": torch.randn(4, 6).t(),
    }
    meta = {"format": "x", "config": '{"a": 1}', "zz": "last"}
    first = fileio.save_safetensors(tensors, tmp_path / "one.safetensors", meta)
    reordered = dict(reversed(list(tensors.items())))
    second = fileio.save_safetensors(reordered, tmp_path / "two.safetensors", dict(reversed(list(meta.items()))))
    assert first.read_bytes() == second.read_bytes()
    assert first.stat().st_mode & 0o777 == 0o644  # readable by others, like any file a user saves
    assert int.from_bytes(first.read_bytes()[:8], "little") % 8 == 0
    loaded = load_file(str(first))
    assert loaded.keys() == tensors.keys()
    for k, v in tensors.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v), k
    with safe_open(str(first), "pt") as f:
        assert f.metadata() == meta
    with pytest.raises(ValueError, match="complex"):
        fileio.save_safetensors({"z": torch.zeros(2, dtype=torch.complex64)}, tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()


def test_saving_a_model_twice_gives_the_same_bytes(tmp_path):
    model = ib.build_model(ib.tiny_config(conditioning="text"), seed=0)
    a = ib.save_model(model, tmp_path / "a.safetensors", transformer_dtype=torch.float16)
    b = ib.save_model(ib.load_model(a), tmp_path / "b.safetensors", transformer_dtype=torch.float16)
    assert a.read_bytes() == b.read_bytes()
