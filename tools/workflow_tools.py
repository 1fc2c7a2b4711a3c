"""UI-format workflows: node definitions, widget order, structural checks and conversion to the API format.

Node definitions are ComfyUI's ``/object_info`` dicts: for the pack's nodes they come from the node
classes (via tools/comfy_stub.py, or a live server), for core nodes from tools/data/comfy_core_nodes.json
(captured from ComfyUI v0.8.0) or a live server. Conversion follows the frontend's graphToPrompt:
``widgets_values`` holds one value per widget input in ``input_order`` (required, then optional), plus the
frontend-only extras (a control value after ``seed``/``control_after_generate`` inputs, an upload value
after ``image_upload`` combos); Note/MarkdownNote nodes and muted/bypassed nodes are not sent.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
VIRTUAL_NODES = {"Note", "MarkdownNote"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}


def core_definitions() -> dict:
    return json.loads((Path(__file__).resolve().parent / "data" / "comfy_core_nodes.json").read_text(encoding="utf-8"))["nodes"]


def pack_definitions() -> dict:
    """/object_info-style definitions of the pack's nodes, without ComfyUI (stub comfy_api)."""
    from tools.comfy_stub import load_nodes, node_info, stubbed_comfy_api

    with stubbed_comfy_api():
        return {info["name"]: info for info in (node_info(n) for n in load_nodes().NODES)}


def _inputs(defn: dict):
    """(name, spec, optional) in input_order."""
    for section in ("required", "optional"):
        for name in defn.get("input_order", {}).get(section, []):
            yield name, defn["input"][section][name], section == "optional"


def is_widget(spec) -> bool:
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not opts.get("forceInput")


def widget_slots(defn: dict) -> list[tuple[str | None, dict]]:
    """The widgets_values layout: (input name, spec) per value; name None for frontend-only extras."""
    slots = []
    for name, spec, _ in _inputs(defn):
        if not is_widget(spec):
            continue
        opts = spec[1] if len(spec) > 1 else {}
        slots.append((name, spec))
        if opts.get("control_after_generate") or (spec[0] == "INT" and name in ("seed", "noise_seed")):
            slots.append((None, {"extra": "control"}))
        if opts.get("image_upload"):
            slots.append((None, {"extra": "upload"}))
    return slots


def socket_inputs(defn: dict) -> list[tuple[str, str, bool]]:
    """(name, type, optional) of the inputs that are sockets only (no widget)."""
    return [(n, s[0], o) for n, s, o in _inputs(defn) if not is_widget(s)]


def load_workflow(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def check_workflow(wf: dict, defs: dict, files: dict[str, set[str]] | None = None) -> list[str]:
    """Structural problems of a UI workflow (empty list = fine). ``files``: allowed values of file combos
    ({"model_name": {...}, "image": {...}}), whose option lists depend on the installation."""
    problems: list[str] = []
    files = files or {}
    if "definitions" in wf and wf["definitions"].get("subgraphs"):
        problems.append("workflow uses subgraphs; pack workflows must be flat")
    nodes = {n["id"]: n for n in wf.get("nodes", [])}
    links = {link[0]: link for link in wf.get("links", [])}
    outputs_seen = False
    for nid, node in nodes.items():
        t = node["type"]
        if t in VIRTUAL_NODES:
            continue
        defn = defs.get(t)
        if defn is None:
            problems.append(f"node {nid}: unknown type {t!r} (neither a pack node nor a known ComfyUI core node)")
            continue
        outputs_seen |= bool(defn.get("output_node"))
        slots = widget_slots(defn)
        values = node.get("widgets_values", [])
        if len(values) != len(slots):
            problems.append(f"node {nid} {t}: {len(values)} widget values, definition has {len(slots)} "
                            f"({[s[0] or s[1]['extra'] for s in slots]})")
        for (name, spec), value in zip(slots, values):
            problems += [f"node {nid} {t}.{name or spec['extra']}: {p}" for p in _check_value(name, spec, value, files)]
        sockets = {n: (k, o) for n, k, o in socket_inputs(defn)}
        linked = set()
        for inp in node.get("inputs", []):
            name = inp["name"]
            all_inputs = {n: s for n, s, _ in _inputs(defn)}
            if name not in all_inputs:
                problems.append(f"node {nid} {t}: input {name!r} does not exist")
                continue
            if inp.get("link") is not None:
                linked.add(name)
        for name, (kind, optional) in sockets.items():
            if not optional and name not in linked:
                problems.append(f"node {nid} {t}: required input {name!r} ({kind}) is not connected")
        for slot, out in enumerate(node.get("outputs", [])):
            if slot >= len(defn["output"]):
                problems.append(f"node {nid} {t}: output slot {slot} does not exist")
            elif out.get("type") != defn["output"][slot]:
                problems.append(f"node {nid} {t}: output {slot} type {out.get('type')} != {defn['output'][slot]}")
    for lid, (_, o, oslot, tnode, tslot, ltype) in links.items():
        src, dst = nodes.get(o), nodes.get(tnode)
        if src is None or dst is None:
            problems.append(f"link {lid}: missing node {o if src is None else tnode}")
            continue
        sdef, ddef = defs.get(src["type"]), defs.get(dst["type"])
        if sdef is None or ddef is None:
            continue
        if oslot >= len(sdef["output"]) or sdef["output"][oslot] != ltype:
            problems.append(f"link {lid}: origin {src['type']} output {oslot} is not {ltype}")
        elif lid not in (src["outputs"][oslot].get("links") or []):
            problems.append(f"link {lid}: not listed in {src['type']} output {oslot} links")
        if tslot >= len(dst.get("inputs", [])):
            problems.append(f"link {lid}: target {dst['type']} has no input slot {tslot}")
            continue
        inp = dst["inputs"][tslot]
        spec = {n: s for n, s, _ in _inputs(ddef)}.get(inp["name"])
        want = spec[0] if spec else None
        if isinstance(want, list):
            want = "COMBO"
        if inp.get("link") != lid:
            problems.append(f"link {lid}: target {dst['type']}.{inp['name']} does not point back to it")
        if want not in (ltype, "*") or inp.get("type") != ltype:
            problems.append(f"link {lid}: {ltype} into {dst['type']}.{inp['name']} ({want})")
    if not outputs_seen:
        problems.append("no output node (SaveImage / PreviewImage)")
    return problems


def _check_value(name, spec, value, files) -> list[str]:
    if name is None:
        extra = spec["extra"]
        if extra == "control" and value not in CONTROL_VALUES:
            return [f"control value {value!r} not in {sorted(CONTROL_VALUES)}"]
        if extra == "upload" and value != "image":
            return [f"upload value {value!r} should be 'image'"]
        return []
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    options = kind if isinstance(kind, list) else opts.get("options") if kind == "COMBO" else None
    if name in files:
        return [] if value in files[name] else [f"{value!r} is not one of {sorted(files[name])}"]
    if options is not None:
        return [] if value in options else [f"{value!r} not in {options}"]
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "INT" and not isinstance(value, int)):
            return [f"{value!r} is not {kind}"]
        if ("min" in opts and value < opts["min"]) or ("max" in opts and value > opts["max"]):
            return [f"{value} outside {opts.get('min')}..{opts.get('max')}"]
    if kind == "STRING" and not isinstance(value, str):
        return [f"{value!r} is not a string"]
    if kind == "BOOLEAN" and not isinstance(value, bool):
        return [f"{value!r} is not a boolean"]
    return []


def to_api(wf: dict, defs: dict) -> dict:
    """UI workflow -> API prompt {id: {class_type, inputs, _meta}} (flat graphs; Notes dropped)."""
    nodes = {n["id"]: n for n in wf["nodes"]}
    links = {link[0]: link for link in wf.get("links", [])}
    skip = {nid for nid, n in nodes.items() if n["type"] in VIRTUAL_NODES or n.get("mode", 0) in (2, 4)}
    prompt = {}
    for nid, node in nodes.items():
        if nid in skip:
            continue
        defn = defs[node["type"]]
        inputs = {}
        for (name, _), value in zip(widget_slots(defn), node.get("widgets_values", [])):
            if name is not None:
                inputs[name] = {"__value__": value} if isinstance(value, list) else value
        for inp in node.get("inputs", []):
            lid = inp.get("link")
            if lid is None:
                continue
            _, origin, oslot, _, _, _ = links[lid]
            if origin in skip:
                continue
            inputs[inp["name"]] = [str(origin), oslot]
        prompt[str(nid)] = {"class_type": node["type"], "inputs": inputs,
                            "_meta": {"title": node.get("title", node["type"])}}
    return prompt


# -- layout: room for every node's widgets and the images it shows after a run -----------------------------------
#: Nodes that show images on the canvas after a run: image outputs (Save/Preview), Load Image's picture, and the
#: pack's chain nodes, whose progress bar sends a preview of each finished level.
IMAGE_NODES = {"SaveImage", "PreviewImage", "LoadImage", "ImageBARTSample", "ImageBARTReverseStep",
               "ImageBARTMaskedRefine"}
NODE_WIDTH = 320
TITLE_HEIGHT = 30  # LiteGraph draws the title bar above a node's pos
SLOT_HEIGHT = 20
WIDGET_HEIGHT = 24
MULTILINE_HEIGHT = 80
IMAGE_ROOM = 320  # below the widgets: a square preview at the node's width (a batch is drawn as a grid in it)


def body_height(defn: dict | None, node: dict) -> int:
    """Height a node needs below its title for its sockets, widgets and (for IMAGE_NODES) its images."""
    if defn is None:  # Note / MarkdownNote: whatever the text needs; they are made tall enough by the writer
        return 0
    rows = max(len(node.get("inputs", [])), len(node.get("outputs", [])))
    height = rows * SLOT_HEIGHT + 10
    for name, spec in widget_slots(defn):
        if name is None:
            continue  # the control / upload value shares its widget's row
        opts = spec[1] if len(spec) > 1 else {}
        height += MULTILINE_HEIGHT if opts.get("multiline") else WIDGET_HEIGHT
    if node["type"] in IMAGE_NODES:
        height += IMAGE_ROOM
    return height


def node_box(node: dict) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) a node covers on the canvas, title bar included."""
    x, y = node["pos"]
    w, h = node["size"]
    return x, y - TITLE_HEIGHT, x + w, y + h


def layout_problems(wf: dict, defs: dict, gap: int = 20) -> list[str]:
    """Nodes too small for their widgets and images, and nodes (title bars included) closer than ``gap``."""
    problems = []
    nodes = wf["nodes"]
    for node in nodes:
        need = body_height(defs.get(node["type"]), node)
        if node["size"][1] < need:
            problems.append(f"node {node['id']} {node['type']}: height {node['size'][1]} < {need} needed")
    for i, a in enumerate(nodes):
        ax0, ay0, ax1, ay1 = node_box(a)
        for b in nodes[i + 1:]:
            bx0, by0, bx1, by1 = node_box(b)
            if ax0 < bx1 + gap and bx0 < ax1 + gap and ay0 < by1 + gap and by0 < ay1 + gap:
                problems.append(f"nodes {a['id']} {a['type']} and {b['id']} {b['type']} overlap or touch")
    return problems
