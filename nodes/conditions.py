"""Conditions: Class Condition (ImageNet class by name or index), Text Condition (a prompt) and Condition
Blend (several conditions from left to right, for images wider than the trained size)."""

from __future__ import annotations

import re

from comfy_api.latest import io

from .common import CATEGORY, CondSocket, ModelHandle, ModelSocket, check_handle, fit_batches, ib


def class_condition(handle: ModelHandle, class_name: str, batch_size: int = 1) -> ib.Condition:
    """One class per line (name or index) -> Condition int64 [B, 1]; a single class is repeated to batch_size."""
    handle = check_handle(handle)
    entries = [line.strip() for line in str(class_name).splitlines() if line.strip()]
    if not entries:
        raise ValueError("no class given: type a class name (e.g. 'tiger') or an index (e.g. 292)")
    values = [int(e) if e.lstrip("-").isdigit() else e for e in entries]
    cond = handle.model.class_condition(values)
    return cond.repeat_to(int(batch_size)) if cond.batch_size() == 1 else cond


def text_condition(handle: ModelHandle, prompt: str, batch_size: int = 1) -> ib.Condition:
    """A prompt -> Condition int64 [B, text_length] (CLIP BPE tokens), repeated to batch_size."""
    handle = check_handle(handle)
    if not str(prompt).strip():
        raise ValueError("the prompt is empty: describe what the image (or the masked area) should show")
    return handle.model.text_condition([str(prompt)]).repeat_to(int(batch_size))


class ImageBARTClassCondition(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageBARTClassCondition", display_name="ImageBART Class Condition", category=CATEGORY,
            description="A class label for class-conditional models (ImageNet models: the 1000 ILSVRC classes).",
            inputs=[
                ModelSocket.Input("model", tooltip="A class-conditional ImageBART model."),
                io.String.Input("class_name", default="tiger", multiline=True,
                                tooltip="Class name (e.g. 'tiger', 'golden retriever') or index (e.g. 292). One per "
                                        "line gives one class per batch item."),
                io.Int.Input("batch_size", default=1, min=1, max=64,
                             tooltip="Repeat a single class this many times (ignored with one class per line)."),
            ],
            outputs=[CondSocket.Output(display_name="condition", tooltip="Class condition for the chain nodes.")],
        )

    @classmethod
    def execute(cls, model, class_name, batch_size=1) -> io.NodeOutput:
        return io.NodeOutput(class_condition(model, class_name, batch_size))


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
                                        "length."),
                io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Repeat the prompt this many times."),
            ],
            outputs=[CondSocket.Output(display_name="condition", tooltip="Text condition for the chain nodes.")],
        )

    @classmethod
    def execute(cls, model, prompt, batch_size=1) -> io.NodeOutput:
        return io.NodeOutput(text_condition(model, prompt, batch_size))


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
