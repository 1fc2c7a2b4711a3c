"""Conditions: Class Condition (ImageNet class by name or index), Text Condition (a prompt) and Condition
Blend (several conditions from left to right, for images wider than the trained size)."""

from __future__ import annotations

import re

from comfy_api.latest import io

from . import comfy_bridge as bridge
from .common import CATEGORY, CondSocket, ModelHandle, ModelSocket, check_handle, fit_batches, ib

#: The Class Condition node's default: index 0, a class every class-conditional model has.
DEFAULT_CLASS = "0"


def _class_table(handle: ModelHandle):
    cfg = handle.model.config.conditioning
    if cfg.kind != "class":
        what = "unconditional" if cfg.kind == "none" else f"{cfg.kind}-conditional"
        raise ValueError(f"this model ({handle.name}) is {what}; a class condition does not apply"
                         + (": use Text Condition" if cfg.kind == "text" else ": leave 'condition' unconnected"))
    return ib.conditioning.ClassTable(cfg)


def class_condition(handle: ModelHandle, class_name: str, batch_size: int = 1) -> ib.Condition:
    """One class per line (name or index) -> Condition int64 [B, 1]; a single class is repeated to batch_size.
    Unknown names and indices stop with an error that lists the model's classes (or where to find them)."""
    handle = check_handle(handle)
    table = _class_table(handle)
    entries = [line.strip() for line in str(class_name).splitlines() if line.strip()]
    if not entries:
        raise ValueError(f"no class given: type a class name (e.g. {table.names[0]!r}) or an index (0.."
                         f"{len(table) - 1}){table.valid_hint()}")
    values = [int(e) if e.lstrip("-").isdigit() else e for e in entries]
    cond = handle.model.class_condition(values)
    return cond.repeat_to(int(batch_size)) if cond.batch_size() == 1 else cond


def class_summary(cond: ib.Condition) -> str:
    """What a class condition holds, for the node's text in the UI: "class: 'circle' (0)"."""
    seen = []
    for label, index in zip(cond.labels, cond.tokens[:, 0].tolist()):
        if (label, index) not in seen:
            seen.append((label, index))
    return "class: " + ", ".join(f"{label!r} ({index})" for label, index in seen)


def _vocabulary_hint(cfg) -> str:
    words = ib.conditioning.text_vocabulary(cfg)
    if words is None:
        return ""
    return f". This model knows only these words: {', '.join(words)}"


def text_condition(handle: ModelHandle, prompt: str, batch_size: int = 1) -> ib.Condition:
    """A prompt -> Condition int64 [B, text_length] (CLIP BPE tokens), repeated to batch_size.

    An empty prompt is the unconditional (null) text for models trained with condition dropout (see
    :func:`text_warnings` for what the UI shows), and an error for others. A prompt none of whose words the
    model knows is an error listing the words it knows."""
    handle = check_handle(handle)
    cfg = handle.model.config.conditioning
    if cfg.kind != "text":
        what = "unconditional" if cfg.kind == "none" else f"{cfg.kind}-conditional"
        raise ValueError(f"this model ({handle.name}) is {what}; a text condition does not apply"
                         + (": use Class Condition" if cfg.kind == "class" else ": leave 'condition' unconnected"))
    prompt = str(prompt)
    if not prompt.strip():
        if cfg.null_condition:
            return handle.model.null_condition(int(batch_size))
        raise ValueError("the prompt is empty: describe what the image (or the masked area) should show"
                         + _vocabulary_hint(cfg))
    known, ignored = ib.conditioning.prompt_words(cfg, prompt)
    if not known:
        raise ValueError(f"none of the words of the prompt {prompt!r} are in this model's text vocabulary, so it "
                         f"would have no effect" + _vocabulary_hint(cfg))
    return handle.model.text_condition([prompt]).repeat_to(int(batch_size))


def text_warnings(handle: ModelHandle, prompt: str) -> list[str]:
    """What the user must see about a prompt that :func:`text_condition` accepted: ignored words (outside the
    model's vocabulary) or an empty prompt taken as "no text"."""
    cfg = handle.model.config.conditioning
    if not str(prompt).strip():
        return ["the prompt is empty: sampling without a text (unconditional). Type a prompt to steer the image."]
    _, ignored = ib.conditioning.prompt_words(cfg, str(prompt))
    if not ignored:
        return []
    return [f"ignored (not in this model's vocabulary): {', '.join(repr(w) for w in ignored)}"
            + _vocabulary_hint(cfg)]


class ImageBARTClassCondition(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageBARTClassCondition", display_name="ImageBART Class Condition", category=CATEGORY,
            description="A class label for class-conditional models (ImageNet models: the 1000 ILSVRC classes).",
            inputs=[
                ModelSocket.Input("model", tooltip="A class-conditional ImageBART model."),
                io.String.Input("class_name", default=DEFAULT_CLASS, multiline=True,
                                tooltip="Class name or index, as the loaded model knows them: the bundled emoji model "
                                        "takes the nine emoji groups (smileys-emotion, people-body, animals-nature, "
                                        "food-drink, travel-places, activities, objects, symbols, flags; 0..8); "
                                        "ImageNet models the "
                                        "1000 ILSVRC names (e.g. 'golden retriever' or 207). The default 0 is the "
                                        "model's first class. One per line gives one class per batch item; the node "
                                        "shows the class it used after a run, and an unknown name stops with the "
                                        "list of valid ones."),
                io.Int.Input("batch_size", default=1, min=1, max=64,
                             tooltip="Repeat a single class this many times (ignored with one class per line)."),
            ],
            outputs=[CondSocket.Output(display_name="condition", tooltip="Class condition for the chain nodes.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, class_name, batch_size=1) -> io.NodeOutput:
        cond = class_condition(model, class_name, batch_size)
        bridge.show_on_node(cls.hidden.unique_id, class_summary(cond))
        return io.NodeOutput(cond)


class ImageBARTTextCondition(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageBARTTextCondition", display_name="ImageBART Text Condition", category=CATEGORY,
            description="A text prompt for text-conditional models (tokenized with CLIP's BPE; no download).",
            inputs=[
                ModelSocket.Input("model", tooltip="A text-conditional ImageBART model."),
                io.String.Input("prompt", default="", multiline=True,
                                tooltip="What the image should show. Long prompts are cut to the model's text "
                                        "length. Empty = no text (unconditional sampling, for models trained with "
                                        "condition dropout, like the bundled emoji model). Words the model never saw "
                                        "are ignored, and the node says which (the emoji model knows the words of "
                                        "emoji names, e.g. 'grinning cat', 'red heart', 'rocket')."),
                io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Repeat the prompt this many times."),
            ],
            outputs=[CondSocket.Output(display_name="condition", tooltip="Text condition for the chain nodes.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, prompt, batch_size=1) -> io.NodeOutput:
        cond = text_condition(model, prompt, batch_size)
        bridge.report_warnings(cls.hidden.unique_id, text_warnings(model, prompt))
        return io.NodeOutput(cond)


def condition_blend(condition_1, condition_2, positions: str = "", condition_3=None) -> ib.ConditionBlend:
    """Two or three conditions -> ``ib.ConditionBlend`` (condition_1 on the left ... the last on the right).

    positions: where each condition is strongest, as fractions of the width ("0, 1"; "0, 0.5, 1" for three);
    empty = evenly spread from the left edge to the right edge. Between two positions their logits are mixed
    linearly (a product of experts). The conditions must be of one kind, with batches of 1 or one common size.
    """
    parts = [c for c in (condition_1, condition_2, condition_3) if c is not None]
    for i, c in enumerate(parts):
        if isinstance(c, ib.ConditionBlend):
            raise ValueError("a Condition Blend cannot take another blend; connect up to three Class / Text "
                             "Condition nodes to one blend instead")
        if not isinstance(c, ib.Condition):
            raise ValueError(f"condition {i + 1} is not an ImageBART condition (got {type(c).__name__})")
    kinds = [c.kind for c in parts]
    if len(set(kinds)) > 1:
        raise ValueError(f"blended conditions must all be class or all be text conditions, got {', '.join(kinds)}")
    batch = 1
    for i, c in enumerate(parts):
        batch = fit_batches("the blend", batch, f"condition_{i + 1}", c.batch_size())
    stops = None
    text = str(positions or "").strip()
    if text:
        try:
            stops = [float(v) for v in re.split(r"[,;\s]+", text) if v]
        except ValueError:
            raise ValueError(f"positions: cannot read {text!r}; write fractions of the width like '0, 1'") from None
        if len(stops) != len(parts) or any(not 0 <= v <= 1 for v in stops) or any(
                b <= a for a, b in zip(stops, stops[1:])):
            raise ValueError(f"positions: give {len(parts)} increasing fractions of the width between 0 (left) and "
                             f"1 (right), one per connected condition, e.g. "
                             f"'{', '.join(f'{i / (len(parts) - 1):g}' for i in range(len(parts)))}'; got {text!r}")
    return ib.ConditionBlend(parts, stops)


class ImageBARTConditionBlend(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageBARTConditionBlend", display_name="ImageBART Condition Blend", category=CATEGORY,
            description="Blends two or three conditions from left to right: condition_1 rules the left edge, the "
                        "last one the right edge, and in between the model's predictions under each are mixed "
                        "(a product of experts). Made for images wider than the trained size, e.g. a panorama "
                        "that turns from one prompt into another; connect it wherever a condition goes.",
            inputs=[
                CondSocket.Input("condition_1", tooltip="The condition on the left (Class or Text Condition)."),
                CondSocket.Input("condition_2", tooltip="The condition on the right (or in the middle when "
                                                        "condition_3 is connected)."),
                io.String.Input("positions", default="",
                                tooltip="Where each condition is strongest, as fractions of the image width from 0 "
                                        "(left) to 1 (right), e.g. '0.3, 0.7' for a shorter transition in the "
                                        "middle. Empty = evenly spread: '0, 1' (or '0, 0.5, 1' for three)."),
                CondSocket.Input("condition_3", optional=True,
                                 tooltip="Optional third condition, on the right."),
            ],
            outputs=[CondSocket.Output(display_name="condition",
                                       tooltip="The blended condition, for Sample, Reverse Chain Step or Masked "
                                               "Refine.")],
        )

    @classmethod
    def execute(cls, condition_1, condition_2, positions="", condition_3=None) -> io.NodeOutput:
        return io.NodeOutput(condition_blend(condition_1, condition_2, positions, condition_3))
