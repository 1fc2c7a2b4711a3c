"""End to end in a real ComfyUI (skipped unless IMAGEBART_COMFYUI_DIR names a ComfyUI tree).

    IMAGEBART_COMFYUI_DIR=/path/to/ComfyUI IMAGEBART_COMFYUI_PYTHON=/path/to/venv/bin/python \
        python3 -m pytest tests/comfyui_e2e -m "slow or not slow"

Starts ComfyUI headless on the CPU with this pack (through an extra_model_paths.yaml, the ComfyUI tree is
not modified) and an EMPTY input folder, as on a new user's first day (no example image is uploaded),
converts every workflow in workflows/ to the API format and runs it over HTTP with the demo models bundled in
the pack's models/ folder (which the pack registers itself), and checks the images; writes small random
models for the rest: cancels a running Sample; checks that errors reach the client.
The same workflows through the real web frontend (headless Chromium): tests/comfyui_e2e/frontend_run.py.
Timings go to ``$IMAGEBART_E2E_REPORT`` (JSON) when set.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest

from comfyui_e2e.comfy_client import ComfyError, ComfyServer, messages, output_images
from tools.workflow_tools import WORKFLOWS, load_workflow, to_api

COMFY = os.environ.get("IMAGEBART_COMFYUI_DIR")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not COMFY, reason="set IMAGEBART_COMFYUI_DIR to a ComfyUI tree to run the e2e tests")]

PACK_NODES = ["ImageBARTLoader", "ImageBARTEncode", "ImageBARTDecode", "ImageBARTRandomCodes", "ImageBARTNoiseCodes",
              "ImageBARTReverseStep", "ImageBARTSample", "ImageBARTMaskedRefine", "ImageBARTClassCondition",
              "ImageBARTTextCondition", "ImageBARTConditionBlend"]
# workflow -> {SaveImage/PreviewImage count of images expected, by filename prefix of SaveImage}
EXPECTED_SAVED = {"unconditional_sampling": 4, "class_sampling": 9, "text_sampling": 4, "step_by_step_chain": 2,
                  "inpainting_free_form": 1, "upper_half_completion": 4, "class_guided_local_edit": 1,
                  "text_guided_local_edit": 1, "variations": 4, "wide_panorama_prompt_blend": 1,
                  "large_image_inpainting": 1}
# saved image size (width, height); the bundled emoji models are trained at 64x64 px
EXPECTED_SIZE = {"wide_panorama_prompt_blend": (192, 64), "large_image_inpainting": (192, 64)}
DEFAULT_SIZE = (64, 64)
BUNDLED = {"imagebart-emoji-class.safetensors", "imagebart-emoji-text.safetensors"}
REPORT: dict = {}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tools.random_model import write_random_model

    missing = [name for name in sorted(BUNDLED) if not (WORKFLOWS.parent / "models" / name).is_file()]
    if missing:
        pytest.skip(f"the bundled emoji models {missing} are not in models/ (python -m training.emoji_recipe)")
    work = tmp_path_factory.mktemp("comfy")
    models = work / "models"  # random models for the cancel/error cases; the workflows use the bundled ones
    for kind, name in [("none", "uncond"), ("class", "class"), ("text", "text")]:
        write_random_model(models / f"imagebart-random-{name}.safetensors", kind)
    srv = ComfyServer(COMFY, work, models, python=os.environ.get("IMAGEBART_COMFYUI_PYTHON"))
    t0 = time.monotonic()
    srv.start()
    REPORT["startup_s"] = round(time.monotonic() - t0, 1)
    # a new user's input folder is empty: nothing is uploaded; the pack copies its example images into the
    # input folder when it loads, so after start-up they (and only ComfyUI's own empty folders) are there
    REPORT["input_files_at_start"] = sorted(str(p.relative_to(work / "input"))
                                            for p in (work / "input").rglob("*") if p.is_file())
    provided = sorted(p.name for p in (work / "input").glob("*.png"))
    assert provided == sorted(p.name for p in (WORKFLOWS / "inputs").glob("imagebart_*.png")), provided
    yield srv
    srv.stop()
    out = os.environ.get("IMAGEBART_E2E_REPORT")
    if out:
        Path(out).write_text(json.dumps(REPORT, indent=1), encoding="utf-8")


@pytest.fixture(scope="module")
def defs(server):
    return server.object_info()


def test_pack_imports_cleanly_and_nodes_are_documented(server, defs):
    log = server.log()
    assert "IMPORT FAILED" not in log
    pack_lines = [line for line in log.splitlines() if "imagebart" in line.lower()]
    noisy = [line for line in pack_lines if any(w in line.lower() for w in ("error", "warning", "traceback", "cannot"))]
    assert not noisy, noisy
    for name in PACK_NODES:
        info = defs[name]
        assert info["category"] == "ImageBART" and len(info["description"]) > 30
        for section in ("required", "optional"):
            for inp, spec in info["input"].get(section, {}).items():
                assert spec[1].get("tooltip"), f"{name}.{inp}"


def test_bundled_models_are_listed_without_copying(server, defs):
    """The pack registers its own models/ folder: Load ImageBART offers the demo models next to the ones in
    the configured model folder, which holds only the random models."""
    options = defs["ImageBARTLoader"]["input"]["required"]["model_name"][0]
    if not isinstance(options, list):  # V3 combo: options in the spec's dict
        options = defs["ImageBARTLoader"]["input"]["required"]["model_name"][1]["options"]
    assert BUNDLED <= set(options), options
    assert not any((server.model_dir / name).exists() for name in BUNDLED)


def test_stub_definitions_match_comfyui(defs):
    """The CI checks use definitions read through tools/comfy_stub.py: they must equal the real ones."""
    from tools.workflow_tools import pack_definitions

    for name, mine in pack_definitions().items():
        real = defs[name]
        assert mine["input_order"] == {k: v for k, v in real["input_order"].items() if k != "hidden"}, name
        assert mine["output"] == real["output"] and mine["output_name"] == real["output_name"], name
        for section, inputs in mine["input"].items():
            for inp, (kind, opts) in inputs.items():
                rkind, ropts = real["input"][section][inp]
                assert kind == rkind, (name, inp)
                for key in ("default", "min", "max", "control_after_generate", "options", "tooltip"):
                    if key in opts and inp != "model_name":  # the model list depends on the installation
                        assert ropts.get(key) == opts[key], (name, inp, key)


@pytest.mark.parametrize("name", sorted(EXPECTED_SAVED))
def test_workflow_runs(server, defs, name):
    from PIL import Image

    wf = load_workflow(WORKFLOWS / f"{name}.json")
    prompt = to_api(wf, defs)
    t0 = time.monotonic()
    pid = server.queue(prompt, wf)
    hist = server.wait(pid, timeout=900)
    elapsed = time.monotonic() - t0
    assert hist["status"]["status_str"] == "success", messages(hist, "execution_error")
    saved = [img for nid, imgs in output_images(hist).items() for img in imgs
             if prompt[nid]["class_type"] == "SaveImage"]
    previews = [img for nid, imgs in output_images(hist).items() for img in imgs
                if prompt[nid]["class_type"] == "PreviewImage"]
    assert len(saved) == EXPECTED_SAVED[name]
    files = []
    for img in saved:
        pic = Image.open(io.BytesIO(server.view(img)))
        assert pic.size == EXPECTED_SIZE.get(name, DEFAULT_SIZE)
        if name == "large_image_inpainting":
            _check_unmasked_kept(pic)
        files.append(str(Path(server.workdir) / "output" / img.get("subfolder", "") / img["filename"]))
    preview_files = []  # ComfyUI empties its temp folder on exit: keep a copy of the previews for the report
    for i, img in enumerate(previews):
        path = Path(server.workdir) / "previews" / f"{name}_{i:02d}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(server.view(img))
        preview_files.append(str(path))
    REPORT.setdefault("workflows", {})[name] = {"seconds": round(elapsed, 2), "saved": files,
                                                "previews": preview_files}


def _check_unmasked_kept(pic) -> None:
    """Outside the painted (transparent) stroke the result equals the loaded image; inside it changed."""
    import numpy as np
    from PIL import Image

    src = np.asarray(Image.open(WORKFLOWS / "inputs" / "imagebart_emoji_wide_masked.png").convert("RGBA"))
    out = np.asarray(pic.convert("RGB")).astype(int)
    opaque = src[..., 3] == 255  # mask 0: keep
    diff = np.abs(out - src[..., :3].astype(int)).max(-1)
    assert diff[opaque].max() == 0, "unmasked pixels changed"
    assert diff[src[..., 3] == 0].mean() > 1, "the masked area was not regenerated"
    REPORT["large_inpainting_masked_px"] = int((src[..., 3] < 255).sum())


def _sample_prompt(batch: int, seed: int = 1, **extra) -> dict:
    return {
        "1": {"class_type": "ImageBARTLoader", "inputs": {"model_name": "imagebart-random-uncond.safetensors",
                                                          "device": "auto", "dtype": "auto"}},
        "2": {"class_type": "ImageBARTSample", "inputs": {
            "model": ["1", 0], "width": 0, "height": 0, "batch_size": batch, "seed": seed, "temperature": 1.0,
            "top_k": 0, "top_p": 1.0, "guidance": 1.0, "temperature_per_scale": "", "top_k_per_scale": "",
            "top_p_per_scale": "", "window_stride": 0, **extra}},
        "3": {"class_type": "ImageBARTDecode", "inputs": {"model": ["1", 0], "codes": ["2", 0]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }


def test_cancel_stops_sample_promptly(server):
    # 4x the trained width: the sliding-window path, long enough (tens of seconds) to be caught running
    pid = server.queue(_sample_prompt(batch=16, seed=123, width=256))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not server.running():
        time.sleep(0.05)
    time.sleep(1.5)  # well inside the Sample node
    assert server.running(), "Sample finished before it could be cancelled"
    t0 = time.monotonic()
    server.interrupt()
    hist = server.wait(pid, timeout=30, poll=0.02)
    stopped = time.monotonic() - t0
    REPORT["cancel_seconds"] = round(stopped, 3)
    assert messages(hist, "execution_interrupted"), hist["status"]
    assert stopped < 1.0


def test_errors_reach_the_client(server):
    # a missing model file: rejected before running, naming the file and the folder
    prompt = _sample_prompt(batch=1)
    prompt["1"]["inputs"]["model_name"] = "missing-model.safetensors"
    with pytest.raises(ComfyError) as err:
        server.queue(prompt)
    text = json.dumps(err.value.body)
    assert err.value.status == 400 and "missing-model.safetensors" in text and "imagebart" in text
    REPORT["missing_model_message"] = err.value.body["node_errors"]["1"]["errors"][0]["details"]
    # a bad per-scale override: fails while running, the message arrives as execution_error
    pid = server.queue(_sample_prompt(batch=1, seed=5, temperature_per_scale="9:0.5"))
    hist = server.wait(pid, timeout=120)
    errors = messages(hist, "execution_error")
    assert errors and "scale 9 does not exist" in errors[0]["exception_message"]
    REPORT["runtime_error_message"] = errors[0]["exception_message"]
    # an unknown class name on the class model
    prompt = {
        "1": {"class_type": "ImageBARTLoader", "inputs": {"model_name": "imagebart-random-class.safetensors",
                                                          "device": "auto", "dtype": "auto"}},
        "2": {"class_type": "ImageBARTClassCondition", "inputs": {"model": ["1", 0], "class_name": "1000",
                                                                  "batch_size": 1}},
        "3": {"class_type": "ImageBARTSample", "inputs": {**_sample_prompt(1)["2"]["inputs"], "model": ["1", 0],
                                                          "condition": ["2", 0]}},
        "4": {"class_type": "ImageBARTDecode", "inputs": {"model": ["1", 0], "codes": ["3", 0]}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }
    hist = server.wait(server.queue(prompt), timeout=120)
    errors = messages(hist, "execution_error")
    assert errors and "out of range" in errors[0]["exception_message"]
    REPORT["class_error_message"] = errors[0]["exception_message"]


def test_same_seed_same_image_and_unload(server):
    """Same seed -> same pixels across prompts (cache off by changing an unrelated node), then Unload models."""
    from PIL import Image

    pics = []
    for prefix in ("a", "b"):
        prompt = _sample_prompt(batch=1, seed=77)
        prompt["4"] = {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": f"seed/{prefix}"}}
        prompt["2"]["inputs"]["top_p_per_scale"] = "" if prefix == "a" else " "  # defeats the cache, same settings
        hist = server.wait(server.queue(prompt), timeout=300)
        img = next(iter(output_images(hist).values()))[0]
        pics.append(Image.open(io.BytesIO(server.view(img))).tobytes())
    assert pics[0] == pics[1]
    server.post("/free", {"unload_models": True, "free_memory": True})
    hist = server.wait(server.queue(_sample_prompt(batch=1, seed=78)), timeout=300)
    assert hist["status"]["status_str"] == "success"
