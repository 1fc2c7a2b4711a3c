"""ImageBART core library (PyTorch). Never imports ComfyUI.

    import imagebart_core as ib
    model = ib.load_model("model.safetensors")
    codes = model.sample(4, seed=0)
    images = model.decode(codes)          # float [B, 3, H, W] in 0..1
"""

from .budget import RequestEstimate, RequestTooLarge, check_request, estimate_request
from .chain.sampling import NonFiniteProbabilities, Progress
from .chain.static_step import require_compiler
from .checkpoint import ModelFileError, load_model, read_config, save_model
from .codes import Codes
from .conditioning import Condition, ConditionBlend
from .config import (
    ConditioningConfig,
    ModelConfig,
    SamplingDefaults,
    ScheduleConfig,
    TransformerConfig,
    VQGANConfig,
    tiny_config,
)
from .diffusion import MultinomialDiffusion
from .model import ImageBART, upper_half_mask
from .schedule import betas_from_alpha_bar, betas_from_metric_curve, geometric_betas

__version__ = "0.2.0"


def build_model(config: ModelConfig, seed: int = 0, device="cpu", dtype=None) -> ImageBART:
    """A model with random weights from ``config`` (tests, benchmarks, the start of training)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ImageBART(config)
    return model.to_runtime(device, dtype or torch.float32)


__all__ = [
    "Codes",
    "ConditionBlend",
    "Condition",
    "ConditioningConfig",
    "ImageBART",
    "ModelConfig",
    "ModelFileError",
    "MultinomialDiffusion",
    "NonFiniteProbabilities",
    "Progress",
    "RequestEstimate",
    "RequestTooLarge",
    "SamplingDefaults",
    "ScheduleConfig",
    "TransformerConfig",
    "VQGANConfig",
    "betas_from_alpha_bar",
    "betas_from_metric_curve",
    "build_model",
    "check_request",
    "estimate_request",
    "geometric_betas",
    "load_model",
    "read_config",
    "require_compiler",
    "save_model",
    "tiny_config",
    "upper_half_mask",
]
