"""Conditions: Class Condition (ImageNet class by name or index) and Text Condition (a prompt)."""

from __future__ import annotations

from comfy_api.latest import io

from .common import CATEGORY, CondSocket, ModelHandle, ModelSocket, check_handle, ib


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
