"""Loading a model file reads into owned memory, piece by piece: no memory map stays behind, no full-size
intermediate copy (e.g. float32 on the way to bfloat16) is made, and the values are exactly a plain cast's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import imagebart_core as ib
from imagebart_core import fileio
from imagebart_core.fileio import SafetensorsReader

linux_proc = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists() or not sys.platform.startswith("linux"),
                                reason="needs Linux /proc (memory maps and the peak resident set size)")


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # VmHWM := VmRSS


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    model = ib.build_model(ib.tiny_config(n_scales=2, conditioning="class"), seed=0)
    return ib.save_model(model, tmp_path_factory.mktemp("load") / "tiny.safetensors")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_loaded_values_are_the_stored_ones_cast(tiny_file, dtype):
    stored = load_file(str(tiny_file))
    model = ib.load_model(tiny_file, dtype=dtype)
    for name, value in model.state_dict().items():
        want = stored[name]
        if want.is_floating_point():
            want = want.to(torch.float32 if name.startswith("vqgan.") else dtype)
        assert value.dtype == want.dtype and torch.equal(value, want), name


@linux_proc
def test_no_mapping_of_the_file_stays_and_tensors_own_their_memory(tiny_file):
    model = ib.load_model(tiny_file, dtype=torch.bfloat16)
    maps = Path("/proc/self/maps").read_text()
    assert str(tiny_file.resolve()) not in maps, "a memory map of the model file outlived load_model"
    for name, t in model.state_dict().items():
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size(), name
    assert {p.dtype for s in model.scales for p in s.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.vqgan.parameters()} == {torch.float32}


@linux_proc
def test_reading_fp32_as_bf16_makes_no_float32_copy(tmp_path):
    n = 32 << 20  # 32 M values: 128 MB stored in float32, 64 MB in bfloat16
    path = tmp_path / "big.safetensors"
    save_file({"w": torch.linspace(-3.0, 3.0, n)}, str(path))
    out_bytes = n * 2
    with SafetensorsReader(path) as reader:
        before = _status("VmRSS")
        _reset_peak()
        w = reader.read("w", torch.bfloat16)
        grown = _status("VmHWM") - before
    assert w.dtype == torch.bfloat16 and w.shape == (n,)
    # the result plus one staging piece; a float32 copy (128 MB) or mapped file pages would exceed it
    assert grown < out_bytes + fileio.READ_CHUNK_BYTES + (16 << 20), f"peak grew {grown / 1e6:.0f} MB"
    assert torch.equal(w[:: 1 << 20], torch.linspace(-3.0, 3.0, n)[:: 1 << 20].to(torch.bfloat16))


def test_reader_pieces_cover_every_value_once(tmp_path, monkeypatch):
    monkeypatch.setattr(fileio, "READ_CHUNK_BYTES", 64)  # many pieces, a last short one
    tensors = {"a": torch.randn(7, 13), "b": torch.arange(50, dtype=torch.int64), "c": torch.tensor(2.5),
               "d": torch.rand(9) > 0.5, "e": torch.empty(0, 4), "f": torch.randn(33).half()}
    path = tmp_path / "t.safetensors"
    save_file(tensors, str(path))
    with SafetensorsReader(path) as reader:
        assert sorted(reader.names) == sorted(tensors)
        for name, want in tensors.items():
            assert reader.shape(name) == tuple(want.shape) and reader.dtype(name) == want.dtype
            seen = []
            got = reader.read(name, on_chunk=lambda v: seen.append(v.clone()))
            assert torch.equal(got, want), name
            if want.numel():
                assert torch.equal(torch.cat(seen), want.reshape(-1)), name
                assert len(seen) == -(-want.numel() * want.element_size() // 64)
            cast = reader.read(name, torch.bfloat16) if want.is_floating_point() else None
            if cast is not None:
                assert torch.equal(cast, want.to(torch.bfloat16)), name


def test_reader_refuses_a_truncated_file(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"a": torch.randn(100)}, str(path))
    raw = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(raw[:-10])
    with SafetensorsReader(cut) as reader, pytest.raises(ValueError, match="tensor a .* does not fit"):
        reader.read("a")
    (tmp_path / "short.safetensors").write_bytes(raw[:5])
    with pytest.raises(ValueError, match="too short"):
        SafetensorsReader(tmp_path / "short.safetensors")


def test_swap_bytes_reverses_each_element():
    x = torch.tensor([1, 256, -2], dtype=torch.int32)
    swapped = fileio.swap_bytes(x.view(torch.uint8), 4).view(torch.int32)
    assert swapped.tolist() == [1 << 24, 1 << 16, int.from_bytes((-2).to_bytes(4, "little", signed=True), "big",
                                                                  signed=True)]
    assert torch.equal(fileio.swap_bytes(swapped.view(torch.uint8), 4).view(torch.int32), x)
