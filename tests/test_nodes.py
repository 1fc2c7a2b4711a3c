"""The node pack's logic without ComfyUI: ComfyUI's tensor conventions in, outputs checked.

The pack's ``nodes`` package is imported against a stub ``comfy_api`` (tools/comfy_stub.py); the node
classes' ``execute`` and the plain functions behind them run the real core library on tiny models.
"""

import types
from pathlib import Path

import pytest
import torch

from tools.comfy_stub import fake_prompt_server, load_nodes, node_info, stubbed_comfy_api

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    import imagebart_core as ib_top
    from tools.random_model import write_random_model

    for kind, name in [("none", "uncond"), ("class", "class"), ("text", "text")]:
        write_random_model(folder / f"m-{name}.safetensors", kind, grid=(4, 4), n_scales=2)
    other = ib_top.build_model(ib_top.tiny_config(n_scales=2), seed=7)
    ib_top.save_model(other, folder / "other.safetensors")
    with stubbed_comfy_api():
        nodes = load_nodes()
        from nodes import chain, codes, comfy_bridge, conditions, loader

        comfy_bridge.FALLBACK_MODEL_DIRS[:] = [str(folder)]

        class Pack:
            pass

        p = Pack()
        p.nodes, p.chain, p.codes, p.bridge, p.conditions, p.loader = nodes, chain, codes, comfy_bridge, conditions, loader
        p.uncond = loader.load("m-uncond.safetensors")
        p.cls = loader.load("m-class.safetensors")
        p.text = loader.load("m-text.safetensors")
        p.other = loader.load("other.safetensors")
        p.folder = folder
        yield p
        comfy_bridge.FALLBACK_MODEL_DIRS[:] = []


def image(b=1, h=16, w=16, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, h, w, c, generator=g)  # ComfyUI IMAGE [B, H, W, C] in 0..1


# -- schemas ---------------------------------------------------------------------------------------------------
def test_every_node_documented(pack):
    ids = set()
    for node in pack.nodes.NODES:
        info = node_info(node)
        assert info["name"].startswith("ImageBART") and info["category"] == "ImageBART"
        assert len(info["description"]) > 30, info["name"]
        ids.add(info["name"])
        for section in info["input"].values():
            for name, (_, opts) in section.items():
                assert opts.get("tooltip"), f"{info['name']}.{name} has no tooltip"
                if name == "seed":
                    assert opts["control_after_generate"] and opts["max"] == 0xFFFFFFFFFFFFFFFF
        assert all(info["output_tooltips"])
    assert len(ids) == len(pack.nodes.NODES) == 11


def test_extension_lists_nodes(pack):
    import asyncio

    assert asyncio.run(pack.nodes.ImageBARTExtension().get_node_list()) == pack.nodes.NODES
    schemas = [node.define_schema() for node in pack.nodes.NODES]
    ids = [schema.node_id for schema in schemas]
    assert len(set(ids)) == len(ids) >= 9 and all(i.startswith("ImageBART") for i in ids)
    assert all(schema.description for schema in schemas)  # a description on every node


# -- loader ----------------------------------------------------------------------------------------------------
def test_loader_defaults_and_dtypes(pack):
    m = pack.uncond.model
    assert pack.uncond.dtype == torch.float32 and pack.uncond.patcher is None  # no ComfyUI: no patcher
    assert pack.uncond.image_size == (16, 16)
    bf = pack.loader.load("m-uncond.safetensors", "cpu", "bf16")
    assert {p.dtype for p in bf.model.scales.parameters()} == {torch.bfloat16}
    assert next(bf.model.vqgan.parameters()).dtype == torch.float32  # never fp16/bf16 for the VQGAN
    fp16 = pack.loader.load("m-uncond.safetensors", "cpu", "fp16")
    assert next(fp16.model.vqgan.parameters()).dtype == torch.float32
    assert next(m.vqgan.parameters()).dtype == torch.float32
    assert "m-uncond.safetensors" in pack.bridge.model_files()


def test_missing_model_names_file_and_folder(pack):
    with pytest.raises(FileNotFoundError) as err:
        pack.loader.load("nope.safetensors")
    msg = str(err.value)
    assert "nope.safetensors" in msg and str(pack.folder) in msg and "imagebart" in msg
    assert pack.loader.ImageBARTLoader.validate_inputs("nope.safetensors") == msg
    assert pack.loader.ImageBARTLoader.validate_inputs("m-uncond.safetensors") is True


# -- encode / decode -----------------------------------------------------------------------------------------------
def test_encode_fit_modes_and_decode(pack):
    h = pack.uncond
    codes = pack.codes.encode(h, image(2, 37, 23, 4), "resize to model size")  # RGBA, odd size
    assert codes.grid == (4, 4) and codes.level == 1 and codes.batch_size == 2
    out = pack.codes.ImageBARTDecode.execute(h, codes)[0]
    assert out.shape == (2, 16, 16, 3) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    assert pack.codes.encode(h, image(1, 30, 50), "crop to model size").grid == (4, 4)
    assert pack.codes.encode(h, image(1, 30, 50), "crop to multiple of factor").grid == (7, 12)
    with pytest.raises(ValueError, match="this model works on 16x16 px"):
        pack.codes.encode(h, image(1, 30, 50), "error")
    assert pack.codes.encode(h, image(1, 16, 16), "error").grid == (4, 4)


def test_decode_refuses_noisy_codes(pack):
    noise = pack.codes.random_codes(pack.uncond, 0, 0, 1, 0)
    with pytest.raises(ValueError, match="level 3"):
        pack.codes.decode(pack.uncond, noise)


def test_codes_from_another_model_explain_themselves(pack):
    codes = pack.codes.encode(pack.other, image())
    with pytest.raises(ValueError, match="another model"):
        pack.codes.decode(pack.uncond, codes)
    with pytest.raises(ValueError, match="another model"):
        pack.chain.masked_refine(pack.uncond, codes, torch.ones(1, 16, 16), 0)


# -- the chain -------------------------------------------------------------------------------------------------
def test_sample_is_deterministic_and_per_item(pack):
    h = pack.uncond
    a = pack.chain.ImageBARTSample.execute(h, 0, 0, 2, 11, 1.0, 0, 1.0, 1.0)[0]
    b = pack.chain.ImageBARTSample.execute(h, 16, 16, 2, 11, 1.0, 0, 1.0, 1.0)[0]
    assert torch.equal(a.tokens, b.tokens) and a.level == 1
    c = pack.chain.ImageBARTSample.execute(h, 0, 0, 1, 12, 1.0, 0, 1.0, 1.0)[0]
    assert torch.equal(a.tokens[1], c.tokens[0])  # item i = seed + i
    d = pack.chain.ImageBARTSample.execute(h, 0, 0, 1, 13, 1.0, 0, 1.0, 1.0)[0]
    assert not torch.equal(c.tokens, d.tokens)
    with pytest.raises(ValueError, match=r"width 12 px is smaller .* \(16x16 px\)"):
        pack.chain.sample(h, 12, 16, 1, 0)


def test_chained_steps_equal_sample_and_preview(pack):
    h = pack.uncond
    whole, progress = pack.chain.sample(h, 0, 0, 1, 5, temperature=0.9, top_k=20, top_p=0.95)
    assert progress.calls == progress.last.total == 2 * 16  # scales x tokens
    x = pack.codes.ImageBARTRandomCodes.execute(h, 0, 0, 1, 5)[0]
    assert x.level == 3
    for level in (2, 1):
        out = pack.chain.ImageBARTReverseStep.execute(h, x, 1, 5, 0.9, 20, 0.95, 1.0)
        x, preview = out[0], out[1]
        assert x.level == level and preview.shape == (1, 16, 16, 3)
    assert torch.equal(x.tokens, whole.tokens)
    with pytest.raises(ValueError, match="already clean"):
        pack.chain.reverse_step(h, x, 1, 0)


def test_per_scale_overrides(pack):
    parse = pack.nodes.common.parse_per_scale
    assert parse("1:0.9, 2:1.1", 2, "t") == {1: 0.9, 2: 1.1}
    assert parse("", 2, "t") == {}
    with pytest.raises(ValueError, match="scales 1..2"):
        parse("3:1.0", 2, "t")
    with pytest.raises(ValueError, match="scale:value"):
        parse("fast", 2, "t")
    temps, ks, ps = pack.nodes.common.filter_settings(pack.uncond, 1.0, 0, 1.0, "2:0.5", "1:5", "")
    assert temps == [1.0, 0.5] and ks == [5, None] and ps == [None, None]
    # out-of-range overrides reach the core, which refuses them before any work (never silently "off")
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        pack.chain.sample(pack.uncond, 0, 0, 1, 3, top_p_per_scale="1:1.5")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        pack.chain.sample(pack.uncond, 0, 0, 1, 3, temperature_per_scale="2:-1")
    # an override changes only its scale's draws: scale 2 (first step) equal, final result differs
    a, _ = pack.chain.sample(pack.uncond, 0, 0, 1, 3)
    b, _ = pack.chain.sample(pack.uncond, 0, 0, 1, 3, temperature_per_scale="1:0.05")
    assert not torch.equal(a.tokens, b.tokens)


def test_cancel_stops_within_one_token(pack, monkeypatch):
    calls = []

    class Interrupted(Exception):
        pass

    def check():
        calls.append(1)
        if len(calls) == 5:
            raise Interrupted

    monkeypatch.setattr(pack.bridge, "check_interrupt", check)
    with pytest.raises(Interrupted):
        pack.chain.sample(pack.uncond, 0, 0, 1, 0)
    assert len(calls) == 5  # stopped at the token step that saw Cancel


def test_noise_codes(pack):
    h = pack.uncond
    clean = pack.codes.encode(h, image())
    n = pack.codes.ImageBARTNoiseCodes.execute(h, clean, 3, 0)[0]
    assert n.level == 3 and n.grid == (4, 4)
    assert torch.equal(pack.codes.noise_codes(h, clean, 2, 4).tokens, pack.codes.noise_codes(h, clean, 2, 4).tokens)
    with pytest.raises(ValueError, match="1..3|to 1..3"):
        pack.codes.noise_codes(h, clean, 4, 0)


# -- masked refine ---------------------------------------------------------------------------------------------
def test_masked_refine_any_mask_size_keeps_unmasked(pack):
    h = pack.uncond
    img = image(1, 16, 16)
    clean = pack.codes.encode(h, img)
    mask = torch.zeros(1, 7, 9)  # another size than the image
    mask[:, :3] = 1.0  # upper part
    out = pack.chain.ImageBARTMaskedRefine.execute(h, clean, mask, 3, 0, 2, 1.0, 0, 1.0, 1.0, True, None, img)
    codes, pixels = out[0], out[1]
    assert codes.level == 1 and pixels.shape == (1, 16, 16, 3)
    token_mask = h.model.token_mask(pack.nodes.common.resize_mask(mask, (16, 16)), clean)[0]
    assert torch.equal(codes.tokens[0][~token_mask], clean.tokens[0][~token_mask])
    assert not torch.equal(codes.tokens[0][token_mask], clean.tokens[0][token_mask])
    keep = pack.nodes.common.resize_mask(mask, (16, 16))[0] == 0
    assert torch.allclose(pixels[0][keep], img[0][keep], atol=1e-6)  # composite restores original pixels


def test_masked_refine_batches_and_errors(pack):
    h = pack.uncond
    clean = pack.codes.encode(h, image(2))
    out, pixels, _ = pack.chain.masked_refine(h, clean, torch.ones(64, 64), 0)  # [H, W] mask, broadcast
    assert out.batch_size == 2 and pixels.shape == (2, 16, 16, 3)
    with pytest.raises(ValueError, match="batch mismatch"):
        pack.chain.masked_refine(h, clean, torch.ones(3, 16, 16), 0)
    one = pack.codes.encode(h, image(1))
    assert pack.chain.masked_refine(h, one, torch.ones(2, 16, 16), 0)[0].batch_size == 2
    empty, _, _ = pack.chain.masked_refine(h, clean, torch.zeros(1, 64, 64), 0)
    assert torch.equal(empty.tokens, clean.tokens)
    with pytest.raises(ValueError, match="connect the image"):
        pack.chain.masked_refine(h, clean, torch.ones(1, 16, 16), 0, composite=True)
    with pytest.raises(ValueError, match="start_level"):
        pack.chain.masked_refine(h, clean, torch.ones(1, 16, 16), 0, start_level=9)


def test_masked_refine_with_class_and_text(pack):
    """Conditioned refinement keeps the unmasked codes, repeats with the same seed, and follows its condition."""
    cases = [(pack.cls, pack.conditions.class_condition(pack.cls, "tiger"),
              pack.conditions.class_condition(pack.cls, "goldfish")),
             (pack.text, pack.conditions.text_condition(pack.text, "a red circle"),
              pack.conditions.text_condition(pack.text, "a blue square"))]
    mask = torch.zeros(1, 16, 16)
    mask[:, :8] = 1.0  # the upper half
    for handle, cond, other in cases:
        clean = pack.codes.encode(handle, image())
        regen = handle.model.token_mask(mask, clean)
        out, pixels, _ = pack.chain.masked_refine(handle, clean, mask, 1, condition=cond, guidance=2.0)
        assert out.level == 1 and pixels.shape == (1, 16, 16, 3)
        assert torch.equal(out.tokens[~regen], clean.tokens[~regen])
        again, _, _ = pack.chain.masked_refine(handle, clean, mask, 1, condition=cond, guidance=2.0)
        assert torch.equal(again.tokens, out.tokens)
        # the condition reaches the chain: with strong guidance (random weights differ little per condition)
        # another condition regenerates other codes, while the unmasked ones stay
        strong, _, _ = pack.chain.masked_refine(handle, clean, mask, 1, condition=cond, guidance=100.0)
        changed, _, _ = pack.chain.masked_refine(handle, clean, mask, 1, condition=other, guidance=100.0)
        assert not torch.equal(changed.tokens[regen], strong.tokens[regen])
        assert torch.equal(changed.tokens[~regen], clean.tokens[~regen])


# -- conditions ----------------------------------------------------------------------------------------------
def test_class_condition(pack):
    c = pack.conditions.ImageBARTClassCondition.execute(pack.cls, "tiger", 2)[0]
    assert c.tokens.tolist() == [[292], [292]]
    c = pack.conditions.class_condition(pack.cls, "207\ngolden retriever\n1")
    assert c.tokens[:, 0].tolist() == [207, 207, 1]
    with pytest.raises(ValueError, match="out of range"):
        pack.conditions.class_condition(pack.cls, "1000")
    with pytest.raises(ValueError, match="no class"):
        pack.conditions.class_condition(pack.cls, "  ")
    with pytest.raises(ValueError, match="unconditional"):
        pack.conditions.class_condition(pack.uncond, "tiger")
    codes, _ = pack.chain.sample(pack.cls, 0, 0, 2, 0, condition=pack.conditions.class_condition(pack.cls, "tiger"))
    assert codes.batch_size == 2


def test_text_condition(pack):
    c = pack.conditions.ImageBARTTextCondition.execute(pack.text, "a red circle", 1)[0]
    assert c.tokens.shape == (1, 8)
    empty = pack.conditions.text_condition(pack.text, "   ")  # trained with condition dropout: no text
    assert empty.null.all() and torch.equal(empty.tokens, pack.text.model.null_condition(1).tokens)
    with pytest.raises(ValueError, match="text condition|class condition|takes a"):
        pack.chain.sample(pack.cls, 0, 0, 1, 0, condition=c)


def test_runs_under_inference_mode_like_comfyui(pack):
    """ComfyUI executes nodes under torch.inference_mode(): loading and sampling must work there."""
    with torch.inference_mode():
        h = pack.loader.load("m-uncond.safetensors")
        clean = pack.codes.encode(h, image())
        out, pixels, _ = pack.chain.masked_refine(h, clean, torch.ones(1, 16, 16), 0)
        assert pixels.shape == (1, 16, 16, 3) and out.level == 1


# -- larger than the trained grid (sliding windows) -------------------------------------------------------------
def test_sizes_beyond_the_trained_grid(pack):
    h = pack.uncond  # trained 16x16 px (a 4x4 grid, factor 4)
    grid_for = pack.codes.grid_for
    assert grid_for(h, 0, 0) == (4, 4) and grid_for(h, 48, 0) == (4, 12) and grid_for(h, 20, 24) == (6, 5)
    with pytest.raises(ValueError, match="width 18 px is not a multiple of this model's VQGAN factor 4: use 16 or 20"):
        grid_for(h, 18, 0)
    with pytest.raises(ValueError, match="height 12 px is smaller than this model's trained height 16 px"):
        grid_for(h, 0, 12)
    with pytest.raises(ValueError, match="not a multiple"):
        pack.chain.sample(h, 16, 30, 1, 0)
    noise = pack.codes.ImageBARTRandomCodes.execute(h, 48, 0, 2, 3)[0]
    assert noise.grid == (4, 12) and noise.level == 3 and noise.batch_size == 2
    wide, progress = pack.chain.sample(h, 48, 0, 2, 3)
    assert wide.grid == (4, 12) and wide.level == 1 and progress.calls == 2 * 48  # scales x tokens
    assert pack.codes.decode(h, wide).shape == (2, 16, 48, 3)
    again = pack.chain.ImageBARTSample.execute(h, 48, 0, 2, 3, 1.0, 0, 1.0, 1.0)[0]
    assert torch.equal(again.tokens, wide.tokens)  # window_stride 0 = the core's automatic stride
    x = noise
    for _ in range(2):  # the same chain one node per transition
        x = pack.chain.ImageBARTReverseStep.execute(h, x, 1, 3, 1.0, 0, 1.0, 1.0)[0]
    assert torch.equal(x.tokens, wide.tokens)
    assert torch.equal(wide.tokens, h.model.sample(2, grid=(4, 12), seed=3).tokens)
    strided = pack.chain.sample(h, 48, 0, 1, 3, window_stride=2)[0]
    assert torch.equal(strided.tokens, h.model.sample(1, grid=(4, 12), seed=3, window_stride=2).tokens)
    with pytest.raises(ValueError, match="stride"):
        pack.chain.sample(h, 48, 0, 1, 3, window_stride=3)  # more than half the 4x4 window


def test_encode_keeps_the_image_size(pack):
    h = pack.uncond
    keep = pack.codes.KEEP_SIZE
    assert keep in pack.codes.FIT_MODES and pack.codes.FIT_MODES[:4] == [
        "resize to model size", "crop to model size", "crop to multiple of factor", "error"]  # saved values stay
    assert pack.codes.encode(h, image(1, 16, 48), keep).grid == (4, 12)  # already fine: untouched
    assert pack.codes.encode(h, image(1, 30, 50), keep).grid == (8, 12)  # rounded to multiples of 4
    assert pack.codes.encode(h, image(1, 8, 40), keep).grid == (4, 20)  # too low: scaled up, aspect kept
    x = image(1, 16, 48)
    assert torch.equal(pack.codes.fit_image(x.movedim(-1, 1), h, keep), x.movedim(-1, 1))
    # 'crop to multiple of factor' codes of at least the trained size go through the chain; smaller ones are refused
    big = pack.codes.encode(h, image(1, 22, 41), "crop to multiple of factor")
    assert big.grid == (5, 10)
    assert pack.chain.masked_refine(h, big, torch.ones(1, 5, 5), 0)[0].grid == (5, 10)
    small = pack.codes.encode(h, image(1, 12, 41), "crop to multiple of factor")
    assert pack.codes.decode(h, small).shape == (1, 12, 40, 3)
    with pytest.raises(ValueError, match="smaller than the trained grid"):
        pack.chain.masked_refine(h, small, torch.ones(1, 12, 40), 0)


def test_masked_refine_on_a_large_image(pack):
    h = pack.uncond
    img = image(2, 24, 40, seed=4)  # larger than the trained 16x16 along both axes
    clean = pack.codes.ImageBARTEncode.execute(h, img, pack.codes.KEEP_SIZE)[0]
    assert clean.grid == (6, 10)
    mask = torch.zeros(1, 12, 20)  # half the image size: stretched to it
    mask[:, 2:8, 12:18] = 1.0
    out = pack.chain.ImageBARTMaskedRefine.execute(h, clean, mask, 3, 0, 2, 1.0, 0, 1.0, 1.0, True, None, img, 1)
    codes, pixels = out[0], out[1]
    assert codes.grid == (6, 10) and codes.batch_size == 2 and pixels.shape == (2, 24, 40, 3)
    px_mask = pack.nodes.common.resize_mask(mask, (24, 40))
    token_mask = h.model.token_mask(px_mask, clean)  # [2, 6, 10]
    assert 0 < int(token_mask[0].sum()) < 60
    assert torch.equal(codes.tokens[~token_mask], clean.tokens[~token_mask])
    assert not torch.equal(codes.tokens[token_mask], clean.tokens[token_mask])
    keep = px_mask[0] == 0
    assert torch.allclose(pixels[:, keep], img[:, keep], atol=1e-6)  # composite: original pixels outside the mask
    core = h.model.masked_refine(clean, px_mask, seed=3, passes=[2, 2], window_stride=1)
    assert torch.equal(core.tokens, codes.tokens)


def test_condition_blend(pack):
    t = pack.text
    a = pack.conditions.text_condition(t, "a red circle")
    b = pack.conditions.text_condition(t, "a blue square")
    blend = pack.conditions.ImageBARTConditionBlend.execute(a, b)[0]
    assert isinstance(blend, pack.nodes.common.ib.ConditionBlend) and list(blend.stops) == [0.0, 1.0]
    assert blend.conditions[0] is a and blend.conditions[1] is b
    c = pack.conditions.text_condition(t, "green grass")
    three = pack.conditions.condition_blend(a, b, " 0.2, 0.5 ,0.9", c)
    assert list(three.stops) == [0.2, 0.5, 0.9] and len(three.conditions) == 3
    assert pack.conditions.condition_blend(a, b, "", c).stops == [0.0, 0.5, 1.0]
    # the chain takes a blend like a condition (and gives what the core gives for it)
    wide, _ = pack.chain.sample(t, 48, 0, 1, 4, condition=blend)
    assert wide.grid == (4, 12)
    core = t.model.sample(1, cond=pack.nodes.common.ib.ConditionBlend([a, b]), grid=(4, 12), seed=4)
    assert torch.equal(wide.tokens, core.tokens)
    assert pack.chain.sample(t, 0, 0, 1, 4, condition=blend, guidance=2.0)[0].grid == (4, 4)  # trained size, CFG
    step = pack.chain.reverse_step(t, pack.codes.random_codes(t, 32, 0, 1, 1), 2, 1, condition=three)[0]
    assert step.level == 1 and step.grid == (4, 8)
    clean = pack.codes.encode(t, image(1, 16, 32), pack.codes.KEEP_SIZE)
    assert pack.chain.masked_refine(t, clean, torch.ones(1, 16, 32), 1, condition=blend)[0].grid == (4, 8)


def test_condition_blend_batches_and_errors(pack):
    t = pack.text
    one = pack.conditions.text_condition(t, "a red circle")
    two = pack.conditions.text_condition(t, "a blue square", batch_size=2)
    three = pack.conditions.text_condition(t, "sky", batch_size=3)
    blend = pack.conditions.condition_blend(one, two)
    assert pack.nodes.common.cond_batch(blend) == 2
    codes, _ = pack.chain.sample(t, 32, 0, 1, 0, condition=blend)  # batch_size 1 follows the condition's 2
    assert codes.batch_size == 2
    with pytest.raises(ValueError, match="batch mismatch"):
        pack.conditions.condition_blend(two, three)
    with pytest.raises(ValueError, match="batch mismatch"):
        pack.chain.sample(t, 32, 0, 3, 0, condition=blend)
    with pytest.raises(ValueError, match="batch mismatch"):
        pack.chain.reverse_step(t, pack.codes.random_codes(t, 0, 0, 3, 0), 1, 0, condition=blend)
    with pytest.raises(ValueError, match="all be class or all be text"):
        pack.conditions.condition_blend(one, pack.conditions.class_condition(pack.cls, "tiger"))
    with pytest.raises(ValueError, match="cannot take another blend"):
        pack.conditions.condition_blend(blend, one)
    with pytest.raises(ValueError, match="positions: give 2 increasing fractions"):
        pack.conditions.condition_blend(one, two, "0.5, 0.2")
    with pytest.raises(ValueError, match="positions: give 3 increasing"):
        pack.conditions.condition_blend(one, two, "0, 1", one)
    with pytest.raises(ValueError, match="cannot read"):
        pack.conditions.condition_blend(one, two, "left, right")
    with pytest.raises(ValueError, match="takes a class condition, got a text"):
        pack.chain.sample(pack.cls, 0, 0, 1, 0, condition=blend)
    with pytest.raises(ValueError, match="unconditional"):
        pack.chain.sample(pack.uncond, 32, 0, 1, 0, condition=blend)


# -- a first day in the UI: defaults, errors that list what is valid, warnings on the node -----------------------
WARN = "\u26a0 "


def on_node(monkeypatch, node_cls, node_id):
    """Run ``node_cls`` as ComfyUI does for node ``node_id`` (its hidden unique_id)."""
    monkeypatch.setattr(node_cls, "hidden", types.SimpleNamespace(unique_id=node_id))


def default_of(node_cls, name):
    return node_info(node_cls)["input"]["required"][name][1]["default"]


@pytest.fixture(scope="module")
def demo(pack):
    """The bundled demo models (models/), loaded through the loader node like a user would."""
    names = ["imagebart-demo-shapes-class.safetensors", "imagebart-demo-shapes-text.safetensors"]
    if not all((ROOT / "models" / n).is_file() for n in names):
        pytest.skip("the bundled demo models are not in models/")
    pack.bridge.FALLBACK_MODEL_DIRS.append(str(ROOT / "models"))
    try:
        yield types.SimpleNamespace(cls=pack.loader.load(names[0]), text=pack.loader.load(names[1]))
    finally:
        pack.bridge.FALLBACK_MODEL_DIRS.remove(str(ROOT / "models"))


def test_ui_text_reaches_the_node_as_comfyui_sends_it(pack):
    bridge = pack.bridge
    assert bridge.show_on_node("3", "hello") is False  # no ComfyUI server: nothing sent, nothing raised
    with fake_prompt_server() as server:
        assert bridge.show_on_node("3", "class: 'circle' (0)") is True
        bridge.show_warning("4", "the mask is empty")
        assert bridge.show_on_node(None, "outside a prompt") is False and bridge.show_on_node("5", "") is False
        assert server.node_texts() == [("3", "class: 'circle' (0)"), ("4", WARN + "the mask is empty")]
        assert {sid for _, _, sid in server.sent} == {"client-1"}  # only to the client that queued the prompt
        server.sent.clear()
        bridge.report_warnings("6", [])  # never warned on node 6: nothing to replace
        assert server.node_texts() == []
        bridge.report_warnings("4", [])  # node 4 showed a warning: replaced, so it does not go stale
        bridge.report_warnings("4", ["a", "b"])
        assert server.node_texts() == [("4", "no warnings"), ("4", WARN + "a\nb")]


def test_fresh_condition_nodes_work_with_the_bundled_models(pack, demo, monkeypatch):
    """A Class / Text Condition node as it comes out of the menu (default widgets) works with the demo models,
    and the node says what it did."""
    conditions = pack.conditions
    class_default = default_of(conditions.ImageBARTClassCondition, "class_name")
    prompt_default = default_of(conditions.ImageBARTTextCondition, "prompt")
    on_node(monkeypatch, conditions.ImageBARTClassCondition, "21")
    on_node(monkeypatch, conditions.ImageBARTTextCondition, "22")
    with fake_prompt_server() as server:
        c = conditions.ImageBARTClassCondition.execute(demo.cls, class_default, 1)[0]
        t = conditions.ImageBARTTextCondition.execute(demo.text, prompt_default, 1)[0]
    assert c.labels == ["circle"] and c.tokens.tolist() == [[0]]
    assert t.null.all()  # the empty default prompt = no text (the demo model was trained with condition dropout)
    texts = dict(server.node_texts())
    assert texts["21"] == "class: 'circle' (0)"
    assert texts["22"].startswith(WARN) and "prompt is empty" in texts["22"] and "unconditional" in texts["22"]
    for handle, cond in ((demo.cls, c), (demo.text, t)):
        codes, _ = pack.chain.sample(handle, 0, 0, 1, 0, condition=cond)
        assert codes.level == 1 and codes.grid == (8, 8)
    # the default is valid for every class model: index 0 of the 1000 ImageNet classes too
    assert conditions.class_condition(pack.cls, class_default).labels == ["tench"]


def test_class_errors_list_the_valid_classes(pack, demo):
    conditions = pack.conditions
    listing = "'circle' (0), 'cross' (1), 'diamond' (2), 'square' (3), 'triangle' (4)"
    for bad in ("tiger", "292", "tri angle"):
        with pytest.raises(ValueError) as err:
            conditions.class_condition(demo.cls, bad)
        assert listing in str(err.value), str(err.value)
    with pytest.raises(ValueError, match="no class given: type a class name \\(e.g. 'circle'\\) or an index \\(0..4\\)"):
        conditions.class_condition(demo.cls, " \n ")
    assert conditions.class_condition(demo.cls, "triangle\n1").labels == ["triangle", "cross"]
    with pytest.raises(ValueError, match="imagenet_classes.json"):  # 1000 names: where to find them
        conditions.class_condition(pack.cls, "no such animal")
    with pytest.raises(ValueError, match="text-conditional.*use Text Condition"):
        conditions.class_condition(demo.text, "0")


def test_text_vocabulary_errors_and_ignored_words_in_the_ui(pack, demo, monkeypatch):
    conditions = pack.conditions
    node = conditions.ImageBARTTextCondition
    on_node(monkeypatch, node, "31")
    with fake_prompt_server() as server:
        cond = node.execute(demo.text, "a tiger jumping left of a blue square", 2)[0]
        node.execute(demo.text, "a red circle", 1)  # fixed: the warning on the node is replaced
    assert cond.batch_size() == 2 and not cond.null.any()
    (node_a, first), (node_b, second) = server.node_texts()
    assert node_a == node_b == "31"
    assert first.startswith(WARN) and "'tiger', 'jumping'" in first and "'blue'" not in first
    assert "knows only these words: a, above, below, blue, circle" in first  # the vocabulary is listed
    assert second == "no warnings"
    with pytest.raises(ValueError, match="none of the words .* knows only these words: a, above"):
        conditions.text_condition(demo.text, "tiger")
    with pytest.raises(ValueError, match="class-conditional.*use Class Condition"):
        conditions.text_condition(demo.cls, "a red circle")
    import imagebart_core as ib_top

    cfg = ib_top.tiny_config(n_scales=2, conditioning="text")
    cfg.conditioning.null_condition = False  # a model without condition dropout has no "no text"
    handle = pack.nodes.common.ModelHandle(ib_top.build_model(cfg, seed=5), "nodrop.safetensors", torch.float32)
    with pytest.raises(ValueError, match="the prompt is empty"):
        conditions.text_condition(handle, "")


def test_masked_refine_warns_in_the_ui_about_an_empty_mask(pack, monkeypatch):
    h = pack.uncond
    node = pack.chain.ImageBARTMaskedRefine
    on_node(monkeypatch, node, "41")
    clean = pack.codes.encode(h, image(2))
    half = torch.zeros(2, 16, 16)
    half[0, :8] = 1.0
    with fake_prompt_server() as server:
        out = node.execute(h, clean, torch.zeros(1, 16, 16), 0, 0, 0, 1.0, 0, 1.0, 1.0, False)[0]
        node.execute(h, clean, half, 0, 0, 0, 1.0, 0, 1.0, 1.0, False)
        node.execute(h, clean, torch.ones(1, 16, 16), 0, 0, 0, 1.0, 0, 1.0, 1.0, False)
    assert torch.equal(out.tokens, clean.tokens)
    texts = [t for _, t in server.node_texts()]
    assert texts[0].startswith(WARN + "the mask is empty") and "Paint the area" in texts[0]
    assert texts[1].startswith(WARN + "the mask of item(s) 2 is empty")
    assert texts[2] == "no warnings"


def test_masked_refine_composites_at_the_input_images_size(pack):
    h = pack.uncond  # works at 16x16 px
    img = image(1, 64, 48, seed=9)
    clean = pack.codes.encode(h, img)  # resized to 16x16 for the model
    mask = torch.zeros(1, 64, 48)
    mask[:, 8:40, 4:28] = 1.0
    codes, pixels, _ = pack.chain.masked_refine(h, clean, mask, 2, composite=True, image=img)
    assert codes.grid == (4, 4) and pixels.shape == (1, 64, 48, 3)  # the input image's size, not 16x16
    assert torch.equal(pixels[0][mask[0] == 0], img[0][mask[0] == 0])  # unmasked pixels exactly as loaded
    assert not torch.allclose(pixels[0][mask[0] == 1], img[0][mask[0] == 1])
    plain = pack.chain.masked_refine(h, clean, mask, 2)[1]
    assert plain.shape == (1, 16, 16, 3)  # without composite: the encoded size
    out_tips = node_info(pack.chain.ImageBARTMaskedRefine)["output_tooltips"]
    assert "size of 'image'" in out_tips[1] and "encoded size" in out_tips[1]
    batch = pack.chain.masked_refine(h, pack.codes.encode(h, image(3)), torch.ones(1, 16, 16), 2, composite=True,
                                     image=image(1, 20, 24))[1]
    assert batch.shape == (3, 20, 24, 3)  # one original for a batch of three


def test_size_widgets_step_onto_valid_sizes(pack):
    codes = pack.codes
    for node in (codes.ImageBARTRandomCodes, pack.chain.ImageBARTSample):
        required = node_info(node)["input"]["required"]
        for name in ("width", "height"):
            opts = required[name][1]
            assert opts["min"] == 0 and opts["default"] == 0 and opts["step"] == codes.SIZE_STEP
            assert opts["max"] % opts["step"] == 0
    demo_like = types.SimpleNamespace(image_size=(32, 32), factor=4)  # the demo models
    released_like = types.SimpleNamespace(image_size=(256, 256), factor=16)  # the released models
    for k in range(1, 40):  # every click from 0 is a size the demo models take
        assert codes.grid_for(demo_like, k * codes.SIZE_STEP, 0) == (8, k * codes.SIZE_STEP // 4)
    for k in range(256 // codes.SIZE_STEP, 40):  # and from the trained size on, the released models too
        assert codes.grid_for(released_like, 0, k * codes.SIZE_STEP)[0] == k * codes.SIZE_STEP // 16
    with pytest.raises(ValueError, match="smaller than this model's trained width 256 px.*Use 256 or more"):
        codes.grid_for(released_like, codes.SIZE_STEP, 0)
    with pytest.raises(ValueError, match="not a multiple of this model's VQGAN factor 16: use 992 or 1008"):
        codes.grid_for(released_like, 1000, 0)


class FakeEstimate:
    """What imagebart_core.budget.estimate_request returns (the fields the nodes read)."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.peak_bytes = 123 << 20

    def describe(self):
        return f"peak 123 MiB, {self.seconds:.0f} s"


def test_a_size_that_takes_very_long_is_warned_about_in_the_ui(pack, monkeypatch):
    codes = pack.codes
    h = pack.uncond  # trained 16x16 px = 4x4 codes
    assert codes.slow_size_warning(h, (4, 4), 1, FakeEstimate(codes.SLOW_SECONDS)) is None
    slow = codes.slow_size_warning(h, (4, 4), 1, FakeEstimate(3 * 3600))
    assert "16x16 px, batch 1 will take about 3.0 h" in slow and "peak 123 MiB" in slow
    assert "about 20 min" in codes.slow_size_warning(h, (4, 4), 2, FakeEstimate(1200))
    node = codes.ImageBARTRandomCodes
    on_node(monkeypatch, node, "51")
    on_node(monkeypatch, pack.chain.ImageBARTSample, "52")
    with fake_prompt_server() as server:
        monkeypatch.setattr(codes, "chain_estimate", lambda handle, grid, batch: FakeEstimate(7200.0))
        node.execute(h, 16, 16, 1, 0)
        pack.chain.ImageBARTSample.execute(h, 16, 16, 1, 0, 1.0, 0, 1.0, 1.0)
        monkeypatch.setattr(codes, "chain_estimate", lambda handle, grid, batch: FakeEstimate(1.0))
        node.execute(h, 16, 16, 1, 0)
    texts = server.node_texts()
    assert [n for n, _ in texts] == ["51", "52", "51"]
    assert "will take about 2.0 h" in texts[0][1] and texts[0][1].startswith(WARN)
    assert "will take about 2.0 h" in texts[1][1]
    assert texts[2][1] == "no warnings"


def test_the_slow_size_warning_comes_from_the_librarys_budget(pack):
    import imagebart_core as ib

    h = pack.uncond
    small = pack.codes.chain_estimate(h, (4, 4), 1)
    assert isinstance(small, ib.RequestEstimate) and small.seconds > 0 and isinstance(small.describe(), str)
    assert pack.codes.slow_size_warning(h, (4, 4), 1, small) is None  # the trained size is quick
    huge = pack.codes.chain_estimate(h, (400, 400), 4)  # 10000x the trained codes: hours on a CPU
    assert huge.seconds > pack.codes.SLOW_SECONDS and huge.seconds > 100 * small.seconds
    assert "will take about" in pack.codes.slow_size_warning(h, (400, 400), 4, huge)
