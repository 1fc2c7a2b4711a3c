"""Requests the machine cannot serve are refused before any work, with the estimate; sliding windows keep
only the window states still needed, within a bounded cache (memory does not grow with the grid)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import imagebart_core as ib
from imagebart_core import budget
from imagebart_core.chain.windows import WindowCache
from imagebart_core.original.presets import original_config

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def model():
    return ib.build_model(ib.tiny_config(n_scales=2, conditioning="class"), seed=0)


def test_estimate_is_a_frozen_dataclass_with_a_short_description(model):
    est = ib.estimate_request(model, grid=(8, 8), batch=2)
    assert isinstance(est, ib.RequestEstimate)
    assert est.grid == (8, 8) and est.batch == 2 and est.peak_bytes > 0 and est.seconds > 0
    assert est.describe().startswith("about ") and est.describe().endswith(" on cpu")
    with pytest.raises(AttributeError):
        est.batch = 3  # frozen
    bigger = ib.estimate_request(model, grid=(16, 64), batch=2)
    assert bigger.peak_bytes > est.peak_bytes and bigger.seconds > est.seconds
    assert ib.estimate_request(model, grid=(8, 8), batch=4).peak_bytes > est.peak_bytes


def test_1000x1000_is_refused_within_a_second_with_the_estimate():
    """A real-size model (the cIN release's architecture; config only, nothing is built) on the CPU."""
    cfg = original_config("cin_5_scales_custom")
    t0 = time.perf_counter()
    with pytest.raises(ib.RequestTooLarge, match=r"1000x1000 grid, batch 1, needs about .* days on cpu") as info:
        ib.check_request(cfg, grid=(1000, 1000), batch=1)
    assert time.perf_counter() - t0 < 1.0
    assert "largest grid that fits is" in str(info.value)
    assert isinstance(info.value, ValueError) and info.value.estimate.grid == (1000, 1000)


def test_the_model_refuses_a_1000x1000_sample_before_any_work(model):
    model.max_request_seconds = 3600.0  # the tiny model needs hours for it on this CPU
    calls = []
    try:
        t0 = time.perf_counter()
        with pytest.raises(ib.RequestTooLarge, match=r"sample of a 1000x1000 grid.*needs about .* on cpu") as info:
            model.sample(1, cond=model.class_condition(0), grid=(1000, 1000), callback=calls.append)
        assert time.perf_counter() - t0 < 1.0
    finally:
        model.max_request_seconds = budget.DEFAULT_MAX_SECONDS
    assert not calls  # no token step ran
    best = info.value.args[0].split("largest grid that fits is ")[1].split(" tokens")[0]
    h, w = map(int, best.split("x"))
    assert budget.estimate_request(model, grid=(h, w), batch=1).seconds <= 3600.0 < \
        budget.estimate_request(model, grid=(h + 1, w + 1), batch=1).seconds


def test_random_codes_of_an_absurd_grid_never_allocates(model, monkeypatch):
    def no_allocation(*args, **kwargs):
        raise AssertionError("tried to allocate")

    monkeypatch.setattr(ib.rng, "randint", no_allocation)  # the chain draws noise codes through rng
    t0 = time.perf_counter()
    with pytest.raises(ib.RequestTooLarge, match=r"random codes of a 1000000x1000000 grid.*TB"):
        model.random_codes(1, grid=(10**6, 10**6))
    assert time.perf_counter() - t0 < 1.0


def test_memory_refusal_names_the_largest_grid_that_fits(model):
    est = ib.estimate_request(model, grid=(64, 64), batch=2)
    with pytest.raises(ib.RequestTooLarge, match=r"only .* of memory is usable.*largest grid that fits is \d+x\d+"):
        ib.check_request(model, grid=(64, 64), batch=2, available_bytes=est.peak_bytes // 2)
    with pytest.raises(ib.RequestTooLarge, match="use a smaller batch"):
        ib.check_request(model, grid=(4, 4), batch=2, available_bytes=10)
    assert ib.check_request(model, grid=(64, 64), batch=2, available_bytes=est.peak_bytes * 2) == est


def test_encode_and_decode_are_checked_before_any_copy(model):
    huge = torch.zeros(1, 3, 1, 1).expand(64, 3, 16384, 16384)  # a view: no memory behind it
    with pytest.raises(ib.RequestTooLarge, match=r"encode of a 4096x4096 grid, batch 64, needs about .* GB"):
        model.encode(huge)
    est = ib.estimate_request(model, grid=(4096, 4096), batch=64, operation="decode")
    assert est.peak_bytes > 10**11


def test_window_cache_keeps_one_band_within_its_budget():
    class State:  # a stand-in with the attributes state_bytes reads
        def __init__(self, n):
            self.caches, self.cross_kv = [], [(torch.zeros(n), torch.zeros(n))]

    cache = WindowCache(max_bytes=3 * 8 * 10)  # room for three states of 2 x 10 floats... and no more
    for c in range(5):
        assert cache.get((0, c)) is None
        cache.put((0, c), State(10))
    assert sorted(cache.states) == [(0, 0), (0, 1), (0, 2)] and cache.bytes == 240
    assert cache.get((0, 1)) is not None
    assert cache.get((2, 0)) is None and cache.states == {} and cache.bytes == 0  # the band is left: dropped


def test_results_do_not_depend_on_the_window_cache(model):
    cond = model.class_condition([1, 2])
    model.window_cache_bytes = 0
    try:
        small = model.sample(2, cond=cond, grid=(6, 10), seed=3)
    finally:
        model.window_cache_bytes = ib.chain.windows.DEFAULT_WINDOW_CACHE_BYTES
    assert torch.equal(small.tokens, model.sample(2, cond=cond, grid=(6, 10), seed=3).tokens)


def _window_peak(factor: int, cache_bytes: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="65536",
               PYTHONPATH=os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, str(TESTS / "_window_memory.py"), str(factor), str(cache_bytes)],
                         capture_output=True, text=True, env=env, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_window_memory_does_not_grow_with_the_grid():
    """8x the trained width peaks at no more than 1.5x the memory of 2x (subprocess, resident set size), with
    the cache bounded below the states of all windows; without the bound it grows (the test can fail)."""
    bound = 8 * 2**20
    two, eight = _window_peak(2, bound), _window_peak(8, bound)
    print(f"window transition peaks: 2x {two['peak_bytes'] / 1e6:.1f} MB ({two['seconds']:.1f} s), "  # noqa: T201
          f"8x {eight['peak_bytes'] / 1e6:.1f} MB ({eight['seconds']:.1f} s)")
    assert eight["peak_bytes"] <= 1.5 * two["peak_bytes"]
    unbounded = _window_peak(8, 2**40)
    print(f"8x with every window kept: {unbounded['peak_bytes'] / 1e6:.1f} MB")  # noqa: T201
    assert unbounded["peak_bytes"] > 1.5 * two["peak_bytes"]
