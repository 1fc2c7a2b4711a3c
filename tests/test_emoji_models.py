"""The bundled colour-emoji models (models/imagebart-emoji-*.safetensors) are what training.emoji_recipe makes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import imagebart_core as ib
from training.emoji_recipe import CLASS_MODEL, TEXT_MODEL, EmojiRecipeSettings

BUNDLED = Path(__file__).resolve().parents[1] / "models"
NAMES = [CLASS_MODEL, TEXT_MODEL]


def _path(name: str) -> Path:
    path = BUNDLED / name
    if not path.is_file():
        pytest.skip(f"bundled emoji model {path} is not present (python -m training.emoji_recipe)")
    return path


def test_the_record_holds_the_recipe_defaults_and_the_metrics_file_its_figures():
    record, metrics = BUNDLED / "emoji_recipe.json", BUNDLED / "emoji_metrics.json"
    if not record.is_file() or not metrics.is_file():
        pytest.skip("no bundled emoji recipe record")
    recorded = json.loads(record.read_text())
    settings = dict(recorded["settings"])
    used = settings.pop("precision_used")  # bf16 where the CPU has it (the bundled run: bf16)
    assert set(used) == {"vqgan", "scales"} and set(used.values()) <= {"bf16", "fp32"}
    assert settings == json.loads(json.dumps(dataclasses.asdict(EmojiRecipeSettings())))
    assert set(recorded["outputs"].values()) == set(NAMES)
    # every training step timed ("data" is absent when the rendered data set was already in the work folder)
    assert {"vqgan+classifier", "shrink", "configs", "codes", "scales", "assemble", "evaluate"} <= set(
        recorded["step_seconds"])
    assert recorded["total_seconds"] >= sum(recorded["step_seconds"].values()) - 1
    m = json.loads(metrics.read_text())
    assert {"vqgan", "classifier", "class", "text", "goals"} <= set(m)
    assert set(m["class"]["scales"]) == {str(s) for s in range(1, EmojiRecipeSettings().n_scales + 1)}
    for kind in ("class", "text"):
        for scale in m[kind]["scales"].values():
            assert scale["loss"] < scale["uniform_model"], f"{kind}: a scale no better than a uniform model"


@pytest.mark.parametrize("name", NAMES)
def test_bundled_files_are_what_the_writer_makes_of_their_weights(name, tmp_path):
    """Saving the loaded weights again gives the same bytes: the files are the recipe's writer's output."""
    path = _path(name)
    again = ib.save_model(ib.load_model(path), tmp_path / name, transformer_dtype=torch.float16)
    assert again.read_bytes() == path.read_bytes()


def test_the_two_files_fit_the_size_budget_and_match_the_recipe():
    paths = [_path(n) for n in NAMES]
    assert sum(p.stat().st_size for p in paths) <= 30 * 2**20
    s = EmojiRecipeSettings()
    for path, kind in zip(paths, ("class", "text")):
        cfg = ib.load_model(path).config
        assert cfg.conditioning.kind == kind and cfg.conditioning.null_condition
        assert cfg.n_scales == s.n_scales and cfg.grid[0] * cfg.vqgan.factor == s.image_size
        assert cfg.vqgan.base_channels == s.vq_base_channels and cfg.vqgan.n_embed == s.vq_n_embed
    from safetensors import safe_open

    with safe_open(str(paths[0]), "pt") as fh:
        dtypes = {fh.get_tensor(k).dtype for k in fh.keys() if k.startswith("scales.")}
    assert dtypes == {torch.float16}


@pytest.mark.slow
def test_the_recipe_reproduces_the_bundled_files(tmp_path):
    """Retrains from scratch (about an hour on 2 cores) and compares every tensor with the bundled files."""
    from training.compare_models import compare_files
    from training.emoji_catalog import EMOJI_TEST_PATH
    from training.emoji_recipe import main
    from training.make_emoji import FONT_PATH

    if not FONT_PATH.is_file() or not EMOJI_TEST_PATH.is_file():
        pytest.skip("needs fonts-noto-color-emoji and unicode-data")
    paths = [_path(n) for n in NAMES]
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)  # the recipe records relative paths: run it as the bundled run was
    try:
        main(["--work", "runs/emoji", "--models", "runs/emoji/models"])
    finally:
        os.chdir(cwd)
    for path in paths:
        report = compare_files(path, tmp_path / "runs" / "emoji" / "models" / path.name)
        assert report["same"], report
