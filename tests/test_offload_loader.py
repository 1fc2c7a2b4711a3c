"""Load ImageBART's offload_idle_scales option: idle scales stay on the storage device, each scale visits the
compute device only while it runs, ComfyUI's patcher manages the VQGAN alone and is asked for room for one scale.

ComfyUI is replaced by a recording fake (``comfy.model_management``/``model_patcher``), with the CPU as device.
"""

from __future__ import annotations

import types

import pytest
import torch
from _loader_pack import loader_pack

from tools.comfy_stub import node_info


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    yield from loader_pack(tmp_path_factory.mktemp("models"))


def spy_moves(model) -> list:
    """Record every ``.to`` of a scale and every time a scale starts working."""
    events = []
    for s, net in enumerate(model.scales, start=1):
        original_to, prepare = net.to, net.prepare

        def to(*args, s=s, original_to=original_to, **kwargs):
            events.append((s, str(args[0]) if args else str(kwargs.get("device"))))
            return original_to(*args, **kwargs)

        def run(*args, s=s, prepare=prepare, **kwargs):
            events.append((s, "run"))
            return prepare(*args, **kwargs)

        net.to, net.prepare = to, run
    return events


def test_option_is_documented_with_the_memory_rule(pack):
    info = node_info(pack.loader.ImageBARTLoader)
    kind, opts = info["input"]["optional"]["offload_idle_scales"]
    assert kind == "BOOLEAN" and opts["default"] is False
    tip = opts["tooltip"]
    assert "largest scale" in tip and "cin_5_scales_custom 6.5 GB vs 1.6 GB" in tip


def test_tooltip_figures_are_the_released_architectures(pack):
    """The static tooltip's numbers: file size at fp16 vs VQGAN + largest fp16 scale (computed, rounded)."""
    from imagebart_core.original.sizes import model_size

    tip = pack.loader.OFFLOAD_TOOLTIP
    for name, label in [("cin_5_scales_custom", "cin_5_scales_custom"), ("cin_4_scales_geometric", "cin_4_scales_geometric"),
                        ("churches_3_scales", "LSUN bedrooms/cats/churches"), ("ffhq_2_scales_custom", "ffhq_2_scales_custom"),
                        ("ffhq_4_scales_geometric", "ffhq_4_scales_geometric")]:
        s = model_size(name)
        whole = s.file_bytes("fp16") / 1e9
        offloaded = (s.vqgan_bytes + s.scale_bytes("fp16")) / 1e9
        assert f"{label} {whole:.1f} GB vs {offloaded:.1f} GB" in tip


def test_sampling_moves_one_scale_at_a_time_with_the_same_tokens(pack):
    plain = pack.loader.load("m.safetensors", "cpu", "fp32")
    handle = pack.loader.load("m.safetensors", "cpu", "fp32", offload_idle_scales=True)
    assert handle.offload_idle_scales and not plain.offload_idle_scales
    cond = pack.conditions.class_condition(plain, "tiger")
    want, _ = pack.chain.sample(plain, 0, 0, 2, 7, condition=cond, preview=False)
    events = spy_moves(handle.model)
    got, _ = pack.chain.sample(handle, 0, 0, 2, 7, condition=cond, preview=False)
    assert torch.equal(got.tokens, want.tokens)
    # prepare() re-syncs the offload (every scale to storage: no-op moves), then per scale T..1: in, run, out
    assert events[:3] == [(1, "cpu"), (2, "cpu"), (3, "cpu")]
    assert events[3:] == [e for s in (3, 2, 1) for e in ((s, "cpu"), (s, "run"), (s, "cpu"))]


class FakeComfy:
    """comfy.model_management / comfy.utils / comfy.model_patcher, recording what the pack asks of them."""

    def __init__(self):
        self.loads = []
        fake = self

        class ModelPatcher:
            def __init__(self, model, load_device, offload_device):
                self.model, self.load_device, self.offload_device = model, load_device, offload_device

        def load_models_gpu(models, memory_required=0, force_full_load=False, **kw):
            fake.loads.append((models, memory_required, force_full_load))
            for m in models:
                m.model.to(m.load_device)

        self.mm = types.SimpleNamespace(
            get_torch_device=lambda: torch.device("cpu"), unet_offload_device=lambda: torch.device("cpu"),
            load_models_gpu=load_models_gpu, throw_exception_if_processing_interrupted=lambda: None)
        self.mp = types.SimpleNamespace(ModelPatcher=ModelPatcher)
        self.cu = types.SimpleNamespace(ProgressBar=lambda total: types.SimpleNamespace(
            update_absolute=lambda *a, **k: None))


def test_with_comfyui_the_patcher_holds_the_vqgan_and_room_for_one_scale_is_asked(pack, monkeypatch):
    fake = FakeComfy()
    monkeypatch.setattr(pack.bridge, "_comfy", lambda: (fake.mm, fake.cu, fake.mp))
    whole = pack.loader.load("m.safetensors", "auto", "fp32")
    held = whole.patcher.model.imagebart
    assert held is whole.model  # without offloading ComfyUI manages the whole model
    handle = pack.loader.load("m.safetensors", "auto", "fp32", offload_idle_scales=True)
    assert handle.patcher.model.imagebart is handle.model.vqgan  # only the VQGAN is ComfyUI's to move
    events = spy_moves(handle.model)
    codes, _ = pack.chain.sample(handle, 0, 0, 1, 3, preview=False)
    models, memory_required, full = fake.loads[-1]
    scale_bytes = max(sum(t.numel() * t.element_size() for t in s.state_dict().values()) for s in handle.model.scales)
    assert models == [handle.patcher] and memory_required == scale_bytes and full
    assert [e for e in events if e[1] == "run"] == [(3, "run"), (2, "run"), (1, "run")]
    assert codes.level == 1
    pack.chain.sample(whole, 0, 0, 1, 3, preview=False)
    assert fake.loads[-1][1] == 0  # no extra room asked when the whole model is loaded
