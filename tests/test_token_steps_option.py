"""Load ImageBART's token_steps option: the model's step mode, chosen in the graph. "compiled" reaches the
token loops (torch.compile is asked once per scale for batch-1 steps without guidance, with the eager tokens),
and is refused up front, before anything is loaded, on a GPU or without a C++ compiler.

ComfyUI is replaced by a recording fake (``comfy.model_management``/``model_patcher``), with the CPU as device.
The real compilation runs in the slow test at the end (the library's own compiled-step tests are in
``test_static_step.py``).
"""

from __future__ import annotations

import pytest
import torch
from _loader_pack import loader_pack

from tools.comfy_stub import node_info


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    yield from loader_pack(tmp_path_factory.mktemp("models"))


def _sample(pack, handle, guidance=1.0, batch=1):
    cond = pack.conditions.class_condition(handle, "tiger")
    codes, _ = pack.chain.sample(handle, 0, 0, batch, 7, guidance=guidance, condition=cond, preview=False)
    return codes.tokens


def test_option_is_an_optional_combo_after_the_released_widgets(pack):
    info = node_info(pack.loader.ImageBARTLoader)
    assert "token_steps" not in info["input"]["required"]
    kind, opts = info["input"]["optional"]["token_steps"]
    assert kind == "COMBO" and opts["options"] == ["eager", "compiled"]
    assert opts["default"] == "eager"
    assert "C++ compiler" in opts["tooltip"] and "GPU" in opts["tooltip"]
    # appended after the released widgets: saved workflows store widget values by position
    assert list(info["input"]["optional"]) == ["offload_idle_scales", "token_steps"]


def test_compiled_reaches_the_token_loops_with_the_eager_tokens(pack, monkeypatch):
    """torch.compile replaced by a recorder that returns the function (the static step run eagerly): batch 1
    without guidance asks for one compiled step per scale, kept for the next run; several rows ask for none."""
    eager = pack.loader.load("m.safetensors", "cpu", "fp32")
    assert eager.model.step_mode == "eager"
    handle = pack.loader.load("m.safetensors", "cpu", "fp32", token_steps="compiled")
    assert handle.model.step_mode == "compiled"
    asked = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: asked.append(kw) or fn)
    assert torch.equal(_sample(pack, handle), _sample(pack, eager))
    assert len(asked) == 3 and len(handle.model.compiled_steps) == 3  # one per scale, on the CPU's options
    assert all(kw.get("dynamic") is False and "options" in kw for kw in asked)
    assert torch.equal(_sample(pack, handle), _sample(pack, eager)) and len(asked) == 3  # reused
    assert torch.equal(_sample(pack, handle, guidance=2.0), _sample(pack, eager, guidance=2.0))
    assert torch.equal(_sample(pack, handle, batch=2), _sample(pack, eager, batch=2))
    assert len(asked) == 3  # two rows per step: the eager packed kernels


def test_no_compiler_is_refused_before_loading(pack, monkeypatch):
    from imagebart_core.chain import static_step

    loaded = []
    monkeypatch.setattr(pack.loader.ib, "load_model", lambda *a, **k: loaded.append(a))
    monkeypatch.setattr(static_step, "cpu_compiler", lambda: None)
    with pytest.raises(RuntimeError, match="C\\+\\+ compiler.*apt install g\\+\\+.*eager"):
        pack.loader.load("m.safetensors", "cpu", "fp32", token_steps="compiled")
    assert loaded == []


def test_gpu_and_unknown_values_are_refused_before_loading(pack, monkeypatch):
    loaded = []
    monkeypatch.setattr(pack.loader.ib, "load_model", lambda *a, **k: loaded.append(a))
    with pytest.raises(ValueError, match="unknown token_steps 'static'; choose eager or compiled"):
        pack.loader.load("m.safetensors", "cpu", "fp32", token_steps="static")
    monkeypatch.setattr(pack.bridge, "devices", lambda choice: (torch.device("cuda", 0), torch.device("cpu")))
    with pytest.raises(ValueError, match="CPU only.*cuda:0.*choose eager, or device cpu"):
        pack.loader.load("m.safetensors", "auto", "fp32", token_steps="compiled")
    assert loaded == []


@pytest.mark.slow
def test_really_compiled_steps_give_the_eager_tokens(pack):
    """The real torch.compile (needs a C++ compiler; skipped without one)."""
    from imagebart_core.chain.static_step import cpu_compiler

    if cpu_compiler() is None:
        pytest.skip("no C++ compiler for torch.compile on this machine")
    eager = pack.loader.load("m.safetensors", "cpu", "fp32")
    handle = pack.loader.load("m.safetensors", "cpu", "fp32", token_steps="compiled")
    assert torch.equal(_sample(pack, handle), _sample(pack, eager))
    assert len(handle.model.compiled_steps) == 3
