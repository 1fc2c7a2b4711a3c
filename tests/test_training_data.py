"""Data sets, config building and the clear errors of the training package."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from imagebart_core.config import VQGANConfig
from training.data import DataError, ImageFolder, class_names_of
from training.make_shapes import write_shapes
from training.model_config import ConfigError, build_model_config
from training.shapes import SHAPES, make_sample


def test_shapes_deterministic_per_seed():
    a, b = make_sample(3, size=24, seed=1), make_sample(3, size=24, seed=1)
    assert a.image.tobytes() == b.image.tobytes() and a.label == b.label and a.caption == b.caption
    c = make_sample(3, size=24, seed=2)
    assert c.image.tobytes() != a.image.tobytes()
    assert a.image.size == (24, 24) and a.caption.startswith("a ") and SHAPES[a.label] in a.caption.split()[2]


def test_shapes_cover_classes_and_relations():
    items = [make_sample(i, size=32, seed=0) for i in range(60)]
    assert {it.label for it in items} == set(range(len(SHAPES)))
    assert any(" above " in it.caption or " left of " in it.caption for it in items)


def test_make_shapes_folder_roundtrip(tmp_path):
    root = write_shapes(tmp_path / "shapes", n=12, size=16, seed=0)
    assert class_names_of(root) == sorted(SHAPES)
    ds = ImageFolder(root, 16)
    assert len(ds) == 12 and ds.has_labels()
    item = ds[0]
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    assert -1.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    sample = make_sample(int(ds.files[0].stem), size=16, seed=0)
    assert item["caption"] == sample.caption
    assert ds.class_names[item["label"]] == sample.class_name
    with pytest.raises(FileExistsError):
        write_shapes(tmp_path / "shapes", n=2, size=16)


def test_image_folder_resizes_crops_and_augments_deterministically(tmp_path):
    (tmp_path / "x").mkdir()
    Image.new("RGB", (40, 20), (255, 0, 0)).save(tmp_path / "x" / "wide.png")
    ds = ImageFolder(tmp_path, 16, random_crop=True, hflip=True, seed=3)
    img = ds.load(0, epoch=0)
    assert img.shape == (3, 16, 16)
    assert torch.equal(img, ds.load(0, epoch=0))
    assert ds[0]["label"] == 0 and ds[0]["caption"] == ""
    assert ds[(0, 1)]["image"].shape == (3, 16, 16)


def test_empty_folder_and_unreadable_image_errors(tmp_path):
    with pytest.raises(DataError, match="no images found"):
        ImageFolder(tmp_path, 16)
    with pytest.raises(DataError, match="does not exist"):
        ImageFolder(tmp_path / "missing", 16)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    ds = ImageFolder(tmp_path, 16)
    with pytest.raises(DataError, match="cannot read image .*bad.png"):
        ds[0]
    with pytest.raises(DataError, match="cannot read image"):
        ImageFolder(tmp_path, 16, check=True)


def test_unknown_class_folder_is_an_error(tmp_path):
    (tmp_path / "zebra").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "zebra" / "a.png")
    with pytest.raises(DataError, match="zebra"):
        ImageFolder(tmp_path, 8, class_names=["cat"])


def test_model_config_builder():
    vq = VQGANConfig(base_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(),
                     resolution=16, z_channels=8, embed_dim=8, n_embed=48)
    cfg = build_model_config(vqgan=vq, vocab_size=20, image_size=32, n_scales=3, size="tiny",
                             conditioning="class", class_names=["a", "b"])
    assert cfg.grid == (8, 8) and cfg.vocab_size == 20 and cfg.n_scales == 3
    assert cfg.scales[-1].kind == "decoder_only" and cfg.scales[0].kind == "encoder_decoder"
    assert cfg.schedule.betas[-1] == 1.0 and cfg.conditioning.class_names == ["a", "b"]
    ab = build_model_config(vqgan=vq, vocab_size=20, image_size=16, n_scales=2, size="tiny", alpha_bar=[1, 0.6, 0])
    assert ab.schedule.betas == pytest.approx([0.0, 0.4, 1.0])
    with pytest.raises(ConfigError, match="not a multiple of the VQGAN factor 4"):
        build_model_config(vqgan=vq, vocab_size=20, image_size=30, n_scales=2, size="tiny")
    with pytest.raises(ConfigError, match="codebook"):
        build_model_config(vqgan=vq, vocab_size=100, image_size=16, n_scales=2, size="tiny")
    with pytest.raises(ConfigError, match="class names"):
        build_model_config(vqgan=vq, vocab_size=20, image_size=16, n_scales=2, size="tiny", conditioning="class")


@pytest.mark.parametrize("module", ["train_vqgan", "shrink_codebook", "train_scale", "assemble", "make_shapes",
                                    "model_config", "precompute_codes"])
def test_every_entry_point_has_help(module, capsys):
    import importlib

    mod = importlib.import_module(f"training.{module}")
    with pytest.raises(SystemExit) as exc:
        mod.main(["--help"])
    assert exc.value.code == 0
    assert "usage: python -m training." in capsys.readouterr().out
