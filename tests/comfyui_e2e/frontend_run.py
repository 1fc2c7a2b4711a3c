"""Run every workflow through ComfyUI's real web frontend (headless Chromium), as a new user does on day one.

    python3 tests/comfyui_e2e/frontend_run.py --comfy /path/to/ComfyUI --python /path/to/venv/bin/python \
        --out OUTDIR [--pack WORKTREE] [--workflows DIR_OR_FILES...] [--node-modules DIR] [--no-http]

Starts ComfyUI headless on the CPU (``main.py --cpu``) in a fresh scratch folder with an EMPTY input folder,
an empty model folder and its own output folder, with the pack (``--pack``, default: this checkout) loaded
through an extra_model_paths.yaml ``custom_nodes`` symlink, so the ComfyUI tree is not modified. Then
``frontend/run_workflows.mjs`` opens the page in headless Chromium (the system's chromium, playwright-core
from ``--node-modules`` or ``frontend/node_modules``), dismisses the first-run template browser, drops each
workflow file onto the canvas (a DataTransfer ``drop`` event), presses Run and records the outcome, the
images and screenshots. Unless ``--no-http``, each workflow is then also converted to the API format
(tools/workflow_tools.py, with the live /object_info) and queued over HTTP, and its images are compared
pixel for pixel with the frontend's. The server runs with ``--cache-none`` so that the HTTP run really
executes again instead of returning the frontend run's cached outputs.

OUTDIR gets: report.json (everything), frontend_report.json (the browser's part), screenshots/*.png,
images/<workflow>/* (frontend run), http_images/<workflow>/* (HTTP run), comfyui.log.
Exit status: 0 when every workflow succeeded in the frontend (and over HTTP), 1 otherwise, 2 on a harness
failure.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parents[1])]  # tests/ (comfyui_e2e) and the clone (tools)

from comfyui_e2e.comfy_client import PACK_ROOT, ComfyError, ComfyServer, messages, output_images  # noqa: E402
from tools.workflow_tools import load_workflow, to_api  # noqa: E402

log = logging.getLogger("frontend_run")
DRIVER = HERE / "frontend" / "run_workflows.mjs"


def _workflow_files(items: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.glob("*.json"))
        elif p.is_file():
            files.append(p)
        else:
            raise SystemExit(f"--workflows: {item} is neither a folder nor a file")
    if not files:
        raise SystemExit(f"--workflows: no .json workflow in {items}")
    return [f.resolve() for f in files]


def _find_chromium(given: str | None) -> str:
    for cand in [given, os.environ.get("IMAGEBART_CHROMIUM"), shutil.which("chromium"),
                 shutil.which("chromium-browser"), shutil.which("google-chrome")]:
        if cand and Path(cand).exists():
            return cand
    raise SystemExit("no Chromium found: install it (apt-get install chromium) or pass --chromium PATH")


def _pixels(data: bytes):
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    return img.size, img.convert("RGBA").tobytes()


def run_http(server: ComfyServer, files: list[Path], out: Path, ui: dict[str, dict], timeout: float) -> list[dict]:
    """Queue each workflow converted to the API format; compare its images with the frontend run's."""
    defs = server.object_info()
    results = []
    for f in files:
        name = f.stem
        rec: dict = {"workflow": name, "images": []}
        try:
            wf = load_workflow(f)
            prompt = to_api(wf, defs)
        except Exception as exc:  # a conversion failure is a result of its own, not a harness failure
            rec.update(status="convert_failed", error=f"{type(exc).__name__}: {exc}")
            results.append(rec)
            continue
        t0 = time.monotonic()
        try:
            pid = server.queue(prompt, wf)
        except ComfyError as err:
            body = err.body if isinstance(err.body, dict) else {}
            rec.update(status="rejected", http_status=err.status,
                       error=(body.get("error") or {}).get("message", str(err.body)),
                       node_errors={nid: [f"{e['message']}: {e['details']}" for e in ne.get("errors", [])]
                                    for nid, ne in body.get("node_errors", {}).items()})
            results.append(rec)
            continue
        hist = server.wait(pid, timeout=timeout)
        rec["run_s"] = round(time.monotonic() - t0, 2)
        rec["status"] = hist["status"]["status_str"]
        errs = messages(hist, "execution_error")
        if errs:
            e = errs[0]
            rec["error"] = f"{e['node_type']} (node {e['node_id']}): {e['exception_type']}: {e['exception_message']}"
        for nid, imgs in output_images(hist).items():
            for i, img in enumerate(imgs):
                data = server.view(img)
                dest = out / "http_images" / name / f"node{nid}_{prompt[nid]['class_type']}_{i}_{img['filename']}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
                rec["images"].append({"node": nid, "class_type": prompt[nid]["class_type"], "type": img.get("type"),
                                      "path": str(dest)})
        rec["same_pixels_as_frontend"] = _compare(ui.get(name, {}).get("images", []), rec["images"])
        results.append(rec)
    return results


def _compare(ui_images: list[dict], http_images: list[dict]) -> bool | None:
    """True when both runs produced the same images per node (in order) with identical pixels; None when the
    frontend run produced none to compare with."""
    if not ui_images:
        return None
    by_node = {}
    for img in ui_images:
        by_node.setdefault(str(img["node"]), []).append(img["path"])
    mine = {}
    for img in http_images:
        mine.setdefault(str(img["node"]), []).append(img["path"])
    if by_node.keys() != mine.keys():
        return False
    for nid, paths in by_node.items():
        if len(paths) != len(mine[nid]):
            return False
        for a, b in zip(paths, mine[nid]):
            if _pixels(Path(a).read_bytes()) != _pixels(Path(b).read_bytes()):
                return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfy", default=os.environ.get("IMAGEBART_COMFYUI_DIR"), help="ComfyUI tree (main.py)")
    ap.add_argument("--python", default=os.environ.get("IMAGEBART_COMFYUI_PYTHON"),
                    help="python of ComfyUI's environment (default: this one)")
    ap.add_argument("--pack", default=str(PACK_ROOT), help="checkout of the pack to install (default: this one)")
    ap.add_argument("--workflows", nargs="+", default=None,
                    help="workflow folder(s) or file(s) (default: <pack>/workflows)")
    ap.add_argument("--out", required=True, help="report / screenshots / images folder (created)")
    ap.add_argument("--chromium", default=None, help="Chromium executable (default: chromium on PATH)")
    ap.add_argument("--node-modules", default=os.environ.get("IMAGEBART_NODE_MODULES"),
                    help="node_modules folder holding playwright-core (default: tests/comfyui_e2e/frontend/"
                         "node_modules)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per workflow")
    ap.add_argument("--no-http", action="store_true", help="skip the HTTP API run")
    ap.add_argument("--keep-workdir", action="store_true", help="keep ComfyUI's scratch folder")
    ap.add_argument("--models", default=None,
                    help="folder of model files to serve as ComfyUI's imagebart folder (default: an empty one; "
                         "the demo workflows use the models the pack registers itself)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.comfy or not (Path(args.comfy) / "main.py").is_file():
        raise SystemExit("--comfy (or IMAGEBART_COMFYUI_DIR) must name a ComfyUI tree with main.py")
    pack = Path(args.pack).resolve()
    files = _workflow_files(args.workflows or [str(pack / "workflows")])
    chromium = _find_chromium(args.chromium)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="imagebart-frontend-e2e-"))
    models = Path(args.models).resolve() if args.models else work / "models"
    models.mkdir(exist_ok=True)  # empty by default: the demo workflows find the models the pack registers itself
    server = ComfyServer(args.comfy, work, models, python=args.python, pack_root=pack,
                         extra_args=["--cache-none"])
    report: dict = {"pack": str(pack), "comfy": str(Path(args.comfy).resolve()), "workdir": str(work),
                    "workflows": [f.name for f in files], "server_flags": ["--cpu", "--cache-none"]}
    rc = 2
    try:
        t0 = time.monotonic()
        server.start()
        report["startup_s"] = round(time.monotonic() - t0, 1)
        # files only: ComfyUI itself creates an empty input/3d folder at start
        report["input_files_at_start"] = sorted(str(p.relative_to(work / "input"))
                                                for p in (work / "input").rglob("*") if p.is_file())
        log.info("ComfyUI up at %s in %.1f s (pack %s, input folder %s: empty)", server.base, report["startup_s"],
                 pack, work / "input")
        cmd = ["node", str(DRIVER), "--url", server.base, "--out", str(out), "--chromium", chromium,
               "--timeout", str(args.timeout), *map(str, files)]
        if args.node_modules:
            cmd[2:2] = ["--node-modules", args.node_modules]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, check=False)
        report["frontend_s"] = round(time.monotonic() - t0, 1)
        report["frontend_exit"] = proc.returncode
        ui_path = out / "frontend_report.json"
        ui = json.loads(ui_path.read_text(encoding="utf-8")) if ui_path.exists() else {}
        report["frontend"] = ui
        ui_by_name = {w["workflow"]: w for w in ui.get("workflows", [])}
        if not args.no_http:
            log.info("HTTP API run ...")
            report["http"] = run_http(server, files, out, ui_by_name, args.timeout)
        ok_ui = proc.returncode == 0 and len(ui_by_name) == len(files) and all(
            w.get("status") == "success" for w in ui_by_name.values())
        ok_http = args.no_http or all(r.get("status") == "success" for r in report["http"])
        rc = 0 if ok_ui and ok_http else 1
    finally:
        server.stop()
        if server.log_path.exists():
            shutil.copy(server.log_path, out / "comfyui.log")
        (out / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
        if not args.keep_workdir:
            shutil.rmtree(work, ignore_errors=True)
    _print_summary(report)
    log.info("report: %s", out / "report.json")
    return rc


def _print_summary(report: dict) -> None:
    http = {r["workflow"]: r for r in report.get("http", [])}
    for w in report.get("frontend", {}).get("workflows", []):
        h = http.get(w["workflow"], {})
        log.info("%-28s UI %-9s %6s s %2d img | HTTP %-9s %6s s same=%s | %s", w["workflow"], w.get("status"),
                 w.get("run_s", "-"), len(w.get("images", [])), h.get("status", "-"), h.get("run_s", "-"),
                 h.get("same_pixels_as_frontend", "-"), (w.get("error") or "").split("\n")[0][:160])


if __name__ == "__main__":
    sys.exit(main())
