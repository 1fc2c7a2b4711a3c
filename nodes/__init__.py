"""ComfyUI nodes of the ImageBART pack (V3 schema API). Node logic lives in plain functions next to each
thin node class, so it runs (and is tested) without ComfyUI; only comfy_bridge touches comfy.*."""

from comfy_api.latest import ComfyExtension, io

from .chain import ImageBARTMaskedRefine, ImageBARTReverseStep, ImageBARTSample
from .codes import ImageBARTDecode, ImageBARTEncode, ImageBARTNoiseCodes, ImageBARTRandomCodes
from .conditions import ImageBARTClassCondition, ImageBARTConditionBlend, ImageBARTTextCondition
from .loader import ImageBARTLoader

NODES: list[type[io.ComfyNode]] = [
    ImageBARTLoader,
    ImageBARTEncode,
    ImageBARTDecode,
    ImageBARTRandomCodes,
    ImageBARTNoiseCodes,
    ImageBARTReverseStep,
    ImageBARTSample,
    ImageBARTMaskedRefine,
    ImageBARTClassCondition,
    ImageBARTTextCondition,
    ImageBARTConditionBlend,
]


class ImageBARTExtension(ComfyExtension):
    """The pack's extension: ComfyUI asks it for the node list."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


__all__ = ["NODES", "ImageBARTExtension"]
