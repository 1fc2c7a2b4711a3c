"""The workflows for the released CompVis models (workflows/released/): consistent with the nodes, a note naming
the model file and the ``get`` command, inputs that ship with the pack, and a loader error that says what to run
when the weights are not there (they never ship)."""

from __future__ import annotations

import pytest

from imagebart_core.get import DEFAULT_DTYPE, output_name
from imagebart_core.original.releases import RELEASES
from tools.comfy_stub import load_nodes, stubbed_comfy_api
from tools.workflow_tools import WORKFLOWS, check_workflow, core_definitions, load_workflow, pack_definitions, to_api

RELEASED = WORKFLOWS / "released"
PATHS = sorted(RELEASED.glob("*.json"))
EXPECTED = {"ffhq_upper_half_completion": "ffhq_4_scales_geometric", "imagenet_class_sampling": "cin_5_scales_custom",
            "imagenet_class_guided_edit": "cin_5_scales_custom", "churches_inpainting": "churches_3_scales"}
FILES = {"model_name": {output_name(n, DEFAULT_DTYPE) for n in RELEASES},
         "image": {p.name for p in (WORKFLOWS / "inputs").glob("*.png")}}


@pytest.fixture(scope="module")
def defs():
    return {**core_definitions(), **pack_definitions()}


def test_the_four_released_workflows_exist():
    assert {p.stem for p in PATHS} == set(EXPECTED)


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_released_workflow_is_consistent_and_says_what_to_run(path, defs):
    wf = load_workflow(path)
    assert check_workflow(wf, defs, FILES) == []
    name = EXPECTED[path.stem]
    loader = next(n for n in wf["nodes"] if n["type"] == "ImageBARTLoader")
    assert loader["widgets_values"][0] == output_name(name, DEFAULT_DTYPE)
    notes = " ".join(n["widgets_values"][0] for n in wf["nodes"] if n["type"] in ("Note", "MarkdownNote"))
    assert output_name(name, DEFAULT_DTYPE) in notes and f"python -m imagebart_core.get {name}" in notes
    api = to_api(wf, defs)
    for node in api.values():
        if node["class_type"] == "LoadImage":  # inputs ship with the pack, at the released models' size
            from PIL import Image

            with Image.open(WORKFLOWS / "inputs" / node["inputs"]["image"]) as im:
                assert im.size == (256, 256)
        if node["class_type"] == "ImageBARTClassCondition":
            from imagebart_core.conditioning import imagenet_class_names

            assert node["inputs"]["class_name"] in imagenet_class_names()
        if node["class_type"] in ("ImageBARTSample", "ImageBARTMaskedRefine"):
            assert node["inputs"]["guidance"] == 1.0  # the released models have no null class


def test_inputs_are_drawn_by_the_script(tmp_path, monkeypatch):
    """The shipped input images are exactly what scripts/make_release_inputs.py draws (nothing downloaded)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_release_inputs",
                                                  WORKFLOWS.parent / "scripts" / "make_release_inputs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from PIL import Image, ImageChops

    for name, draw in mod.IMAGES.items():
        with Image.open(WORKFLOWS / "inputs" / name) as shipped:
            drawn = draw()
            assert shipped.mode == drawn.mode and ImageChops.difference(shipped, drawn).getbbox() is None, name


def test_missing_released_model_error_names_folder_file_and_get_command(tmp_path):
    with stubbed_comfy_api():
        load_nodes()
        from nodes import comfy_bridge, loader

        comfy_bridge.FALLBACK_MODEL_DIRS[:] = [str(tmp_path / "models" / "imagebart")]
        try:
            msg = loader.ImageBARTLoader.validate_inputs("churches_3_scales-fp16.safetensors")
            other = loader.ImageBARTLoader.validate_inputs("churches_3_scales-bf16.safetensors")
            unknown = loader.ImageBARTLoader.validate_inputs("my-model.safetensors")
        finally:
            comfy_bridge.FALLBACK_MODEL_DIRS[:] = []
    assert isinstance(msg, str) and "churches_3_scales-fp16.safetensors" in msg
    assert str(tmp_path / "models" / "imagebart") in msg
    assert "python -m imagebart_core.get churches_3_scales" in msg
    assert "python -m imagebart_core.get churches_3_scales --dtype bf16" in other
    assert "python -m imagebart_core.get --list" in unknown
