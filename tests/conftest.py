"""Shared fixtures: tiny random-weight models (built once per session) and the reference folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import imagebart_core as ib

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = REPO_ROOT.parent / "shared" / "reference"


def shared_reference_or_skip(*parts: str) -> Path:
    """A path under ../shared/reference, or skip the test when the folder is not there (a user's clone)."""
    path = SHARED_REFERENCE.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference material not available: {path} (only present in the project's CI checkout)")
    return path


@pytest.fixture(scope="session")
def tiny_model() -> ib.ImageBART:
    torch.manual_seed(0)
    return ib.build_model(ib.tiny_config(n_scales=3, residual=True), seed=1)


@pytest.fixture(scope="session")
def class_model() -> ib.ImageBART:
    return ib.build_model(ib.tiny_config(n_scales=2, conditioning="class"), seed=2)


@pytest.fixture(scope="session")
def text_model() -> ib.ImageBART:
    return ib.build_model(ib.tiny_config(n_scales=2, conditioning="text"), seed=3)
