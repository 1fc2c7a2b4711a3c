"""Write the example workflows in ``workflows/`` (ComfyUI UI format, flat graphs, drag-and-drop loadable).

Widget values and slots come from the node definitions (the pack's node classes, read through the
stub of ``comfy_api`` in tools/comfy_stub.py, and ComfyUI v0.8.0's core nodes in tools/data/comfy_core_nodes.json),
so the files always match the nodes. Re-run after changing a node's inputs:

    python3 -m tools.make_workflows

Model files: the two small demo models bundled in the pack's ``models/`` folder (trained on procedural
coloured shapes, 32x32 px; listed by Load ImageBART without copying). The unconditional workflows use the
class model with no condition connected (it was trained with condition dropout).
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from tools.workflow_tools import (  # noqa: E402
    NODE_WIDTH,
    TITLE_HEIGHT,
    body_height,
    core_definitions,
    pack_definitions,
    socket_inputs,
    widget_slots,
)

CLASS_MODEL = "imagebart-demo-shapes-class.safetensors"
TEXT_MODEL = "imagebart-demo-shapes-text.safetensors"
# "uncond-text": the text model with no condition, for pictures of two shapes (the class model saw only one)
MODELS = {"uncond": CLASS_MODEL, "class": CLASS_MODEL, "text": TEXT_MODEL, "uncond-text": TEXT_MODEL}
GUIDANCE = 2.0  # classifier-free guidance of the conditioned workflows: the small demo models follow it better
CLASS_EDIT_GUIDANCE = 3.0  # the class edit: a triangle in 29 of 30 seeds (1..30; tests/test_workflows.py)
# example images (workflows/inputs/, copied into ComfyUI's input folder when the pack loads)
EXAMPLE = "imagebart_example.png"
EXAMPLE_MASKED = "imagebart_example_masked.png"
EXAMPLE_WIDE_MASKED = "imagebart_example_wide_masked.png"
EXAMPLE_SINGLE_MASKED = "imagebart_example_single_masked.png"
COLUMN_GAP = 80  # px between columns
ROW_GAP = 60  # px between a node and the next one's title bar in a column
NOTE_SIZE = (NODE_WIDTH, 260)
MODEL_NOTE = {
    "uncond": "**Model:** `{model}`, a small demo model bundled with the pack (its `models/` folder is listed by "
              "Load ImageBART). Trained on coloured shapes at 32x32 px; with no condition connected it samples "
              "unconditionally.",
    "class": "**Model:** `{model}`, a small demo model bundled with the pack (its `models/` folder is listed by "
             "Load ImageBART). Trained on coloured shapes at 32x32 px; classes: circle, cross, diamond, square, "
             "triangle.",
    "uncond-text": "**Model:** `{model}`, a small demo model bundled with the pack (its `models/` folder is listed "
                   "by Load ImageBART). Trained on pictures of one or two coloured shapes at 32x32 px (with captions, "
                   "and without, so with no condition connected it samples unconditionally).",
    "text": "**Model:** `{model}`, a small demo model bundled with the pack (its `models/` folder is listed by "
            "Load ImageBART). Trained on coloured shapes at 32x32 px with captions such as \"a red circle above a "
            "blue square\" (colours red, green, blue, yellow, purple, orange; relations above, below, left of, "
            "right of); other words are ignored.",
}


class Workflow:
    """A UI-format workflow. Nodes are placed in columns (``pos`` = column index): each node is as tall as its
    widgets plus room for the images it shows after a run (workflow_tools.body_height), and stacked below the
    previous node of its column, so no preview or thumbnail covers another node. An explicit ``(x, y)``
    ``pos`` is used as given."""

    def __init__(self, name: str, defs: dict):
        self.name, self.defs = name, defs
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.column_bottom: dict[int, float] = {}

    def _place(self, pos, height: float) -> list[float]:
        if not isinstance(pos, int):
            return list(pos)
        x = 20 + pos * (NODE_WIDTH + COLUMN_GAP)
        y = self.column_bottom.get(pos, 20 - ROW_GAP - TITLE_HEIGHT) + ROW_GAP + TITLE_HEIGHT
        self.column_bottom[pos] = y + height
        return [x, y]

    def node(self, type_: str, pos, title: str | None = None, **kw) -> dict:
        nid = len(self.nodes) + 1
        if type_ == "MarkdownNote":
            size = kw.get("size", NOTE_SIZE)
            n = {"id": nid, "type": type_, "pos": self._place(pos, size[1]), "size": list(size),
                 "flags": {}, "order": nid - 1, "mode": 0, "inputs": [], "outputs": [], "properties": {},
                 "widgets_values": [kw["text"]], "color": "#432", "bgcolor": "#653"}
            self.nodes.append(n)
            return n
        defn = self.defs[type_]
        values = []
        for name, spec in widget_slots(defn):
            if name is None:
                values.append("fixed" if spec["extra"] == "control" else "image")
                continue
            opts = spec[1] if len(spec) > 1 else {}
            values.append(kw.pop(name) if name in kw else opts.get("default"))
        inputs = [{"name": name, "type": kind, "link": None} for name, kind, _ in socket_inputs(defn)]
        outputs = [{"name": oname, "type": otype, "links": [], "slot_index": i}
                   for i, (otype, oname) in enumerate(zip(defn["output"], defn["output_name"]))]
        n = {"id": nid, "type": type_, "pos": None, "size": None, "flags": {}, "order": nid - 1, "mode": 0,
             "inputs": inputs, "outputs": outputs, "properties": {"Node name for S&R": type_},
             "widgets_values": values}
        height = body_height(defn, n)
        n["pos"], n["size"] = self._place(pos, height), [NODE_WIDTH, height]
        if title:
            n["title"] = title
        self.nodes.append(n)
        for name, (src, slot) in kw.items():  # the rest are links: name=(source node, output slot)
            self.link(src, slot, n, name)
        return n

    def link(self, src: dict, slot: int, dst: dict, name: str) -> None:
        lid = len(self.links) + 1
        tslot = next(i for i, inp in enumerate(dst["inputs"]) if inp["name"] == name)
        ltype = src["outputs"][slot]["type"]
        self.links.append([lid, src["id"], slot, dst["id"], tslot, ltype])
        src["outputs"][slot]["links"].append(lid)
        dst["inputs"][tslot]["link"] = lid

    def save(self) -> Path:
        wf = {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"imagebart/{self.name}")), "revision": 0,
              "last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
              "links": self.links, "groups": [], "config": {},
              "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}}, "version": 0.4}
        path = ROOT / "workflows" / f"{self.name}.json"
        path.write_text(json.dumps(wf, indent=1) + "\n", encoding="utf-8")
        return path


def note(wf: Workflow, text: str, kind: str = "uncond") -> None:
    wf.node("MarkdownNote", 0, text=text + "\n\n" + MODEL_NOTE[kind].format(model=MODELS[kind]))


IMAGES_NOTE = ("The example image is copied into ComfyUI's input folder when the pack loads (never over a file of "
               "yours); pick your own in Load Image.")


def unconditional(defs):
    wf = Workflow("unconditional_sampling", defs)
    note(wf, "## Unconditional sampling\nThe whole chain in one Sample node: noise -> clean codes -> image. "
             "The bar counts scales x tokens and previews each finished level.")
    m = wf.node("ImageBARTLoader", 0, model_name=MODELS["uncond"])
    s = wf.node("ImageBARTSample", 1, model=(m, 0), batch_size=4, seed=42)
    d = wf.node("ImageBARTDecode", 2, model=(m, 0), codes=(s, 0))
    wf.node("SaveImage", 3, images=(d, 0), filename_prefix="imagebart/unconditional")
    return wf


def step_by_step(defs):
    wf = Workflow("step_by_step_chain", defs)
    note(wf, "## Step-by-step chain\nRandom Codes (level 4 = noise), then one Reverse Chain Step per transition "
             "(4 -> 3 -> 2 -> 1). Each step's preview shows its level decoded as if it were clean; only level 1 "
             "is a real image. Use the same seed everywhere to get exactly what Sample gives.")
    m = wf.node("ImageBARTLoader", 0, model_name=MODELS["uncond"])
    x = wf.node("ImageBARTRandomCodes", 1, model=(m, 0), batch_size=2, seed=7)
    for i in range(3):
        x = wf.node("ImageBARTReverseStep", 2 + i, title=f"Reverse step: level {4 - i} -> {3 - i}",
                    model=(m, 0), codes=(x, 0), seed=7)
        wf.node("PreviewImage", 2 + i, title=f"Level {3 - i} (decoded as if clean)", images=(x, 1))
    d = wf.node("ImageBARTDecode", 5, model=(m, 0), codes=(x, 0))
    wf.node("SaveImage", 6, images=(d, 0), filename_prefix="imagebart/step_by_step")
    return wf


def _edit(wf, kind, image_file, cond=None, **refine):
    """Load Image (its alpha is the mask) -> Encode -> Masked Refine (composite onto the loaded image)."""
    m = wf.node("ImageBARTLoader", 0, model_name=MODELS[kind])
    img = wf.node("LoadImage", 0, image=image_file)
    e = wf.node("ImageBARTEncode", 1, model=(m, 0), image=(img, 0))
    links = {"model": (m, 0), "codes": (e, 0), "image": (img, 0), "mask": (img, 1)}
    if cond is not None:
        links["condition"] = (cond(wf, m), 0)
    links.update(refine)
    r = wf.node("ImageBARTMaskedRefine", 2, composite=True, **links)
    return m, img, r


def inpainting(defs):
    wf = Workflow("inpainting_free_form", defs)
    note(wf, "## Free-form inpainting\nLoad an image and paint the area to regenerate (right-click the Load "
             "Image node -> Open in MaskEditor; transparent = regenerate). The mask can be any size: it is "
             "stretched to the encoded image. 'composite' pastes the result into the original at its own size, "
             "keeping the original pixels outside the mask. The example paints over the green diamond; the model "
             "redraws something that fits the rest. " + IMAGES_NOTE)
    _, _, r = _edit(wf, "uncond", EXAMPLE_MASKED, seed=3)
    wf.node("SaveImage", 3, images=(r, 1), filename_prefix="imagebart/inpainting")
    return wf


def upper_half(defs):
    wf = Workflow("upper_half_completion", defs)
    note(wf, "## Upper-half completion\nThe upper half of the image is regenerated to fit the lower half, four "
             "times (batch item i uses seed + i). The mask is built with core mask nodes at 32x32 while the image "
             "is 64x64: Masked Refine stretches it. " + IMAGES_NOTE)
    m = wf.node("ImageBARTLoader", 0, model_name=MODELS["uncond"])
    img = wf.node("LoadImage", 0, image=EXAMPLE)
    rep = wf.node("RepeatImageBatch", 1, image=(img, 0), amount=4)
    zero = wf.node("SolidMask", 1, value=0.0, width=32, height=32)
    top = wf.node("SolidMask", 1, value=1.0, width=32, height=16)
    e = wf.node("ImageBARTEncode", 2, model=(m, 0), image=(rep, 0))
    mask = wf.node("MaskComposite", 2, destination=(zero, 0), source=(top, 0), x=0, y=0, operation="add")
    r = wf.node("ImageBARTMaskedRefine", 3, model=(m, 0), codes=(e, 0), mask=(mask, 0), image=(img, 0),
                composite=True, seed=11)
    wf.node("SaveImage", 4, images=(r, 1), filename_prefix="imagebart/upper_half")
    return wf


def class_edit(defs):
    wf = Workflow("class_guided_local_edit", defs)
    note(wf, "## Class-guided local editing\nThe painted area is regenerated under a class label (by name or "
             "index; for the released ImageNet models e.g. 'tiger'). The example paints over the blue diamond of "
             "a one-shape picture (the demo class model was trained on one shape per image) and redraws it as a "
             "triangle; 'guidance' 3 (classifier-free) makes the class count more. " + IMAGES_NOTE, kind="class")

    def cond(wf, m):
        return wf.node("ImageBARTClassCondition", 1, model=(m, 0), class_name="triangle")

    _, _, r = _edit(wf, "class", EXAMPLE_SINGLE_MASKED, cond=cond, seed=1, guidance=CLASS_EDIT_GUIDANCE)
    wf.node("SaveImage", 3, images=(r, 1), filename_prefix="imagebart/class_edit")
    return wf


def text_edit(defs):
    wf = Workflow("text_guided_local_edit", defs)
    note(wf, "## Text-guided local editing\nThe painted area is regenerated following a prompt that describes the "
             "whole picture as it should become: here the green diamond left of the blue square becomes a red "
             "circle. (No text-conditional ImageBART weights were ever published beyond this demo; larger ones need "
             "a model you trained.) " + IMAGES_NOTE, kind="text")

    def cond(wf, m):
        return wf.node("ImageBARTTextCondition", 1, model=(m, 0), prompt="a red circle left of a blue square")

    _, _, r = _edit(wf, "text", EXAMPLE_MASKED, cond=cond, seed=9, guidance=GUIDANCE)
    wf.node("SaveImage", 3, images=(r, 1), filename_prefix="imagebart/text_edit")
    return wf


def variations(defs):
    wf = Workflow("variations", defs)
    note(wf, "## Variations of an image\nEncode, noise the codes up to level 2 (Noise Codes: higher = more "
             "change, up to 4 = pure noise), then run the reverse chain back down. Four variations of the green "
             "diamond left of the blue square (batch item i uses seed + i). " + IMAGES_NOTE, kind="uncond-text")
    m = wf.node("ImageBARTLoader", 0, model_name=MODELS["uncond-text"])
    img = wf.node("LoadImage", 0, image=EXAMPLE)
    rep = wf.node("RepeatImageBatch", 1, image=(img, 0), amount=4)
    e = wf.node("ImageBARTEncode", 1, model=(m, 0), image=(rep, 0))
    n = wf.node("ImageBARTNoiseCodes", 2, model=(m, 0), codes=(e, 0), level=2, seed=21)
    r = wf.node("ImageBARTReverseStep", 3, model=(m, 0), codes=(n, 0), steps=1, seed=21)
    d = wf.node("ImageBARTDecode", 4, model=(m, 0), codes=(r, 0))
    wf.node("SaveImage", 5, images=(d, 0), filename_prefix="imagebart/variations")
    return wf


def wide_panorama(defs):
    wf = Workflow("wide_panorama_prompt_blend", defs)
    note(wf, "## Wide panorama with a prompt blend\nSample at 3x the model's trained width (96 px for the 32 px "
             "demo model; 768 for a 256 px model): every code is drawn looking at a trained-size window around it "
             "(sliding windows, moved by 'window_stride' codes, 0 = automatic). Condition Blend mixes two prompts "
             "from left to right: the first rules the left edge, the second the right edge.", kind="text")
    m = wf.node("ImageBARTLoader", 0, model_name=MODELS["text"])
    left = wf.node("ImageBARTTextCondition", 1, title="Prompt on the left", model=(m, 0), prompt="a red circle")
    right = wf.node("ImageBARTTextCondition", 1, title="Prompt on the right", model=(m, 0), prompt="a blue square")
    blend = wf.node("ImageBARTConditionBlend", 2, condition_1=(left, 0), condition_2=(right, 0))
    s = wf.node("ImageBARTSample", 3, model=(m, 0), condition=(blend, 0), width=96, height=0, seed=17,
                guidance=GUIDANCE)
    d = wf.node("ImageBARTDecode", 4, model=(m, 0), codes=(s, 0))
    wf.node("SaveImage", 5, images=(d, 0), filename_prefix="imagebart/panorama")
    return wf


def large_inpainting(defs):
    wf = Workflow("large_image_inpainting", defs)
    note(wf, "## Inpainting an image larger than the model\nThe 96x64 image (six shapes pictures) is encoded at "
             "its own size ('keep size': each side rounded to a multiple of the VQGAN factor, at least the model's "
             "size) instead of being shrunk to the model's 32x32. Masked Refine regenerates the painted area "
             "(LoadImage alpha; transparent = regenerate) with sliding windows; the decoded result is pasted into "
             "the original with the mask (ImageCompositeMasked), so unmasked pixels stay exactly as loaded. "
             + IMAGES_NOTE)
    m = wf.node("ImageBARTLoader", 0, model_name=MODELS["uncond"])
    img = wf.node("LoadImage", 0, image=EXAMPLE_WIDE_MASKED)
    e = wf.node("ImageBARTEncode", 1, model=(m, 0), image=(img, 0), fit="keep size (round to multiple of factor)")
    r = wf.node("ImageBARTMaskedRefine", 2, model=(m, 0), codes=(e, 0), mask=(img, 1), seed=23)
    d = wf.node("ImageBARTDecode", 3, model=(m, 0), codes=(r, 0))
    c = wf.node("ImageCompositeMasked", 4, destination=(img, 0), source=(d, 0), mask=(img, 1), x=0, y=0)
    wf.node("SaveImage", 5, images=(c, 0), filename_prefix="imagebart/large_inpainting")
    return wf


# -- the released CompVis models (workflows/released/; weights fetched with `python -m imagebart_core.get`) ------
def released_file(name: str) -> str:
    from imagebart_core.get import DEFAULT_DTYPE, output_name

    return output_name(name, DEFAULT_DTYPE)


def released_note(wf: Workflow, text: str, name: str, offload: bool = False) -> None:
    """A note naming the model file and the command that makes it (the weights are not shipped)."""
    from imagebart_core.get import DEFAULT_DTYPE
    from imagebart_core.original.sizes import human_bytes, model_size

    size = human_bytes(model_size(name).file_bytes(DEFAULT_DTYPE))
    text += (f"\n\n**Model:** `{released_file(name)}` ({size}), the released CompVis model `{name}` converted to "
             "the pack's format. It is not shipped with the pack: make it once with\n\n"
             f"`python -m imagebart_core.get {name}`\n\n"
             "run in this pack's folder (`ComfyUI/custom_nodes/<pack>/`); it downloads the original release, "
             "converts it into `ComfyUI/models/imagebart/` and deletes the download. Then press R and Queue. "
             "See docs/original-checkpoints.md (--from for zips you already have).")
    if offload:
        text += ("\n\n'offload_idle_scales' is on in Load ImageBART: only the running scale sits on the GPU "
                 "(about 1.6 GB instead of the whole file), the others wait in system RAM.")
    # wide and tall enough for the whole note: the command must be visible without scrolling
    wf.node("MarkdownNote", 0, text=text, size=(NODE_WIDTH, 560))


def released_ffhq_upper_half(defs):
    name = "ffhq_4_scales_geometric"
    wf = Workflow("released/ffhq_upper_half_completion", defs)
    released_note(wf, "## FFHQ: upper-half completion\nThe released FFHQ model (256x256 faces) regenerates the "
                      "upper half of the image to fit the lower half, twice (batch item i uses seed + i). The mask "
                      "comes from core mask nodes (1 = regenerate). The example input is a drawing; use a photo of "
                      "a face, centred and cropped like FFHQ, for realistic results.", name)
    m = wf.node("ImageBARTLoader", 0, model_name=released_file(name))
    img = wf.node("LoadImage", 0, image="imagebart_released_face.png")
    rep = wf.node("RepeatImageBatch", 1, image=(img, 0), amount=2)
    e = wf.node("ImageBARTEncode", 2, model=(m, 0), image=(rep, 0))
    zero = wf.node("SolidMask", 1, value=0.0, width=256, height=256)
    top = wf.node("SolidMask", 1, value=1.0, width=256, height=128)
    mask = wf.node("MaskComposite", 2, destination=(zero, 0), source=(top, 0), x=0, y=0, operation="add")
    r = wf.node("ImageBARTMaskedRefine", 3, model=(m, 0), codes=(e, 0), mask=(mask, 0), image=(img, 0),
                composite=True, seed=11)
    wf.node("SaveImage", 4, images=(r, 1), filename_prefix="imagebart/ffhq_upper_half")
    return wf


def released_imagenet_sampling(defs):
    name = "cin_5_scales_custom"
    wf = Workflow("released/imagenet_class_sampling", defs)
    released_note(wf, "## ImageNet: class-conditional sampling\nThe released class-conditional ImageNet model "
                      "(5 scales, 3.1 billion parameters) samples two 256x256 images of a class, by name or index "
                      "(0-999). These models were trained without a null class, so 'guidance' stays 1.", name,
                  offload=True)
    m = wf.node("ImageBARTLoader", 0, model_name=released_file(name), offload_idle_scales=True)
    c = wf.node("ImageBARTClassCondition", 0, model=(m, 0), class_name="tiger")
    s = wf.node("ImageBARTSample", 1, model=(m, 0), condition=(c, 0), batch_size=2, seed=42)
    d = wf.node("ImageBARTDecode", 2, model=(m, 0), codes=(s, 0))
    wf.node("SaveImage", 3, images=(d, 0), filename_prefix="imagebart/imagenet_tiger")
    return wf


def released_imagenet_edit(defs):
    name = "cin_5_scales_custom"
    wf = Workflow("released/imagenet_class_guided_edit", defs)
    released_note(wf, "## ImageNet: class-guided local editing\nThe painted area (LoadImage alpha: transparent = "
                      "regenerate; right-click -> Open in MaskEditor to paint your own) is regenerated under an "
                      "ImageNet class, here a golden retriever on the meadow; the rest of the image is kept "
                      "('composite' pastes the original pixels back outside the mask).", name, offload=True)

    def cond(wf, m):
        return wf.node("ImageBARTClassCondition", 1, model=(m, 0), class_name="golden retriever")

    m = wf.node("ImageBARTLoader", 0, model_name=released_file(name), offload_idle_scales=True)
    img = wf.node("LoadImage", 0, image="imagebart_released_meadow_masked.png")
    e = wf.node("ImageBARTEncode", 1, model=(m, 0), image=(img, 0))
    r = wf.node("ImageBARTMaskedRefine", 2, model=(m, 0), codes=(e, 0), mask=(img, 1), image=(img, 0),
                condition=(cond(wf, m), 0), composite=True, seed=5)
    wf.node("PreviewImage", 1, images=(img, 0))
    wf.node("SaveImage", 3, images=(r, 1), filename_prefix="imagebart/imagenet_edit")
    return wf


def released_churches_inpainting(defs):
    name = "churches_3_scales"
    wf = Workflow("released/churches_inpainting", defs)
    released_note(wf, "## LSUN churches: free-form inpainting\nThe released LSUN churches model redraws the "
                      "painted area (here the tower) to fit the rest of the building (LoadImage alpha: transparent = "
                      "regenerate; paint your own with the MaskEditor).", name)
    m = wf.node("ImageBARTLoader", 0, model_name=released_file(name))
    img = wf.node("LoadImage", 0, image="imagebart_released_church_masked.png")
    e = wf.node("ImageBARTEncode", 1, model=(m, 0), image=(img, 0))
    r = wf.node("ImageBARTMaskedRefine", 2, model=(m, 0), codes=(e, 0), mask=(img, 1), image=(img, 0),
                composite=True, seed=3)
    wf.node("PreviewImage", 1, images=(img, 0))
    wf.node("SaveImage", 3, images=(r, 1), filename_prefix="imagebart/churches_inpainting")
    return wf


BUILDERS = [unconditional, step_by_step, inpainting, upper_half, class_edit, text_edit, variations, wide_panorama,
            large_inpainting]
BUILDERS += [released_ffhq_upper_half, released_imagenet_sampling, released_imagenet_edit, released_churches_inpainting]


def main() -> None:
    defs = {**core_definitions(), **pack_definitions()}
    for build in BUILDERS:
        print(build(defs).save().relative_to(ROOT))  # noqa: T201


if __name__ == "__main__":
    main()
