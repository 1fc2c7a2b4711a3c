"""Every workflow in workflows/ is structurally sound for this pack and ComfyUI's core nodes (no ComfyUI needed)."""

import json

import pytest
from workflow_tools import WORKFLOWS, check_workflow, core_definitions, load_workflow, pack_definitions, to_api

MODEL_FILES = {"imagebart-random-uncond.safetensors", "imagebart-random-class.safetensors",
               "imagebart-random-text.safetensors"}
FILES = {"model_name": MODEL_FILES, "image": {p.name for p in (WORKFLOWS / "inputs").glob("*.png")}}
PATHS = sorted(WORKFLOWS.glob("*.json"))


@pytest.fixture(scope="module")
def defs():
    return {**core_definitions(), **pack_definitions()}


def test_there_are_the_seven_workflows():
    names = {p.stem for p in PATHS}
    assert names == {"unconditional_sampling", "step_by_step_chain", "inpainting_free_form", "upper_half_completion",
                     "class_guided_local_edit", "text_guided_local_edit", "variations"}


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_workflow_is_consistent(path, defs):
    wf = load_workflow(path)
    assert check_workflow(wf, defs, FILES) == []
    assert wf.get("version") == 0.4 and not wf.get("definitions")
    notes = [n for n in wf["nodes"] if n["type"] in ("Note", "MarkdownNote")]
    loaders = [n for n in wf["nodes"] if n["type"] == "ImageBARTLoader"]
    assert loaders and notes
    for loader in loaders:  # the note names the model file the workflow expects
        assert any(loader["widgets_values"][0] in n["widgets_values"][0] for n in notes)
    api = to_api(wf, defs)
    assert all(v["class_type"] in defs for v in api.values())
    assert json.loads(json.dumps(api)) == api


def test_checker_catches_mistakes(defs):
    wf = load_workflow(WORKFLOWS / "unconditional_sampling.json")
    sample = next(n for n in wf["nodes"] if n["type"] == "ImageBARTSample")
    sample["widgets_values"].pop()  # one widget value short
    link = wf["links"][0]
    link[5] = "IMAGE"  # wrong type on a link
    wf["nodes"].append({"id": 99, "type": "SomeOtherPackNode", "inputs": [], "outputs": [], "widgets_values": []})
    problems = "\n".join(check_workflow(wf, defs, FILES))
    assert "widget values" in problems and "IMAGE" in problems and "SomeOtherPackNode" in problems
