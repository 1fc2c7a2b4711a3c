"""The pack's loader and chain nodes on a small random class model (4x4 grid, 3 scales), with ComfyUI replaced
by the recording fake of ``tools.comfy_stub``: shared by the loader-option tests."""

from __future__ import annotations

import types
from collections.abc import Iterator

from tools.comfy_stub import load_nodes, stubbed_comfy_api


def loader_pack(folder) -> Iterator[types.SimpleNamespace]:
    """Yield the nodes' modules (chain, bridge, loader, conditions) with ``m.safetensors`` in ``folder`` as the
    only model file; for a module-scoped fixture."""
    from tools.random_model import write_random_model

    write_random_model(folder / "m.safetensors", "class", grid=(4, 4), n_scales=3)
    with stubbed_comfy_api():
        load_nodes()
        from nodes import chain, comfy_bridge, conditions, loader

        comfy_bridge.FALLBACK_MODEL_DIRS[:] = [str(folder)]
        yield types.SimpleNamespace(chain=chain, bridge=comfy_bridge, loader=loader, conditions=conditions)
        comfy_bridge.FALLBACK_MODEL_DIRS[:] = []
