"""Drive a real ComfyUI over HTTP: start it headless on the CPU with this pack, queue prompts, read results.

Standard library only (urllib). The pack is loaded through an extra_model_paths.yaml whose
``custom_nodes`` folder holds a symlink to the repository, so the ComfyUI tree is never modified.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyError(RuntimeError):
    def __init__(self, status: int, body):
        super().__init__(f"HTTP {status}: {body}")
        self.status, self.body = status, body


class ComfyServer:
    """A ComfyUI server subprocess (``main.py --cpu``) with the pack installed, in a scratch directory."""

    def __init__(self, comfy_dir, workdir, model_dir, python: str | None = None, extra_args=(),
                 pack_root: Path | str = PACK_ROOT):
        self.comfy_dir = Path(comfy_dir)
        self.pack_root = Path(pack_root).resolve()
        self.workdir = Path(workdir)
        self.model_dir = Path(model_dir)
        self.python = python or sys.executable
        self.extra_args = list(extra_args)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "comfyui.log"
        self.client_id = uuid.uuid4().hex

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> ComfyServer:
        w = self.workdir
        for d in ("input", "output", "user", "custom_nodes"):
            (w / d).mkdir(parents=True, exist_ok=True)
        link = w / "custom_nodes" / "imagebart"
        if not link.exists():
            link.symlink_to(self.pack_root, target_is_directory=True)
        yaml = w / "extra_model_paths.yaml"
        yaml.write_text(f"imagebart_e2e:\n  base_path: {w}\n  custom_nodes: custom_nodes\n"
                        f"  imagebart: {self.model_dir}\n", encoding="utf-8")
        cmd = [self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", "--disable-api-nodes", "--database-url", "sqlite:///:memory:",
               "--input-directory", str(w / "input"), "--output-directory", str(w / "output"),
               "--temp-directory", str(w), "--user-directory", str(w / "user"),
               "--extra-model-paths-config", str(yaml), *self.extra_args]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(cmd, cwd=self.comfy_dir, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}; log:\n{self.log()[-4000:]}")
            try:
                self.get("/system_stats")
                return self
            except (OSError, ComfyError):
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout} s; log:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    # -- HTTP --------------------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, data: bytes | None = None, headers=None, timeout: float = 60):
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                body = json.loads(body)
            except ValueError:
                body = body.decode(errors="replace")
            raise ComfyError(e.code, body) from None

    def get(self, path: str):
        return json.loads(self._request("GET", path))

    def post(self, path: str, payload) -> dict:
        body = self._request("POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"})
        return json.loads(body) if body.strip() else {}

    def object_info(self) -> dict:
        return self.get("/object_info")

    def upload_image(self, path: Path, name: str | None = None) -> str:
        boundary = uuid.uuid4().hex
        name = name or Path(path).name
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            f"Content-Type: image/png\r\n\r\n".encode() + Path(path).read_bytes() + b"\r\n",
            f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\ntrue\r\n'.encode(),
            f"--{boundary}--\r\n".encode(),
        ]
        out = json.loads(self._request("POST", "/upload/image", b"".join(parts),
                                       {"Content-Type": f"multipart/form-data; boundary={boundary}"}))
        return out["name"]

    def queue(self, prompt: dict, workflow: dict | None = None) -> str:
        payload = {"prompt": prompt, "client_id": self.client_id}
        if workflow is not None:
            payload["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        return self.post("/prompt", payload)["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        return self.get(f"/history/{prompt_id}").get(prompt_id)

    def wait(self, prompt_id: str, timeout: float = 600.0, poll: float = 0.05) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = self.history(prompt_id)
            if h and h.get("status", {}).get("completed") is not None and (
                    h["status"].get("completed") or h["status"].get("status_str") == "error"):
                return h
            if h and h.get("status", {}).get("status_str") in ("error", "success"):
                return h
            time.sleep(poll)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s")

    def running(self) -> list:
        return self.get("/queue").get("queue_running", [])

    def interrupt(self) -> None:
        self.post("/interrupt", {})

    def view(self, image: dict) -> bytes:
        q = urllib.parse.urlencode({"filename": image["filename"], "subfolder": image.get("subfolder", ""),
                                    "type": image.get("type", "output")})
        return self._request("GET", f"/view?{q}")


def messages(history: dict, kind: str) -> list[dict]:
    """The ``kind`` events (execution_error, execution_interrupted, ...) recorded in a history entry."""
    return [data for event, data in history.get("status", {}).get("messages", []) if event == kind]


def output_images(history: dict) -> dict[str, list[dict]]:
    """node id -> images it produced (SaveImage / PreviewImage outputs)."""
    return {nid: out["images"] for nid, out in history.get("outputs", {}).items() if out.get("images")}
