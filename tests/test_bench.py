"""Smoke test of the benchmark CLI on the tiny config (the real measurements are not part of the test run)."""

from __future__ import annotations

import json

import torch

from imagebart_core.original.presets import ORIGINAL_MODELS, original_config
from imagebart_core.random_init import random_model
from tools import bench


def test_bench_cli_tiny(tmp_path):
    threads = torch.get_num_threads()
    out = tmp_path / "b.json"
    try:
        results = bench.main(["--model", "tiny", "--batch", "1", "2", "--repeats", "1", "--warmup", "0",
                              "--threads", "1", "--json", str(out)])
        partial = bench.main(["--model", "tiny", "--tokens", "4", "--scales", "1", "3", "--repeats", "1", "--baseline",
                              "--warmup", "0", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    data = json.loads(out.read_text())
    assert [r["batch"] for r in data["results"]] == [1, 2]
    for r in results:
        assert not r.extrapolated and r.chain_s > 0 and r.decode_s > 0 and r.tokens_per_s > 0
        assert [s["scale"] for s in r.scales] == [1, 2, 3]
        assert all(s["tokens_timed"] == 16 and s["weight_bytes_per_step"] > 0 for s in r.scales)
        assert r.peak_memory_bytes is None or r.peak_memory_bytes > 0
    (p,) = partial
    assert p.extrapolated and p.chain_s is None and [s["scale"] for s in p.scales] == [1, 3]
    assert all(s["tokens_timed"] == 4 for s in p.scales)
    assert p.scales[0]["recompute_loop_s"] > 0 and "recompute_loop_s" not in p.scales[1]  # decoder-only: none
    assert "extrapolated" in bench.format_table(partial)
    for s in results[0].scales:  # operators of one step, counted for real: every layer runs a few
        layers = 2 if s["kind"] == "decoder_only" else 1
        assert s["step_operators"] >= 4 * layers and s["step_operator_calls"]
        assert s["step_operators"] < sum(s["step_operator_calls"].values())  # views are left out of the count
    assert data["results"][0]["step_mode"] == "eager"


def test_bench_static_step_mode_runs(tmp_path):
    threads = torch.get_num_threads()
    try:
        eager, static = bench.main(["--model", "tiny", "--tokens", "4", "--scales", "1", "--repeats", "1",
                                    "--warmup", "0", "--threads", "1", "--step-mode", "eager", "static"])
    finally:
        torch.set_num_threads(threads)
    assert (eager.step_mode, static.step_mode) == ("eager", "static")
    assert static.scales[0]["ms_per_token_step"] > 0


def test_released_architectures_build_on_meta_sizes():
    """Every released name resolves to a config; random_model materialises in the asked dtype."""
    for name in ORIGINAL_MODELS:
        assert original_config(name).n_scales >= 2
    from imagebart_core.config import tiny_config

    model = random_model(tiny_config(n_scales=2, residual=True), dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.scales.parameters())
    assert all(p.dtype == torch.float32 for p in model.vqgan.parameters())
    assert model.scales[0].residual_alpha.dtype == torch.float32
    assert model.vqgan.quantize.used.tolist() == list(range(model.config.vocab_size))
    w = model.scales[0].decoder[0].ff.fc1.weight.float()
    assert 0.015 < float(w.std()) < 0.025


def test_bench_model_file(tmp_path):
    import imagebart_core as ib

    path = ib.save_model(ib.build_model(ib.tiny_config(n_scales=2), seed=0), tmp_path / "m.safetensors")
    threads = torch.get_num_threads()
    try:
        (r,) = bench.main(["--model", str(path), "--tokens", "3", "--scales", "1", "--repeats", "1", "--warmup", "0",
                           "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert r.model == "m" and r.extrapolated and [s["scale"] for s in r.scales] == [1]


def test_compiled_steps_are_not_labelled_with_the_eager_operator_count():
    """On CPU only one-row steps run compiled; their row shows "compiled", the eager count kept apart."""
    from imagebart_core.config import tiny_config

    model = random_model(tiny_config(n_scales=2), dtype=torch.float32)
    assert not bench.steps_compiled(model, 1)  # eager by default
    model.step_mode = "compiled"
    assert bench.steps_compiled(model, 1) and not bench.steps_compiled(model, 2)  # two rows run eagerly on CPU
    assert bench._ops({"step_operators": None, "eager_step_operators": 108}) == "compiled"
    assert bench._ops({"step_operators": 108, "step_operator_calls": {}}) == "108"
    assert bench._ops({}) == "-"
    threads = torch.get_num_threads()
    try:  # batch 2 with step mode compiled runs eagerly on CPU: counted as such
        (r,) = bench.main(["--model", "tiny", "--batch", "2", "--tokens", "3", "--scales", "1", "--repeats", "1",
                           "--warmup", "0", "--threads", "1", "--step-mode", "compiled"])
    finally:
        torch.set_num_threads(threads)
    assert r.step_mode == "compiled" and r.scales[0]["step_operators"] > 0
