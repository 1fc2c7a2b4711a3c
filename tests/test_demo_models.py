"""Behaviour of the bundled shapes demo models that random weights cannot show (they ship in models/; the emoji
models are tested in tests/test_emoji_models.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import imagebart_core as ib
from tools.demo import BUNDLED_MODELS
from tools.demo import SHAPES_CLASS_MODEL as CLASS_MODEL
from tools.demo import SHAPES_TEXT_MODEL as TEXT_MODEL
from training.demo_recipe import class_detection_rate
from training.shape_detector import detect_shapes
from training.shapes import make_sample


def _load(name: str) -> ib.ImageBART:
    path = BUNDLED_MODELS / name
    if not path.is_file():
        pytest.skip(f"bundled demo model {path} is not present (train it with python -m training.demo_recipe)")
    return ib.load_model(path)


@pytest.fixture(scope="module")
def class_model():
    return _load(CLASS_MODEL)


@pytest.fixture(scope="module")
def text_model():
    return _load(TEXT_MODEL)


def test_class_conditional_samples_are_mostly_of_that_class(class_model):
    """The largest shape the detector finds is the asked class in most samples (chance: 20%)."""
    rate = class_detection_rate(class_model, per_class=6, guidance=2.0, seed=0)
    assert rate["overall"] > 0.5, f"only {rate['overall']:.0%} of class-conditional samples show their class: {rate}"
    # and a sample is one shape, as the data are
    with torch.inference_mode():
        images = class_model.decode(class_model.sample(10, cond=class_model.class_condition(["circle"] * 10), seed=1))
    assert sum(len(detect_shapes(img)) == 1 for img in images) >= 8


def _single_shape_image(size: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    for i in range(200):
        sample = make_sample(i, size, seed=7, max_shapes=1)
        found = detect_shapes(np.asarray(sample.image))
        if len(found) == 1 and found[0].kind in ("square", "circle") and found[0].area > 0.3 * size * size:
            image = torch.from_numpy(np.array(sample.image)).permute(2, 0, 1).float() / 255.0
            return image, found[0].bbox
    raise AssertionError("no big single-shape image found")


def test_inpainting_keeps_the_context_and_continues_a_cut_shape(class_model):
    size = class_model.config.grid[0] * class_model.config.vqgan.factor
    image, (x0, y0, x1, y1) = _single_shape_image(size)
    codes = class_model.encode(image[None])
    mask = torch.zeros(1, size, size)
    xm = (x0 + x1) // 2
    mask[:, y0:y1, xm:x1] = 1.0  # cut away the right half of the shape
    regen = class_model.token_mask(mask, codes)
    filled = []
    for seed in range(4):
        with torch.inference_mode():
            out = class_model.masked_refine(codes, mask, seed=seed)
        assert torch.equal(out.tokens[~regen], codes.tokens[~regen])  # the context is kept exactly
        picture = class_model.decode(out)[0]
        background = image[:, 0, 0]
        hole = picture[:, y0:y1, xm:x1]
        foreground = (hole - background[:, None, None]).abs().sum(0) > 0.25
        filled.append(float(foreground.float().mean()))
    assert np.median(filled) > 0.3, f"the masked half of the shape was left mostly empty: {filled}"


def test_a_text_condition_changes_the_content_as_asked(text_model):
    prompts = ["a red circle", "a blue square"]
    n = 6
    with torch.inference_mode():
        cond = text_model.text_condition([p for p in prompts for _ in range(n)])
        images = text_model.decode(text_model.sample(2 * n, cond=cond, seed=0, guidance=2.0))
    def matches(img, color, kind):
        return any(d.color == color and d.kind == kind for d in detect_shapes(img))
    red = sum(matches(img, "red", "circle") for img in images[:n])
    blue = sum(matches(img, "blue", "square") for img in images[n:])
    assert red + blue >= n, f"prompts followed in {red}/{n} and {blue}/{n} samples"


def test_the_recipe_record_matches_the_recipe_defaults():
    """models/demo_recipe.json (written by the run that made the bundled files) has the recipe's current settings."""
    import dataclasses
    import json

    from training.demo_recipe import DemoSettings

    record = BUNDLED_MODELS / "demo_recipe.json"
    if not record.is_file():
        pytest.skip(f"{record} is not present")
    recorded = json.loads(record.read_text())
    assert recorded["settings"] == json.loads(json.dumps(dataclasses.asdict(DemoSettings())))
    assert set(recorded["outputs"].values()) == {CLASS_MODEL, TEXT_MODEL}


@pytest.mark.parametrize("name", [CLASS_MODEL, TEXT_MODEL])
def test_bundled_files_are_what_the_writer_makes_of_their_weights(name, tmp_path):
    """The recipe's output is reproducible byte for byte: saving the loaded weights again gives the same file."""
    path = BUNDLED_MODELS / name
    if not path.is_file():
        pytest.skip(f"bundled demo model {path} is not present")
    again = ib.save_model(ib.load_model(path), tmp_path / name, transformer_dtype=torch.float16)
    assert again.read_bytes() == path.read_bytes()
