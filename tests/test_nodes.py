"""The node pack's logic without ComfyUI: ComfyUI's tensor conventions in, outputs checked.

The pack's ``nodes`` package is imported against a stub ``comfy_api`` (tests/comfy_stub.py); the node
classes' ``execute`` and the plain functions behind them run the real core library on tiny models.
"""

import pytest
import torch
from comfy_stub import load_nodes, node_info, stubbed_comfy_api


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    import imagebart_core as ib_top
    from imagebart_core.random_model import write_random_model

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
    for handle, cond in [(pack.cls, pack.conditions.class_condition(pack.cls, "tiger")),
                         (pack.text, pack.conditions.text_condition(pack.text, "a red circle"))]:
        clean = pack.codes.encode(handle, image())
        out, _, _ = pack.chain.masked_refine(handle, clean, torch.ones(1, 16, 16), 1, condition=cond, guidance=2.0)
        assert out.level == 1


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
    with pytest.raises(ValueError, match="prompt is empty"):
        pack.conditions.text_condition(pack.text, "   ")
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
