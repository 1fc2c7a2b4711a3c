"""python -m tools.random_model writes a loadable random-weight model."""

import subprocess
import sys

import pytest

import imagebart_core as ib
from tools.random_model import main, random_config


@pytest.mark.parametrize("kind", ["none", "class", "text"])
def test_random_model_file(tmp_path, kind):
    out = tmp_path / f"m-{kind}.safetensors"
    assert main(["--out", str(out), "--conditioning", kind, "--grid", "4", "4", "--scales", "2"]) == 0
    model = ib.load_model(out)
    assert model.config.grid == (4, 4) and model.n_scales == 2 and model.config.conditioning.kind == kind
    cond = {"none": None, "class": lambda: model.class_condition("tiger"),
            "text": lambda: model.text_condition("a cat")}[kind]
    codes = model.sample(1, cond() if cond else None, seed=0)
    assert model.decode(codes).shape == (1, 3, 16, 16)
    with pytest.raises(FileExistsError):
        main(["--out", str(out), "--conditioning", kind])


def test_default_grid_is_64px_and_cli_runs(tmp_path):
    cfg = random_config("none")
    assert tuple(cfg.grid) == (16, 16) and cfg.vqgan.factor == 4
    out = tmp_path / "m.safetensors"
    subprocess.run([sys.executable, "-m", "tools.random_model", "--out", str(out), "--grid", "4", "4"],
                   check=True, capture_output=True)
    assert ib.read_config(out).grid == (4, 4)
    again = tmp_path / "again.safetensors"
    main(["--out", str(again), "--grid", "4", "4"])
    assert ib.load_model(out).codebook_id == ib.load_model(again).codebook_id  # same seed, same weights
    other = tmp_path / "other.safetensors"
    main(["--out", str(other), "--grid", "4", "4", "--seed", "1"])
    assert ib.load_model(other).codebook_id != ib.load_model(out).codebook_id
