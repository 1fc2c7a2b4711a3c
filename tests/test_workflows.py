"""Every workflow in workflows/ is structurally sound for this pack and ComfyUI's core nodes (no ComfyUI needed)."""

import json
import logging

import pytest
import torch

from tools.workflow_tools import (
    ROOT,
    WORKFLOWS,
    check_workflow,
    core_definitions,
    layout_problems,
    load_workflow,
    pack_definitions,
    to_api,
    widget_slots,
)

# the emoji models bundled in the pack's models/ folder (registered as a model folder by the root __init__.py)
MODEL_FILES = {"imagebart-emoji-class.safetensors", "imagebart-emoji-text.safetensors"}
SIZE = 64  # their image size in pixels
FILES = {"model_name": MODEL_FILES, "image": {p.name for p in (WORKFLOWS / "inputs").glob("*.png")}}
PATHS = sorted(WORKFLOWS.glob("*.json"))


@pytest.fixture(scope="module")
def defs():
    return {**core_definitions(), **pack_definitions()}


def test_there_are_the_eleven_workflows():
    names = {p.stem for p in PATHS}
    assert names == {"unconditional_sampling", "class_sampling", "text_sampling", "step_by_step_chain",
                     "inpainting_free_form", "upper_half_completion", "class_guided_local_edit",
                     "text_guided_local_edit", "variations", "wide_panorama_prompt_blend", "large_image_inpainting"}


def test_widget_layout_only_grows(defs):
    """Saved workflows keep working: the released widget order is a prefix of today's (new widgets appended),
    node ids stay, and saved combo values are still offered (user-asks b15)."""
    released = json.loads((ROOT / "tests" / "data" / "released_widget_layout.json").read_text(encoding="utf-8"))
    for node, old in released["widgets"].items():
        now = [n if n else s["extra"] for n, s in widget_slots(defs[node])]
        assert now[: len(old)] == old, f"{node}: widgets {now} no longer start with the released {old}"
    for key, values in released["combo_values"].items():
        node, name = key.split(".")
        spec = defs[node]["input"]["required"].get(name) or defs[node]["input"]["optional"][name]
        options = spec[0] if isinstance(spec[0], list) else spec[1]["options"]
        assert set(values) <= set(options), f"{key} dropped saved values {set(values) - set(options)}"


def test_large_size_workflows(defs):
    """The panorama samples at 3x the trained width under a two-prompt blend; the large inpainting keeps the
    192x64 input's size."""
    wf = load_workflow(WORKFLOWS / "wide_panorama_prompt_blend.json")
    api = to_api(wf, defs)
    sample = next(v for v in api.values() if v["class_type"] == "ImageBARTSample")
    assert sample["inputs"]["width"] == 3 * SIZE and sample["inputs"]["height"] == 0
    blend = api[sample["inputs"]["condition"][0]]
    assert blend["class_type"] == "ImageBARTConditionBlend"
    prompts = [api[blend["inputs"][k][0]]["inputs"]["prompt"] for k in ("condition_1", "condition_2")]
    assert len(set(prompts)) == 2 and all(prompts)
    wf = load_workflow(WORKFLOWS / "large_image_inpainting.json")
    api = to_api(wf, defs)
    encode = next(v for v in api.values() if v["class_type"] == "ImageBARTEncode")
    assert encode["inputs"]["fit"].startswith("keep size")
    load = api[encode["inputs"]["image"][0]]
    from PIL import Image

    with Image.open(WORKFLOWS / "inputs" / load["inputs"]["image"]) as im:
        assert im.size[0] > SIZE and im.size[1] >= SIZE and im.mode == "RGBA"  # larger than the model, with a mask
    composite = next(v for v in api.values() if v["class_type"] == "ImageCompositeMasked")
    assert composite["inputs"]["destination"][0] == encode["inputs"]["image"][0]


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


def test_workflows_use_the_bundled_demo_models_with_conditions_they_know(defs, caplog):
    """Every workflow loads a demo model shipped in models/, and its class names / prompt words are ones that
    model was trained on (so pressing Queue gives a meaningful result, user-asks: demo by default)."""
    from imagebart_core.checkpoint import read_config
    from imagebart_core.conditioning import text_condition

    configs = {}
    for name in MODEL_FILES:
        path = ROOT / "models" / name
        if not path.is_file():
            pytest.skip(f"bundled emoji model {path} is not present (python -m training.emoji_recipe)")
        configs[name] = read_config(path)
    for path in PATHS:
        api = to_api(load_workflow(path), defs)
        for node in api.values():
            inputs = node["inputs"]
            if node["class_type"] == "ImageBARTClassCondition":
                cfg = configs[api[inputs["model"][0]]["inputs"]["model_name"]]
                lines = [line.strip() for line in inputs["class_name"].splitlines() if line.strip()]
                assert lines and set(lines) <= set(cfg.conditioning.class_names), path.stem  # one class per line
            elif node["class_type"] == "ImageBARTTextCondition":
                cfg = configs[api[inputs["model"][0]]["inputs"]["model_name"]]
                caplog.clear()
                with caplog.at_level(logging.WARNING, logger="imagebart_core.conditioning"):
                    text_condition(cfg.conditioning, [inputs["prompt"]])
                assert "outside this model's text vocabulary" not in caplog.text, f"{path.stem}: {inputs['prompt']!r}"
            elif node["class_type"] == "ImageBARTSample" and "condition" in inputs:
                assert inputs["guidance"] > 1.0, f"{path.stem}: conditioned sampling without guidance"


def test_step_by_step_chain_takes_every_transition_of_the_bundled_model(defs):
    """One Reverse Chain Step per transition of the bundled class model: from noise to clean codes, no more (re-run
    python3 -m tools.make_workflows after changing the number of scales)."""
    from imagebart_core.checkpoint import read_config

    path = ROOT / "models" / "imagebart-emoji-class.safetensors"
    if not path.is_file():
        pytest.skip(f"bundled emoji model {path} is not present (python -m training.emoji_recipe)")
    api = to_api(load_workflow(WORKFLOWS / "step_by_step_chain.json"), defs)
    steps = [v["inputs"]["steps"] for v in api.values() if v["class_type"] == "ImageBARTReverseStep"]
    assert sum(steps) == read_config(path).n_scales, steps


LAYOUT_PATHS = PATHS + sorted((WORKFLOWS / "released").glob("*.json"))


@pytest.mark.parametrize("path", LAYOUT_PATHS, ids=[p.stem for p in LAYOUT_PATHS])
def test_layout_has_room_for_the_previews(path, defs):
    """No node (title bar included) overlaps another, and nodes that show images after a run (Load Image, Save /
    Preview Image, the chain nodes' level previews) are tall enough for their widgets plus a preview."""
    assert layout_problems(load_workflow(path), defs) == []


def test_layout_checker_catches_overlaps(defs):
    wf = load_workflow(WORKFLOWS / "unconditional_sampling.json")
    save = next(n for n in wf["nodes"] if n["type"] == "SaveImage")
    sample = next(n for n in wf["nodes"] if n["type"] == "ImageBARTSample")
    save["pos"] = [sample["pos"][0] + 100, sample["pos"][1] + 50]
    sample["size"][1] = 100
    problems = "\n".join(layout_problems(wf, defs))
    assert "overlap" in problems and "ImageBARTSample: height 100" in problems


def _load_image(name):
    """What core Load Image gives for a file: IMAGE [1, H, W, 3] and MASK [1, H, W] = 1 - alpha."""
    import numpy as np
    from PIL import Image

    with Image.open(WORKFLOWS / "inputs" / name) as im:
        rgba = np.asarray(im.convert("RGBA")).astype(np.float32) / 255.0
    return torch.from_numpy(rgba[..., :3])[None], 1.0 - torch.from_numpy(rgba[..., 3])[None]


def _run_edit(defs, workflow: str, batch: int):
    """Run a local-edit workflow's Masked Refine as the workflow sets it up (its model, image, painted mask,
    condition, guidance, composite) through the pack's nodes, for ``batch`` seeds at once (item i uses seed + i,
    exactly what runs with seeds seed .. seed + batch - 1 give) -> (result IMAGE [B, H, W, 3], loaded image, mask)."""
    from tools.comfy_stub import load_nodes, stubbed_comfy_api

    api = to_api(load_workflow(WORKFLOWS / f"{workflow}.json"), defs)
    node = {v["class_type"]: v["inputs"] for v in api.values()}
    refine = node["ImageBARTMaskedRefine"]
    model_file = ROOT / "models" / node["ImageBARTLoader"]["model_name"]
    if not model_file.is_file():
        pytest.skip(f"bundled emoji model {model_file} is not present (python -m training.emoji_recipe)")
    image, mask = _load_image(node["LoadImage"]["image"])
    with stubbed_comfy_api():
        load_nodes()
        from nodes import chain, codes, comfy_bridge, conditions, loader

        comfy_bridge.FALLBACK_MODEL_DIRS[:] = [str(model_file.parent)]
        try:
            handle = loader.load(model_file.name)
            if "ImageBARTClassCondition" in node:
                cond = conditions.class_condition(handle, node["ImageBARTClassCondition"]["class_name"])
            else:
                cond = conditions.text_condition(handle, node["ImageBARTTextCondition"]["prompt"])
            clean = codes.encode(handle, image, node["ImageBARTEncode"]["fit"])
            _, pixels, _ = chain.masked_refine(
                handle, clean, mask.expand(batch, *mask.shape[1:]), refine["seed"], refine["start_level"],
                refine["passes"], refine["temperature"], refine["top_k"], refine["top_p"], refine["guidance"], cond,
                refine["composite"], image)
        finally:
            comfy_bridge.FALLBACK_MODEL_DIRS[:] = []
    return pixels, image, mask


@pytest.mark.parametrize("workflow", ["class_guided_local_edit", "text_guided_local_edit"])
def test_local_edits_redraw_the_left_half_and_keep_the_right(defs, workflow):
    """The edit examples do what their notes say: the transparent left half of the face is redrawn (the
    result differs there from the input, for every seed), and the right half is the loaded picture, pixel for
    pixel ('composite' on)."""
    pixels, image, mask = _run_edit(defs, workflow, batch=3)
    keep = mask[0] < 0.5
    assert keep[:, SIZE // 2:].all() and not keep[:, : SIZE // 2].any()  # the example's left half is painted
    for picture in pixels:
        assert torch.equal(picture[keep], image[0][keep])
        assert (picture[~keep] - image[0][~keep]).abs().mean() > 0.02


def test_checker_catches_mistakes(defs):
    wf = load_workflow(WORKFLOWS / "unconditional_sampling.json")
    sample = next(n for n in wf["nodes"] if n["type"] == "ImageBARTSample")
    sample["widgets_values"].pop()  # one widget value short
    link = wf["links"][0]
    link[5] = "IMAGE"  # wrong type on a link
    wf["nodes"].append({"id": 99, "type": "SomeOtherPackNode", "inputs": [], "outputs": [], "widgets_values": []})
    problems = "\n".join(check_workflow(wf, defs, FILES))
    assert "widget values" in problems and "IMAGE" in problems and "SomeOtherPackNode" in problems
