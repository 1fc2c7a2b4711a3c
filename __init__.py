"""ComfyUI entry point of the ImageBART node pack.

Only does ComfyUI-specific work when ComfyUI is present (``folder_paths`` importable): it registers the
``models/imagebart`` model folder (plus the pack's own ``models/`` folder when it exists) and exposes
:func:`comfy_entrypoint`, which imports the nodes lazily and makes the example images available to Load Image.
Without ComfyUI it defines nothing and imports nothing heavy, so the library (``imagebart_core``) and the
training package can be used on their own.
"""

import logging
import os

logger = logging.getLogger(__name__)

#: Name of the model folder: ``ComfyUI/models/imagebart/`` (more paths via extra_model_paths.yaml).
MODEL_FOLDER = "imagebart"
MODEL_EXTENSIONS = {".safetensors"}

try:
    import folder_paths
except ImportError:
    folder_paths = None

if folder_paths is not None:

    def _register_model_folder() -> None:
        """Add ``models/imagebart`` to ComfyUI's folders, keeping paths from extra_model_paths.yaml."""
        default = os.path.join(folder_paths.models_dir, MODEL_FOLDER)
        paths, _ = folder_paths.folder_names_and_paths.get(MODEL_FOLDER, ([], set()))
        paths = list(paths)
        if default not in paths:
            paths.append(default)
        bundled = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")
        if os.path.isdir(bundled) and bundled not in paths:  # a demo model shipped inside the pack
            paths.append(bundled)
        folder_paths.folder_names_and_paths[MODEL_FOLDER] = (paths, set(MODEL_EXTENSIONS))
        logger.debug("ImageBART model folders: %s", paths)

    _register_model_folder()

    async def comfy_entrypoint():
        """ComfyUI V3 entry point (called once when ComfyUI loads the pack): the extension that lists the
        ImageBART nodes. It also copies the example workflows' images into ComfyUI's input folder where they
        are missing (never overwriting a file), so the examples run on the first Queue."""
        from .nodes import ImageBARTExtension
        from .nodes.example_inputs import provide_to_comfyui

        provide_to_comfyui()
        return ImageBARTExtension()
