"""The only place that touches ComfyUI internals (``comfy.*``, ``folder_paths``).

Everything here works without ComfyUI too (tests, scripts): model folders fall back to an explicit
list, the progress bar and the interrupt check become no-ops, the model stays on the CPU and no
patcher is made. Inside ComfyUI: model files come from ``folder_paths`` ("imagebart" folder,
extra_model_paths.yaml included), the model is wrapped in a ``ModelPatcher`` so ComfyUI's memory
manager loads/offloads it ("Unload models", low-VRAM modes), progress goes to the node's bar and
Cancel is checked after every token step.
"""

from __future__ import annotations

import logging
import os
import time

import torch

from .common import ModelHandle, ib

logger = logging.getLogger("imagebart.nodes")

MODEL_FOLDER = "imagebart"
#: Used instead of ComfyUI's folders when ComfyUI is absent (tests set it).
FALLBACK_MODEL_DIRS: list[str] = []


def _comfy():
    """(comfy.model_management, comfy.utils, comfy.model_patcher) or None without ComfyUI."""
    try:
        import comfy.model_management as mm
        import comfy.model_patcher as mp
        import comfy.utils as cu
    except ImportError:
        return None
    return mm, cu, mp


def _folder_paths():
    try:
        import folder_paths
    except ImportError:
        return None
    return folder_paths


# -- model files ------------------------------------------------------------------------------------------
def model_dirs() -> list[str]:
    fp = _folder_paths()
    if fp is None:
        return list(FALLBACK_MODEL_DIRS)
    return list(fp.get_folder_paths(MODEL_FOLDER))


def model_files() -> list[str]:
    """Model file names (relative to the model folders) for the loader's list."""
    fp = _folder_paths()
    if fp is not None:
        return sorted(fp.get_filename_list(MODEL_FOLDER))
    names = set()
    for d in FALLBACK_MODEL_DIRS:
        if os.path.isdir(d):
            for root, _, files in os.walk(d):
                names.update(os.path.relpath(os.path.join(root, f), d).replace(os.sep, "/")
                             for f in files if f.endswith(".safetensors"))
    return sorted(names)


def check_model_name(name: str) -> str:
    """``name`` if it is a relative path inside a model folder; ValueError for an absolute name, a drive, or ``..``."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("no model file chosen; put a .safetensors ImageBART model in models/imagebart")
    parts = name.replace("\\", "/").split("/")
    if os.path.isabs(name) or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") \
            or ".." in parts or "\x00" in name:
        raise ValueError(f"model name {name!r} must name a file inside the 'imagebart' model folder "
                         "(relative, without '..')")
    return name


def _inside(folder: str, name: str) -> str:
    """``folder/name`` for a checked ``name``, normalised, and still inside ``folder`` (links are followed later,
    as a user may link model files into the folder)."""
    base = os.path.normpath(os.path.abspath(folder))
    candidate = os.path.normpath(os.path.join(base, name))
    if os.path.commonpath([base, candidate]) != base:
        raise ValueError(f"model name {name!r} leaves the model folder {folder}")
    return candidate


def model_path(name: str) -> str:
    """Full path of a model file, or FileNotFoundError naming the file and the folders searched.

    Names are relative to the model folders: absolute names and names with ``..`` are refused (ValueError),
    with ComfyUI as without it."""
    check_model_name(name)
    fp = _folder_paths()
    path = fp.get_full_path(MODEL_FOLDER, name) if fp is not None else None
    if path is None:
        for d in FALLBACK_MODEL_DIRS:
            candidate = _inside(d, name)
            if os.path.isfile(candidate):
                path = candidate
                break
    if path is None or not os.path.isfile(path):
        dirs = model_dirs() or ["ComfyUI/models/imagebart"]
        raise FileNotFoundError(
            f"ImageBART model file '{name}' not found. Put it in the 'imagebart' model folder "
            f"({', '.join(dirs)}) or add a folder for 'imagebart' in extra_model_paths.yaml, then press R "
            f"to refresh the list. {get_hint(name)}"
        )
    return path


def get_hint(name: str) -> str:
    """How to obtain a model file: the ``get`` command for the released models' file names."""
    release, dtype = released_model_of(name)
    if release is not None:
        extra = f" --dtype {dtype}" if dtype != "fp16" else ""
        return (f"It is the released CompVis model {release}: make it with `python -m imagebart_core.get {release}"
                f"{extra}` (run in the ImageBART pack's folder, custom_nodes/<pack>/; it downloads and converts the "
                "original release into models/imagebart/).")
    return ("Released models: `python -m imagebart_core.get --list` (run in the ImageBART pack's folder); "
            "see the README for other model files.")


def released_model_of(name: str) -> tuple[str | None, str | None]:
    """'cin_5_scales_custom-fp16.safetensors' -> ('cin_5_scales_custom', 'fp16'); (None, None) for other names."""
    import importlib

    releases = importlib.import_module(ib.__name__ + ".original.releases").RELEASES  # names only, no network
    base = os.path.basename(name)
    stem, _, ext = base.rpartition(".")
    release, _, dtype = stem.rpartition("-")
    if ext == "safetensors" and release in releases and dtype in ("fp32", "fp16", "bf16"):
        return release, dtype
    return None, None


# -- devices, dtypes, memory management ---------------------------------------------------------------------
def devices(choice: str) -> tuple[torch.device, torch.device]:
    """(load device, offload device) for the loader's ``device`` choice ("auto" | "cpu")."""
    comfy = _comfy()
    if choice == "cpu":
        return torch.device("cpu"), torch.device("cpu")
    if comfy is None:
        return torch.device("cpu"), torch.device("cpu")
    mm = comfy[0]
    return mm.get_torch_device(), mm.unet_offload_device()


def choose_dtype(choice: str, device: torch.device) -> torch.dtype:
    """Transformer dtype for the loader's ``dtype`` choice. "auto": bf16 on CUDA if supported, else fp32.
    The VQGAN always runs in fp32 (the core's ``to_runtime`` keeps it there)."""
    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if choice in table:
        if choice != "fp32" and device.type == "cpu":
            logger.warning("ImageBART: %s on the CPU is slow or unsupported; fp32 is recommended there", choice)
        return table[choice]
    if choice != "auto":
        raise ValueError(f"unknown dtype {choice!r}; choose auto, fp32, bf16 or fp16")
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


class _PatcherModule(torch.nn.Module):
    """Holds the ImageBART module for ComfyUI's ModelPatcher (which assigns ``.device``)."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        super().__init__()
        self.imagebart = model
        self.device = device


def make_handle(model, name: str, dtype: torch.dtype, load_device, offload_device,
                offload_idle_scales: bool = False) -> ModelHandle:
    """Wrap a loaded model (on ``offload_device``) for ComfyUI's memory manager, when ComfyUI is there.

    With ``offload_idle_scales`` the scales stay on ``offload_device`` (the CPU) and the core moves each to
    the compute device only while it runs (``ImageBART.offload_idle_scales``); ComfyUI's patcher then
    manages the VQGAN alone, and room for one scale is asked of it before each run (see :func:`prepare`).
    """
    if offload_idle_scales:
        model.offload_idle_scales(storage=offload_device)  # compute: where the VQGAN is (prepare moves it)
    comfy = _comfy()
    patcher = None
    if comfy is not None:
        mp = comfy[2]
        held = model.vqgan if offload_idle_scales else model
        patcher = mp.ModelPatcher(_PatcherModule(held, offload_device), load_device=load_device,
                                  offload_device=offload_device)
    return ModelHandle(model=model, name=name, dtype=dtype, patcher=patcher, offload_idle_scales=offload_idle_scales)


def largest_scale_bytes(model) -> int:
    """Bytes of the biggest scale's tensors in their current dtype (what one running scale adds on the device)."""
    return max(sum(t.numel() * t.element_size() for t in scale.state_dict().values()) for scale in model.scales)


def prepare(handle: ModelHandle):
    """The model, loaded on its device through ComfyUI's memory manager (frees/offloads other models).

    Offloading: only the VQGAN is loaded; ComfyUI is asked to keep room for the largest scale, and each scale
    is moved to the VQGAN's device only while it runs (the others stay on the CPU).
    """
    comfy = _comfy()
    model = handle.model
    if comfy is not None and handle.patcher is not None:
        extra = largest_scale_bytes(model) if handle.offload_idle_scales else 0
        comfy[0].load_models_gpu([handle.patcher], memory_required=extra, force_full_load=True)
    if handle.offload_idle_scales:
        storage = handle.patcher.offload_device if handle.patcher is not None else torch.device("cpu")
        model.offload_idle_scales(storage=storage, compute=model.device)  # follow the VQGAN (no-op if unmoved)
    return model


# -- progress, cancel, previews -----------------------------------------------------------------------------
def check_interrupt() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed Cancel (no-op without ComfyUI)."""
    comfy = _comfy()
    if comfy is not None:
        comfy[0].throw_exception_if_processing_interrupted()


class ChainProgress:
    """An ``ib.Progress`` callback: the node's progress bar (scales x tokens), Cancel after every token,
    and a preview of each finished level (its codes decoded as if they were clean)."""

    def __init__(self, model, preview: bool = True):
        self.model = model
        self.preview = preview
        self.bar = None
        self.calls = 0
        self.last: ib.Progress | None = None
        self._sent = 0.0
        comfy = _comfy()
        self._utils = comfy[1] if comfy is not None else None

    def __call__(self, p: ib.Progress) -> None:
        self.calls += 1
        self.last = p
        check_interrupt()
        if self._utils is None:
            return
        if self.bar is None:
            self.bar = self._utils.ProgressBar(p.total)
        now = time.monotonic()
        if p.level_codes is None and p.done < p.total and now - self._sent < 0.05:
            return  # at most ~20 bar updates a second; every level end is shown
        self._sent = now
        image = None
        if self.preview and p.level_codes is not None:
            image = preview_image(self.model, p.level_codes[:1])
        self.bar.update_absolute(p.done, p.total, ("JPEG", image, 512) if image is not None else None)


def preview_image(model, tokens: torch.Tensor):
    """int64 [1, h, w] codes of any level -> PIL image (decoded as if clean), or None if that fails."""
    try:
        from PIL import Image

        codes = ib.Codes(tokens.long(), 1, model.codebook_id, model.config.vocab_size)
        x = model.decode(codes)[0]  # [3, H, W]
        arr = (x.movedim(0, -1).float().cpu().numpy() * 255).round().clip(0, 255).astype("uint8")
        return Image.fromarray(arr)
    except Exception as exc:  # a preview must never break sampling
        logger.debug("ImageBART preview failed: %s", exc)
        return None


# -- text shown on the node in ComfyUI's UI -------------------------------------------------------------------
#: Node ids that show a text from this pack (a later run without warnings replaces a stale one).
_SHOWN: set[str] = set()
WARNING_MARK = "\u26a0 "


def _prompt_server():
    """ComfyUI's running ``server.PromptServer`` or None (no ComfyUI, or not started)."""
    try:
        import server
    except ImportError:
        return None
    return getattr(getattr(server, "PromptServer", None), "instance", None)


def show_on_node(node_id, text: str) -> bool:
    """Show ``text`` on the node in ComfyUI's web UI, under its widgets; True if it was sent.

    Uses ComfyUI's progress-text message (``PromptServer.send_progress_text``: a binary websocket frame,
    event 3 = node id + UTF-8 text), which the v0.8.0 frontend draws as a read-only text box on that node
    (the same channel core's Get Image Size uses). It stays there until the node shows another text.
    Without ComfyUI, without a node id (a call from outside a prompt) or with an empty text nothing is sent.
    """
    instance = _prompt_server()
    if instance is None or node_id is None or not text or not hasattr(instance, "send_progress_text"):
        return False
    try:
        instance.send_progress_text(text, str(node_id), getattr(instance, "client_id", None))
    except Exception as exc:  # a UI message must never break the run
        logger.debug("ImageBART: could not show a text on node %s: %s", node_id, exc)
        return False
    _SHOWN.add(str(node_id))
    return True


def show_warning(node_id, text: str) -> None:
    """A warning the user must see: in the log and on the node in the UI (see :func:`show_on_node`)."""
    logger.warning("ImageBART (node %s): %s", node_id, text)
    show_on_node(node_id, WARNING_MARK + text)


def report_warnings(node_id, warnings: list[str], ok_text: str = "no warnings") -> None:
    """All warnings of one run of a node, shown together; with none, a warning shown by an earlier run on
    this node is replaced by ``ok_text`` (the frontend keeps the last text until a new one comes)."""
    if warnings:
        show_warning(node_id, "\n".join(warnings))
    elif node_id is not None and str(node_id) in _SHOWN:
        show_on_node(node_id, ok_text)
