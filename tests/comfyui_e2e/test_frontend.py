"""Every workflow through ComfyUI's real web frontend in headless Chromium (slow; skipped unless set up).

    IMAGEBART_COMFYUI_DIR=/path/to/ComfyUI IMAGEBART_COMFYUI_PYTHON=/path/to/venv/bin/python \
    IMAGEBART_NODE_MODULES=/path/with/node_modules/playwright-core \
        python3 -m pytest tests/comfyui_e2e/test_frontend.py -m slow

Runs tests/comfyui_e2e/frontend_run.py once (ComfyUI with an empty input folder, each workflow file dropped
onto the canvas, Run pressed, then the same workflow over HTTP) and checks, per workflow, that the drop
loaded it, that it ran without an error in the UI, saved the expected images, and that the HTTP run drew the
same pixels. ``IMAGEBART_E2E_FRONTEND_OUT`` keeps the report, screenshots and images in that folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from comfyui_e2e.test_comfyui import EXPECTED_SAVED
from tools.workflow_tools import WORKFLOWS, load_workflow

COMFY = os.environ.get("IMAGEBART_COMFYUI_DIR")
HERE = Path(__file__).resolve().parent


def _playwright_available() -> bool:
    folders = [os.environ.get("IMAGEBART_NODE_MODULES"), str(HERE / "frontend" / "node_modules")]
    return any(f and (Path(f) / "playwright-core" / "package.json").is_file() for f in folders)


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not COMFY, reason="set IMAGEBART_COMFYUI_DIR to a ComfyUI tree to run the e2e tests"),
    pytest.mark.skipif(not shutil.which("node"), reason="Node.js is needed for the frontend driver"),
    pytest.mark.skipif(not (shutil.which("chromium") or os.environ.get("IMAGEBART_CHROMIUM")),
                       reason="Chromium is needed (apt-get install chromium, or set IMAGEBART_CHROMIUM)"),
    pytest.mark.skipif(not _playwright_available(),
                       reason="playwright-core not installed (npm install in tests/comfyui_e2e/frontend, "
                              "or set IMAGEBART_NODE_MODULES)"),
]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from comfyui_e2e.frontend_run import main

    out = Path(os.environ.get("IMAGEBART_E2E_FRONTEND_OUT") or tmp_path_factory.mktemp("frontend"))
    rc = main(["--out", str(out)])
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert rc in (0, 1), f"the harness itself failed (exit {rc}); see {out}"
    assert data["input_files_at_start"] == [], "ComfyUI must start with an empty input folder"
    return data


@pytest.mark.parametrize("name", sorted(EXPECTED_SAVED))
def test_workflow_runs_in_the_frontend(report, name):
    ui = {w["workflow"]: w for w in report["frontend"]["workflows"]}[name]
    wf = load_workflow(WORKFLOWS / f"{name}.json")
    assert ui["load_method"] == "drop" and ui["graph"]["nodes"] == len(wf["nodes"]), ui.get("load_error")
    assert ui["status"] == "success", (ui.get("error"), ui.get("node_errors"), ui.get("ui_messages"))
    assert not [m for m in ui["ui_messages"] if m["kind"] == "dialog"], ui["ui_messages"]
    saved = [img for img in ui["images"] if img["class_type"] == "SaveImage"]
    assert len(saved) == EXPECTED_SAVED[name]
    assert all(Path(img["path"]).stat().st_size > 0 for img in ui["images"])


@pytest.mark.parametrize("name", sorted(EXPECTED_SAVED))
def test_http_run_draws_the_same_pixels(report, name):
    http = {r["workflow"]: r for r in report["http"]}[name]
    assert http["status"] == "success", (http.get("error"), http.get("node_errors"))
    assert http["same_pixels_as_frontend"] is True
