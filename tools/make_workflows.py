"""Write the example workflows in ``workflows/`` (ComfyUI UI format, flat graphs, drag-and-drop loadable).

Widget values and slots come from the node definitions (the pack's node classes, read through the
stub of ``comfy_api`` in tools/comfy_stub.py, and ComfyUI v0.8.0's core nodes in tools/data/comfy_core_nodes.json),
so the files always match the nodes. Re-run after changing a node's inputs:

    python3 -m tools.make_workflows

Model files: the two colour-emoji models bundled in the pack's ``models/`` folder (trained by
``python -m training.emoji_recipe`` on the Noto Color Emoji font, 64x64 px; listed by Load ImageBART without
copying): ``imagebart-emoji-class.safetensors`` (conditioned on the nine Unicode emoji groups) and
``imagebart-emoji-text.safetensors`` (conditioned on the emoji's names). The unconditional workflows use the
class model with no condition connected (it was trained with condition dropout). The number of chain steps of
the step-by-step workflow is read from the bundled class model when it is there (else the recipe's default).
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

CLASS_MODEL = "imagebart-emoji-class.safetensors"
TEXT_MODEL = "imagebart-emoji-text.safetensors"
MODELS = {"uncond": CLASS_MODEL, "class": CLASS_MODEL, "text": TEXT_MODEL, "uncond-text": TEXT_MODEL}
SIZE = 64  # the emoji models' image size in pixels
# the nine Unicode emoji groups, the class model's class names (training.emoji_catalog.GROUPS)
GROUPS = ("smileys-emotion", "people-body", "animals-nature", "food-drink", "travel-places", "activities",
          "objects", "symbols", "flags")
GUIDANCE = 3.0  # classifier-free guidance of the conditioned workflows
# the class / text sampling workflows sample as the recipe's metrics were measured (tools.demo.EmojiShowcase)
GROUP_GUIDANCE = 5.0
PROMPT_GUIDANCE = 2.0
PROMPT_TOP_K = 4
SAMPLE_PROMPT = "red apple"
UPPER_HALF_CLASS = "smileys-emotion"  # the upper-half completion's condition (the face is a smiley)
UPPER_HALF_GUIDANCE = 2.0
EDIT_CLASS = "flags"  # the group whose look the model draws most distinctly (animals-nature was tried: no animal)
EDIT_PROMPT = "flag: Sweden"  # chosen by looking at 8 candidates (tools.demo.EmojiShowcase); "blue heart" kept the face yellow
TEXT_EDIT_GUIDANCE = 5.0
PANORAMA_PROMPTS = ("red apple", "globe showing americas")
VARIATION_LEVEL = 2
SEEDS = {"unconditional": 42, "class_sampling": 0, "text_sampling": 100, "step_by_step": 7, "inpainting": 3,
         "upper_half": 11, "class_edit": 1, "text_edit": 9, "variations": 21, "panorama": 17, "large_inpainting": 23}
# example images (workflows/inputs/, rendered by scripts/make_example_inputs.py; the pack copies them into
# ComfyUI's input folder when it loads)
FACE = "imagebart_emoji_face.png"
FACE_LEFT_MASKED = "imagebart_emoji_face_left_masked.png"
MASKED = "imagebart_emoji_masked.png"
WIDE_MASKED = "imagebart_emoji_wide_masked.png"
COLUMN_GAP = 80  # px between columns
ROW_GAP = 60  # px between a node and the next one's title bar in a column
NOTE_SIZE = (NODE_WIDTH, 300)
_BUNDLED = ("a colour-emoji model bundled with the pack (its `models/` folder is listed by Load ImageBART), trained "
            "by this repository's trainer on the Noto Color Emoji font at 64x64 px")
MODEL_NOTE = {
    "uncond": "**Model:** `{model}`, " + _BUNDLED + "; with no condition connected it samples unconditionally "
              "(it was trained with condition dropout).",
    "class": "**Model:** `{model}`, " + _BUNDLED + ", conditioned on the nine Unicode emoji groups: "
             + ", ".join(GROUPS) + ".",
    "uncond-text": "**Model:** `{model}`, " + _BUNDLED + "; with no condition connected it samples "
                   "unconditionally.",
    "text": "**Model:** `{model}`, " + _BUNDLED + ", conditioned on the emoji's Unicode names (\"grinning cat\", "
            "\"red heart\", \"rocket\" ...). Words that never occur in an emoji name are ignored, and the Text "
            "Condition node says which.",
}


def chain_levels() -> int:
    """T = number of scales + 1 of the bundled class model (or of the emoji recipe's default settings)."""
    path = ROOT / "models" / CLASS_MODEL
    if path.is_file():
        from imagebart_core.checkpoint import read_config

        return read_config(path).num_levels
    from training.emoji_recipe import EmojiRecipeSettings

    return EmojiRecipeSettings().n_scales + 1


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

    def node(self, type_: str, pos, title: str | None = None, extra_height: int = 0, **kw) -> dict:
        """``extra_height``: px added to the node's computed height (e.g. room for more lines of a multiline
        widget)."""
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
        height = body_height(defn, n) + extra_height
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


IMAGES_NOTE = ("The example image (rendered from the emoji font) is copied into ComfyUI's input folder when the pack "
               "loads (never over a file of yours); pick your own 64x64 picture in Load Image.")


def unconditional(defs):
    wf = Workflow("unconditional_sampling", defs)
    note(wf, "## Unconditional sampling\nThe whole chain in one Sample node: noise -> clean codes -> image, four "
             "64x64 emoji-like pictures of any group (batch item i uses seed + i). The bar counts scales x tokens "
             "and previews each finished level. Expect soft, blurry pictures in emoji colours on a light background, "
             "of any group (for this seed a blue-and-red square tile, a reddish framed square with a pale middle, a "
             "pale shape with teal and yellow, and a figure-like shape standing on blue), rarely a recognisable "
             "emoji: the bundled models are small (8x8 codes, chains of width 128 trained for 7000-11000 steps per "
             "scale on a CPU).")
    m = wf.node("ImageBARTLoader", 0, model_name=MODELS["uncond"])
    s = wf.node("ImageBARTSample", 1, model=(m, 0), batch_size=4, seed=SEEDS["unconditional"])
    d = wf.node("ImageBARTDecode", 2, model=(m, 0), codes=(s, 0))
    wf.node("SaveImage", 3, images=(d, 0), filename_prefix="imagebart/unconditional")
    return wf


def class_sampling(defs):
    wf = Workflow("class_sampling", defs)
    note(wf, "## Samples per emoji group\nOne sample for each of the nine Unicode emoji groups (Class Condition: "
             "one group per line = one batch item each, in this order: " + ", ".join(GROUPS) + f"). 'guidance' "
             f"{GROUP_GUIDANCE:g} (classifier-free; the value README's measurements use) makes the group count "
             "more. Expect a group's look rather than a particular emoji, and blurry. For this seed: a yellow face "
             "with dark eyes and mouth (smileys-emotion), a brown-and-white figure (people-body), a brownish-red "
             "blob (animals-nature), a rounded brown-orange one (food-drink), a pale blue-white shape "
             "(travel-places), an orange-yellow one (activities), a pale blue blotch (objects), an orange square "
             "tile with a pale mark (symbols) and a striped flag in blue, red and yellow (flags).",
         kind="class")
    m = wf.node("ImageBARTLoader", 0, model_name=MODELS["class"])
    # tall enough to show the nine lines of the class box and the classes the node reports after a run
    c = wf.node("ImageBARTClassCondition", 0, model=(m, 0), class_name="\n".join(GROUPS), extra_height=120)
    s = wf.node("ImageBARTSample", 1, model=(m, 0), condition=(c, 0), seed=SEEDS["class_sampling"],
                guidance=GROUP_GUIDANCE)
    d = wf.node("ImageBARTDecode", 2, model=(m, 0), codes=(s, 0))
    wf.node("SaveImage", 3, images=(d, 0), filename_prefix="imagebart/groups")
    return wf


def text_sampling(defs):
    wf = Workflow("text_sampling", defs)
    note(wf, f"## Samples for a prompt\nFour samples of \"{SAMPLE_PROMPT}\" (batch item i uses seed + i), "
             f"'guidance' {PROMPT_GUIDANCE:g}, 'top_k' {PROMPT_TOP_K} (the values README's measurements use). The prompt is an emoji's name; other names work the same way (\"blue "
             "heart\", \"cloud\", \"flag: Sweden\"). Expect red, round apples, three of the four with a dark stem "
             "or leaf on top: the model follows a prompt's colours and rough outline (and a flag's stripes) far "
             "more than its details.", kind="text")
    m = wf.node("ImageBARTLoader", 0, model_name=MODELS["text"])
    c = wf.node("ImageBARTTextCondition", 0, model=(m, 0), prompt=SAMPLE_PROMPT, batch_size=4)
    s = wf.node("ImageBARTSample", 1, model=(m, 0), condition=(c, 0), seed=SEEDS["text_sampling"],
                guidance=PROMPT_GUIDANCE, top_k=PROMPT_TOP_K)
    d = wf.node("ImageBARTDecode", 2, model=(m, 0), codes=(s, 0))
    wf.node("SaveImage", 3, images=(d, 0), filename_prefix="imagebart/prompt")
    return wf


def step_by_step(defs):
    levels = chain_levels()
    wf = Workflow("step_by_step_chain", defs)
    steps = " -> ".join(str(level) for level in range(levels, 0, -1))
    note(wf, f"## Step-by-step chain\nRandom Codes (level {levels} = noise), then one Reverse Chain Step per "
             f"transition ({steps}). Each step's preview shows its level decoded as if it were clean; only level 1 "
             "is a real image. Use the same seed everywhere to get exactly what Sample gives.")
    m = wf.node("ImageBARTLoader", 0, model_name=MODELS["uncond"])
    x = wf.node("ImageBARTRandomCodes", 1, model=(m, 0), batch_size=2, seed=SEEDS["step_by_step"])
    for i in range(levels - 1):
        x = wf.node("ImageBARTReverseStep", 2 + i, title=f"Reverse step: level {levels - i} -> {levels - 1 - i}",
                    model=(m, 0), codes=(x, 0), seed=SEEDS["step_by_step"])
        wf.node("PreviewImage", 2 + i, title=f"Level {levels - 1 - i} (decoded as if clean)", images=(x, 1))
    d = wf.node("ImageBARTDecode", 1 + levels, model=(m, 0), codes=(x, 0))
    wf.node("SaveImage", 2 + levels, images=(d, 0), filename_prefix="imagebart/step_by_step")
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
             "keeping the original pixels outside the mask. The example paints over the left lens of the "
             "'smiling face with sunglasses'; with no condition the model continues the face's yellow into the "
             "painted area (for this seed yellow with a pale patch and a dark spot where the lens was); the "
             "redrawn part is blurrier than the kept pixels around it (the VQGAN's reconstruction). " + IMAGES_NOTE)
    _, _, r = _edit(wf, "uncond", MASKED, seed=SEEDS["inpainting"])
    wf.node("SaveImage", 3, images=(r, 1), filename_prefix="imagebart/inpainting")
    return wf


def upper_half(defs):
    wf = Workflow("upper_half_completion", defs)
    note(wf, "## Upper-half completion\nThe upper half of a face emoji ('grinning face with big eyes') is "
             "regenerated to fit its lower half, four times (batch item i uses seed + i), under the group "
             f"'{UPPER_HALF_CLASS}' (guidance {UPPER_HALF_GUIDANCE:g}). The mask is built with core mask nodes (1 = "
             "regenerate); the lower half is kept exactly. Expect a yellow, rounded top that continues the face's "
             "outline and colour, mostly with two blurry dark eye spots; no crisp eyes. "
             + IMAGES_NOTE, kind="class")
    m = wf.node("ImageBARTLoader", 0, model_name=MODELS["class"])
    img = wf.node("LoadImage", 0, image=FACE)
    c = wf.node("ImageBARTClassCondition", 0, model=(m, 0), class_name=UPPER_HALF_CLASS)
    rep = wf.node("RepeatImageBatch", 1, image=(img, 0), amount=4)
    zero = wf.node("SolidMask", 1, value=0.0, width=SIZE, height=SIZE)
    top = wf.node("SolidMask", 1, value=1.0, width=SIZE, height=SIZE // 2)
    e = wf.node("ImageBARTEncode", 2, model=(m, 0), image=(rep, 0))
    mask = wf.node("MaskComposite", 2, destination=(zero, 0), source=(top, 0), x=0, y=0, operation="add")
    r = wf.node("ImageBARTMaskedRefine", 3, model=(m, 0), codes=(e, 0), mask=(mask, 0), image=(img, 0),
                condition=(c, 0), composite=True, seed=SEEDS["upper_half"], guidance=UPPER_HALF_GUIDANCE)
    wf.node("SaveImage", 4, images=(r, 1), filename_prefix="imagebart/upper_half")
    return wf


def class_edit(defs):
    wf = Workflow("class_guided_local_edit", defs)
    note(wf, "## Class-guided local editing\nThe painted area is regenerated under a class label (by name or "
             f"index; for the released ImageNet models e.g. 'tiger'). The example's left half of the grinning face "
             f"is transparent and is redrawn under the group '{EDIT_CLASS}', 'guidance' {GUIDANCE:g} "
             "(classifier-free) making the group count more; the right half is kept. Expect the left half to turn "
             "into a flag-like block (red, yellow and blue bands) against the kept half face. "
             + IMAGES_NOTE, kind="class")

    def cond(wf, m):
        return wf.node("ImageBARTClassCondition", 1, model=(m, 0), class_name=EDIT_CLASS)

    _, _, r = _edit(wf, "class", FACE_LEFT_MASKED, cond=cond, seed=SEEDS["class_edit"], guidance=GUIDANCE)
    wf.node("SaveImage", 3, images=(r, 1), filename_prefix="imagebart/class_edit")
    return wf


def text_edit(defs):
    wf = Workflow("text_guided_local_edit", defs)
    note(wf, "## Text-guided local editing\nThe painted area is regenerated following a prompt. The example's "
             f"left half of the grinning face is transparent and is redrawn as \"{EDIT_PROMPT}\" (guidance "
             f"{TEXT_EDIT_GUIDANCE:g}); the right half is kept. Expect the left half to turn into a blurry flag-like "
             "block in blue and yellow (with some red) against the kept half face. Names with strong colours and "
             "shapes work best. "
             + IMAGES_NOTE, kind="text")

    def cond(wf, m):
        return wf.node("ImageBARTTextCondition", 1, model=(m, 0), prompt=EDIT_PROMPT)

    _, _, r = _edit(wf, "text", FACE_LEFT_MASKED, cond=cond, seed=SEEDS["text_edit"], guidance=TEXT_EDIT_GUIDANCE)
    wf.node("SaveImage", 3, images=(r, 1), filename_prefix="imagebart/text_edit")
    return wf


def variations(defs):
    wf = Workflow("variations", defs)
    note(wf, f"## Variations of an image\nEncode, noise the codes up to level {VARIATION_LEVEL} (Noise Codes: "
             "higher = more change, up to the top level = pure noise), then run the reverse chain back down. Four "
             "variations of the grinning face (batch item i uses seed + i). Level 2 is the middle of this model's "
             "three levels (1 = clean, 3 = noise), so they change a lot: soft yellow face-like shapes with dark "
             "spots where the eyes and mouth were, some with red or blue patches. " + IMAGES_NOTE)
    m = wf.node("ImageBARTLoader", 0, model_name=MODELS["uncond"])
    img = wf.node("LoadImage", 0, image=FACE)
    rep = wf.node("RepeatImageBatch", 1, image=(img, 0), amount=4)
    e = wf.node("ImageBARTEncode", 1, model=(m, 0), image=(rep, 0))
    n = wf.node("ImageBARTNoiseCodes", 2, model=(m, 0), codes=(e, 0), level=VARIATION_LEVEL, seed=SEEDS["variations"])
    r = wf.node("ImageBARTReverseStep", 3, model=(m, 0), codes=(n, 0), steps=VARIATION_LEVEL - 1,
                seed=SEEDS["variations"])
    d = wf.node("ImageBARTDecode", 4, model=(m, 0), codes=(r, 0))
    wf.node("SaveImage", 5, images=(d, 0), filename_prefix="imagebart/variations")
    return wf


def wide_panorama(defs):
    left_prompt, right_prompt = PANORAMA_PROMPTS
    wf = Workflow("wide_panorama_prompt_blend", defs)
    note(wf, f"## Wide panorama with a prompt blend\nSample at 3x the model's trained width ({3 * SIZE} px for "
             "the 64 px emoji model; 768 for a 256 px model): every code is drawn looking at a trained-size window "
             "around it (sliding windows, moved by 'window_stride' codes, 0 = automatic). Condition Blend mixes "
             f"two prompts from left to right: \"{left_prompt}\" rules the left edge, \"{right_prompt}\" the "
             "right edge. Expect a wide band of blurry blobs, dark red-orange on the left and mixed colours with blue "
             "and teal patches towards the right for this seed (seed 18 is red on the left and blue over the right "
             "half): the blend shows in colour.",
         kind="text")
    m = wf.node("ImageBARTLoader", 0, model_name=MODELS["text"])
    left = wf.node("ImageBARTTextCondition", 1, title="Prompt on the left", model=(m, 0), prompt=left_prompt)
    right = wf.node("ImageBARTTextCondition", 1, title="Prompt on the right", model=(m, 0), prompt=right_prompt)
    blend = wf.node("ImageBARTConditionBlend", 2, condition_1=(left, 0), condition_2=(right, 0))
    s = wf.node("ImageBARTSample", 3, model=(m, 0), condition=(blend, 0), width=3 * SIZE, height=0,
                seed=SEEDS["panorama"], guidance=GUIDANCE)
    d = wf.node("ImageBARTDecode", 4, model=(m, 0), codes=(s, 0))
    wf.node("SaveImage", 5, images=(d, 0), filename_prefix="imagebart/panorama")
    return wf


def large_inpainting(defs):
    wf = Workflow("large_image_inpainting", defs)
    note(wf, f"## Inpainting an image larger than the model\nThe {3 * SIZE}x{SIZE} image (dog face, red apple, "
             "rocket) is encoded at its own size ('keep size': each side rounded to a multiple of the VQGAN factor, "
             f"at least the model's size) instead of being shrunk to the model's {SIZE}x{SIZE}. Masked Refine "
             "regenerates the painted area over the apple (LoadImage alpha; transparent = regenerate) with sliding "
             "windows; the decoded result is pasted into the original with the mask (ImageCompositeMasked), so "
             "unmasked pixels stay exactly as loaded. Expect the stroke to be redrawn in the apple's reds with dark "
             "and white patches, blurrier than the crisp pixels around it. " + IMAGES_NOTE)
    m = wf.node("ImageBARTLoader", 0, model_name=MODELS["uncond"])
    img = wf.node("LoadImage", 0, image=WIDE_MASKED)
    e = wf.node("ImageBARTEncode", 1, model=(m, 0), image=(img, 0), fit="keep size (round to multiple of factor)")
    r = wf.node("ImageBARTMaskedRefine", 2, model=(m, 0), codes=(e, 0), mask=(img, 1), seed=SEEDS["large_inpainting"])
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


BUILDERS = [unconditional, class_sampling, text_sampling, step_by_step, inpainting, upper_half, class_edit, text_edit,
            variations, wide_panorama, large_inpainting]
BUILDERS += [released_ffhq_upper_half, released_imagenet_sampling, released_imagenet_edit, released_churches_inpainting]


def main() -> None:
    defs = {**core_definitions(), **pack_definitions()}
    for build in BUILDERS:
        print(build(defs).save().relative_to(ROOT))  # noqa: T201


if __name__ == "__main__":
    main()
