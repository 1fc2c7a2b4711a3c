"""The example images reach ComfyUI's input folder on start-up, without overwriting anything of the user's."""

import asyncio
import importlib.util
import logging
import os
import sys
import types

import pytest

from tools.comfy_stub import stubbed_comfy_api
from tools.workflow_tools import ROOT, WORKFLOWS

SOURCE = WORKFLOWS / "inputs"
NAMES = sorted(p.name for p in SOURCE.glob("imagebart_*.png"))


@pytest.fixture
def examples():
    with stubbed_comfy_api():
        from nodes import example_inputs

        yield example_inputs


def test_every_workflow_image_is_provided():
    """Every image a workflow loads is one the pack copies (so an empty input folder is enough)."""
    import json

    used = set()
    for path in WORKFLOWS.glob("*.json"):
        for node in json.loads(path.read_text(encoding="utf-8"))["nodes"]:
            if node["type"] == "LoadImage":
                used.add(node["widgets_values"][0])
    assert used and used <= set(NAMES), used - set(NAMES)
    assert set(os.listdir(SOURCE)) == set(NAMES)  # nothing in inputs/ that the pack would not provide


def test_copies_into_an_empty_input_folder_once(examples, tmp_path):
    target = tmp_path / "input"  # does not exist yet
    assert examples.provide_example_inputs(target) == NAMES
    assert sorted(os.listdir(target)) == NAMES  # no temporary files left
    for name in NAMES:
        assert (target / name).read_bytes() == (SOURCE / name).read_bytes()
    assert examples.provide_example_inputs(target) == []  # already there: nothing written
    (target / NAMES[0]).unlink()
    assert examples.provide_example_inputs(target) == [NAMES[0]]  # a deleted example comes back


def test_never_overwrites_a_users_file(examples, tmp_path, caplog):
    mine = tmp_path / NAMES[0]
    mine.write_bytes(b"my own picture")
    (tmp_path / NAMES[1]).mkdir()  # even a folder of that name
    with caplog.at_level(logging.WARNING, logger="imagebart.nodes"):
        copied = examples.provide_example_inputs(tmp_path)
    assert copied == NAMES[2:]
    assert mine.read_bytes() == b"my own picture" and (tmp_path / NAMES[1]).is_dir()
    assert f"{mine} is not the pack's example image; it is left as it is" in caplog.text


def test_a_failed_copy_leaves_nothing_and_does_not_stop_comfyui(examples, tmp_path, monkeypatch, caplog):
    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(examples.os, "fsync", broken_fsync)
    fake = types.ModuleType("folder_paths")
    fake.get_input_directory = lambda: str(tmp_path)
    monkeypatch.setitem(sys.modules, "folder_paths", fake)
    with caplog.at_level(logging.WARNING, logger="imagebart.nodes"):
        assert examples.provide_to_comfyui() == []
    assert os.listdir(tmp_path) == []
    assert "could not copy the example images" in caplog.text and "No space left" in caplog.text


def test_comfyui_loading_the_pack_provides_the_images(tmp_path, monkeypatch):
    """The pack's entry point, called by ComfyUI at start-up, copies the images into its input folder."""
    fake = types.ModuleType("folder_paths")
    fake.models_dir = str(tmp_path / "models")
    fake.folder_names_and_paths = {}
    fake.get_input_directory = lambda: str(tmp_path / "input")
    with stubbed_comfy_api():
        monkeypatch.setitem(sys.modules, "folder_paths", fake)
        spec = importlib.util.spec_from_file_location("_imagebart_pack_entry", ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, "_imagebart_pack_entry", module)
        spec.loader.exec_module(module)
        extension = asyncio.run(module.comfy_entrypoint())
        assert len(asyncio.run(extension.get_node_list())) == 11
    for name in [k for k in sys.modules if k.startswith("_imagebart_pack_entry.")]:
        del sys.modules[name]
    assert sorted(os.listdir(tmp_path / "input")) == NAMES
