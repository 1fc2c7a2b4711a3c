"""The simple shapes detector used to check generated images."""

from __future__ import annotations

import numpy as np

from training.shape_detector import detect_shapes
from training.shapes import make_sample


def test_detector_finds_the_main_shape_and_colour_of_procedural_images():
    hits = colors = 0
    n = 120
    for i in range(n):
        sample = make_sample(i, 64, seed=3)
        found = detect_shapes(np.asarray(sample.image))
        words = sample.caption.split()
        hits += sample.class_name in [d.kind for d in found]
        colors += any(d.kind == words[2] and d.color == words[1] for d in found)
    assert hits / n > 0.95 and colors / n > 0.95


def test_detector_sees_nothing_on_a_plain_image():
    assert detect_shapes(np.full((32, 32, 3), 240, dtype=np.uint8)) == []
