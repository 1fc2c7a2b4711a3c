"""Config dataclasses: JSON round trip and validation."""

from __future__ import annotations

import pytest

import imagebart_core as ib
from imagebart_core.original.presets import ORIGINAL_MODELS, original_config


@pytest.mark.parametrize("kind", ["none", "class", "text"])
def test_json_round_trip(kind):
    cfg = ib.tiny_config(conditioning=kind, residual=True)
    again = ib.ModelConfig.from_json(cfg.to_json())
    assert again == cfg
    assert isinstance(again.vqgan.channel_mult, tuple) and isinstance(again.grid, tuple)


@pytest.mark.parametrize("name", ORIGINAL_MODELS)
def test_original_presets_are_valid_and_round_trip(name):
    cfg = original_config(name)
    assert ib.ModelConfig.from_json(cfg.to_json()) == cfg
    assert cfg.vqgan.factor == 16 and cfg.grid == (16, 16)


def test_validation_names_the_problem():
    cfg = ib.tiny_config()
    cfg.schedule.betas = [0.0, 0.5, 0.9]
    with pytest.raises(ValueError, match="last beta"):
        cfg.validate()
    cfg = ib.tiny_config()
    cfg.scales[0].vocab_size = 7
    with pytest.raises(ValueError, match="vocab_size"):
        cfg.validate()
    with pytest.raises(ValueError, match="unknown model config fields"):
        ib.ModelConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="unknown VQGANConfig fields"):
        ib.ModelConfig.from_dict({"vqgan": {"chanels": 3}})
