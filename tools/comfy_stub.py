"""A tiny stand-in for ComfyUI's ``comfy_api.latest`` (V3 node API), for tests without ComfyUI.

It holds what the pack's node classes use (``io.Schema``, typed ``Input``/``Output``, ``io.Custom``,
``io.NodeOutput``, ``io.ComfyNode``, ``ComfyExtension``, ``ui.PreviewImage``) with the same
constructor arguments as ComfyUI v0.8.0, and :func:`node_info`, which turns a node class into the
V1-style dict that ComfyUI serves at ``/object_info/<node>`` (the e2e test checks that the two agree).

Use :func:`load_nodes` to import the pack's ``nodes`` package against the stub::

    with stubbed_comfy_api():
        nodes = importlib.import_module("nodes")
"""

from __future__ import annotations

import contextlib
import importlib
import struct
import sys
import types
from typing import Any


def _prune(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


class _Input:
    io_type = "*"
    widget = False

    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 lazy: bool | None = None, default: Any = None, min=None, max=None, step=None, round=None,
                 control_after_generate: bool | None = None, multiline: bool | None = None,
                 placeholder: str | None = None, options: list | None = None, force_input: bool | None = None,
                 display_mode=None, label_on=None, label_off=None, dynamic_prompts=None, socketless=None,
                 upload=None, image_folder=None, remote=None, extra_dict=None, raw_link=None):
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.default = default
        self.min, self.max, self.step, self.round = min, max, step, round
        self.control_after_generate = control_after_generate
        self.multiline = multiline
        self.placeholder = placeholder
        self.options = options
        self.force_input = force_input

    def as_dict(self) -> dict:
        return _prune({
            "display_name": self.display_name, "tooltip": self.tooltip, "default": self.default,
            "min": self.min, "max": self.max, "step": self.step, "round": self.round,
            "control_after_generate": self.control_after_generate, "multiline": self.multiline,
            "placeholder": self.placeholder, "options": self.options, "forceInput": self.force_input,
        })


class _Output:
    io_type = "*"

    def __init__(self, id: str | None = None, display_name: str | None = None, tooltip: str | None = None,
                 is_output_list: bool = False):
        self.id = id
        self.display_name = display_name or id
        self.tooltip = tooltip
        self.is_output_list = is_output_list


def _type(io_type: str, widget: bool = False) -> type:
    ns = types.SimpleNamespace()
    ns.io_type = io_type
    ns.Input = type(f"{io_type}Input", (_Input,), {"io_type": io_type, "widget": widget})
    ns.Output = type(f"{io_type}Output", (_Output,), {"io_type": io_type})
    return ns


class Schema:
    def __init__(self, node_id: str, display_name: str | None = None, category: str = "sd", inputs=None,
                 outputs=None, hidden=None, description: str = "", is_output_node: bool = False,
                 not_idempotent: bool = False, is_experimental: bool = False, is_deprecated: bool = False,
                 **_ignored):
        self.node_id = node_id
        self.display_name = display_name
        self.category = category
        self.inputs = list(inputs or [])
        self.outputs = list(outputs or [])
        self.hidden = list(hidden or [])
        self.description = description
        self.is_output_node = is_output_node
        self.not_idempotent = not_idempotent


class NodeOutput:
    def __init__(self, *args: Any, ui: Any = None, expand: Any = None, block_execution: str | None = None):
        self.args = args
        self.ui = ui

    @property
    def result(self):
        return self.args if self.args else None

    def __getitem__(self, index):
        return self.args[index]


class ComfyNode:
    hidden = types.SimpleNamespace(unique_id=None, prompt=None, extra_pnginfo=None)

    @classmethod
    def define_schema(cls) -> Schema:  # pragma: no cover - abstract
        raise NotImplementedError


class ComfyExtension:
    async def on_load(self) -> None:
        pass

    async def get_node_list(self) -> list:  # pragma: no cover - abstract
        raise NotImplementedError


class PreviewImage:
    """Stands in for ui.PreviewImage: keeps the image instead of writing temp files."""

    def __init__(self, image, animated: bool = False, cls=None, **kwargs):
        self.image = image

    def as_dict(self) -> dict:
        return {"images": [], "animated": (False,)}


def build_modules() -> dict[str, types.ModuleType]:
    io = types.ModuleType("comfy_api.latest.io")
    for name, io_type, widget in [
        ("Int", "INT", True), ("Float", "FLOAT", True), ("String", "STRING", True), ("Boolean", "BOOLEAN", True),
        ("Combo", "COMBO", True), ("Image", "IMAGE", False), ("Mask", "MASK", False), ("Latent", "LATENT", False),
    ]:
        setattr(io, name, _type(io_type, widget))
    io.Custom = lambda io_type: _type(io_type)
    io.Schema = Schema
    io.NodeOutput = NodeOutput
    io.ComfyNode = ComfyNode
    io.Hidden = types.SimpleNamespace(unique_id="UNIQUE_ID", prompt="PROMPT", extra_pnginfo="EXTRA_PNGINFO")
    ui = types.ModuleType("comfy_api.latest.ui")
    ui.PreviewImage = PreviewImage
    latest = types.ModuleType("comfy_api.latest")
    latest.io, latest.ui, latest.IO, latest.UI = io, ui, io, ui
    latest.ComfyExtension = ComfyExtension
    root = types.ModuleType("comfy_api")
    root.latest = latest
    return {"comfy_api": root, "comfy_api.latest": latest, "comfy_api.latest.io": io, "comfy_api.latest.ui": ui}


@contextlib.contextmanager
def stubbed_comfy_api():
    """sys.modules with the stub ``comfy_api`` and without ``comfy``; restored on exit (pack modules too)."""
    saved = {k: v for k, v in sys.modules.items() if k == "nodes" or k.startswith("nodes.")}
    for k in saved:
        del sys.modules[k]
    stubs = {**build_modules(), "comfy": None, "folder_paths": None, "server": None}
    before = {k: sys.modules[k] for k in stubs if k in sys.modules}
    sys.modules.update(stubs)
    try:
        yield
    finally:
        # only the stubs are taken out again: modules imported meanwhile (torch internals loaded lazily
        # while sampling) stay, since importing some of them twice fails (TORCH_LIBRARY registered twice)
        for k in stubs:
            if k in before:
                sys.modules[k] = before[k]
            else:
                sys.modules.pop(k, None)
        for k in [k for k in sys.modules if k == "nodes" or k.startswith("nodes.")]:
            del sys.modules[k]
        sys.modules.update(saved)


class FakePromptServer:
    """Stands in for ComfyUI's ``server.PromptServer.instance``: ``send_progress_text`` builds the same binary
    websocket frame as ComfyUI v0.8.0 (``struct.pack(">I", len(node_id)) + node_id + text``, event
    ``BinaryEventTypes.TEXT`` = 3) and ``send_sync`` records what would go over the websocket."""

    TEXT = 3

    def __init__(self):
        self.client_id = "client-1"  # set by ComfyUI's executor while a prompt runs
        self.sent: list[tuple[int | str, Any, str | None]] = []

    def send_progress_text(self, text, node_id, sid=None):
        if isinstance(text, str):
            text = text.encode("utf-8")
        node = str(node_id).encode("utf-8")
        self.send_sync(self.TEXT, struct.pack(">I", len(node)) + node + text, sid)

    def send_sync(self, event, data, sid=None):
        self.sent.append((event, data, sid))

    def node_texts(self) -> list[tuple[str, str]]:
        """(node id, text) per text frame, decoded as the v0.8.0 frontend does (``progress_text`` events;
        the frontend drops frames with an empty text or node id)."""
        out = []
        for event, data, _ in self.sent:
            if event != self.TEXT:
                continue
            (n,) = struct.unpack(">I", data[:4])
            node, text = data[4:4 + n].decode("utf-8"), data[4 + n:].decode("utf-8")
            if node and text:
                out.append((node, text))
        return out


@contextlib.contextmanager
def fake_prompt_server():
    """A ``server`` module whose ``PromptServer.instance`` is a :class:`FakePromptServer` (yielded)."""
    instance = FakePromptServer()
    module = types.ModuleType("server")
    module.PromptServer = type("PromptServer", (), {"instance": instance})
    had, before = "server" in sys.modules, sys.modules.get("server")
    sys.modules["server"] = module
    try:
        yield instance
    finally:
        if had:
            sys.modules["server"] = before
        else:
            sys.modules.pop("server", None)


def load_nodes():
    """Import the pack's ``nodes`` package against the stub (call inside :func:`stubbed_comfy_api`)."""
    return importlib.import_module("nodes")


def node_info(node_cls) -> dict:
    """The V1-style definition of a V3 node class, as ComfyUI's /object_info serves it."""
    schema = node_cls.define_schema()
    required, optional = {}, {}
    for inp in schema.inputs:
        (optional if inp.optional else required)[inp.id] = [inp.io_type, inp.as_dict()]
    inputs = {"required": required}
    if optional:
        inputs["optional"] = optional
    return {
        "input": inputs,
        "input_order": {k: list(v) for k, v in inputs.items()},
        "output": [o.io_type for o in schema.outputs],
        "output_name": [o.display_name or o.io_type for o in schema.outputs],
        "output_tooltips": [o.tooltip for o in schema.outputs],
        "name": schema.node_id,
        "display_name": schema.display_name,
        "description": schema.description,
        "category": schema.category,
        "output_node": schema.is_output_node,
    }
