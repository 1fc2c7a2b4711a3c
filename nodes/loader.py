"""Load ImageBART: a model file from the ``imagebart`` model folder."""

from __future__ import annotations

from comfy_api.latest import io

from . import comfy_bridge as bridge
from .common import CATEGORY, ModelHandle, ModelSocket, ib, logger

DEFAULT_MODEL = "imagebart-random-uncond.safetensors"


#: the memory rule and the figures of the released models, for the loader's tooltip (tooltips are static)
OFFLOAD_TOOLTIP = (
    "Where the scales wait while another one runs. off: the whole model sits on the device; it needs about the "
    "file's size at the chosen dtype (transformer parameters x 4 bytes in fp32, x 2 in fp16/bf16, plus 0.3 GB "
    "for the fp32 VQGAN) plus working memory (tens of MB per image for the token cache while a scale runs, "
    "about 0.2-0.3 GB per 256x256 image while the VQGAN decodes). on: the idle scales stay in system RAM and "
    "each scale visits the device only while it runs; the device then needs the VQGAN plus the largest scale "
    "(0.3 GB + that scale's parameters x bytes), the CPU RAM the rest. Same images either way; each scale is "
    "copied to the device once per run. Released models, whole model vs. with offloading, fp16/bf16 "
    "(fp32 about twice): ImageNet cin_5_scales_custom 6.5 GB vs 1.6 GB; cin_4_scales_geometric 5.3 GB vs 1.6 GB; "
    "LSUN bedrooms/cats/churches 4.1 GB vs 1.6 GB; ffhq_2_scales_custom 2.8 GB vs 1.6 GB; "
    "ffhq_4_scales_geometric 1.9 GB vs 0.7 GB. On the CPU it changes nothing (all is in RAM already)."
)


#: the loader's token_steps choices (ImageBART.step_mode values offered in the graph)
TOKEN_STEPS = ("eager", "compiled")

TOKEN_STEPS_TOOLTIP = (
    "How the token loops run. eager: no setup, the default. compiled (CPU only): a token step of batch 1 "
    "without guidance is compiled once per scale with torch.compile into one to three fused kernels that read "
    "the weights at close to memory speed (full-size ffhq_4_scales_geometric, fp32, two threads, one run: "
    "chain 29.7 s eager vs 17.4 s compiled on one CPU, 25.5 s vs 16.7 s on another); several rows per step "
    "(batch > 1 or guidance) stay eager, which is faster for them. Same tokens as eager. The first run of each "
    "scale pays the compilation (about a minute for a full-size model with an empty cache, seconds later); "
    "needs a C++ compiler (g++ or the one CXX names). Not on a GPU yet (the CUDA-graph path is not measured)."
)


def load(model_name: str, device: str = "auto", dtype: str = "auto",
         offload_idle_scales: bool = False, token_steps: str = "eager") -> ModelHandle:
    """Model file name (in the imagebart folder) -> ModelHandle (model on the offload device).

    ``offload_idle_scales`` keeps the scales that are not running in system RAM (see OFFLOAD_TOOLTIP);
    ``token_steps`` is the model's step mode (see TOKEN_STEPS_TOOLTIP), checked before anything is loaded."""
    if not model_name:
        raise ValueError("no model file chosen; put a .safetensors ImageBART model in models/imagebart")
    if token_steps not in TOKEN_STEPS:
        raise ValueError(f"unknown token_steps {token_steps!r}; choose {' or '.join(TOKEN_STEPS)}")
    path = bridge.model_path(model_name)
    load_device, offload_device = bridge.devices(device)
    if token_steps == "compiled":
        if load_device.type != "cpu":
            raise ValueError(f"token_steps 'compiled' runs on the CPU only for now (this model would run on "
                             f"{load_device}, where compiled steps are not measured yet): choose eager, or "
                             f"device cpu")
        ib.require_compiler(load_device.type)
    torch_dtype = bridge.choose_dtype(dtype, load_device)
    model = ib.load_model(path, device=offload_device, dtype=torch_dtype)
    model.step_mode = token_steps
    cfg = model.config
    logger.info("ImageBART: loaded %s (%s, %d scales, grid %dx%d, %s conditioning, transformers %s, on %s%s%s)",
                model_name, cfg.name, cfg.n_scales, cfg.grid[0], cfg.grid[1], cfg.conditioning.kind,
                str(torch_dtype).replace("torch.", ""), load_device,
                ", idle scales offloaded" if offload_idle_scales else "",
                ", compiled token steps" if token_steps == "compiled" else "")
    return bridge.make_handle(model, model_name, torch_dtype, load_device, offload_device,
                              offload_idle_scales=bool(offload_idle_scales))


class ImageBARTLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        files = bridge.model_files()
        return io.Schema(
            node_id="ImageBARTLoader",
            display_name="Load ImageBART",
            category=CATEGORY,
            description="Loads an ImageBART model (.safetensors: VQGAN + one transformer per scale) from the "
                        "models/imagebart folder (and folders named 'imagebart' in extra_model_paths.yaml). "
                        "ComfyUI's memory manager loads and unloads it like any other model.",
            inputs=[
                io.Combo.Input("model_name", options=files, default=DEFAULT_MODEL if DEFAULT_MODEL in files else None,
                               tooltip="Model file in ComfyUI/models/imagebart/. Press R after adding files."),
                io.Combo.Input("device", options=["auto", "cpu"], default="auto",
                               tooltip="auto: ComfyUI's device (GPU when there is one, honouring --cpu, "
                                       "low-VRAM modes and 'Unload models'); cpu: always run on the CPU."),
                io.Combo.Input("dtype", options=["auto", "fp32", "bf16", "fp16"], default="auto",
                               tooltip="Precision of the transformers. auto: bf16 on GPUs that support it, "
                                       "else fp32. The VQGAN always runs in fp32."),
                io.Boolean.Input("offload_idle_scales", default=False, optional=True, tooltip=OFFLOAD_TOOLTIP),
                io.Combo.Input("token_steps", options=list(TOKEN_STEPS), default="eager", optional=True,
                               tooltip=TOKEN_STEPS_TOOLTIP),
            ],
            outputs=[ModelSocket.Output(display_name="model", tooltip="The loaded ImageBART model.")],
        )

    @classmethod
    def execute(cls, model_name: str, device: str = "auto", dtype: str = "auto",
                offload_idle_scales: bool = False, token_steps: str = "eager") -> io.NodeOutput:
        return io.NodeOutput(load(model_name, device, dtype, offload_idle_scales, token_steps))

    @classmethod
    def validate_inputs(cls, model_name: str) -> bool | str:
        """A missing file is reported before the run, naming the file and the folders searched
        (instead of ComfyUI's generic 'value not in list')."""
        try:
            bridge.model_path(model_name)
        except (FileNotFoundError, ValueError) as exc:
            return str(exc)
        return True
