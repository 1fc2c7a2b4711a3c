"""Smoke test of scripts/row_product_bench.py on small matrices (eager products only: no compilation)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from imagebart_core.packed import bf16_supported


def _script():
    path = Path(__file__).resolve().parent.parent / "scripts" / "row_product_bench.py"
    spec = importlib.util.spec_from_file_location("row_product_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_row_product_bench_times_every_product_per_dtype():
    threads = torch.get_num_threads()
    try:
        rows = _script().main(["--threads", "1", "--rows", "2", "--out-features", "64", "--in-features", "32",
                               "--matrices", "2"])
    finally:
        torch.set_num_threads(threads)
    assert [r["dtype"] for r in rows] == ["torch.float32", "torch.bfloat16"]
    for r in rows:
        # oneDNN packs bfloat16 only on CPUs with its bfloat16 kernels (AVX-512 / AMX)
        packs = r["dtype"] == "torch.float32" or bf16_supported()
        assert r["rows"] == 2 and set(r["ms_per_matrix"]) == {"F.linear", *(["packed"] if packs else [])}
        assert all(v > 0 for v in r["ms_per_matrix"].values()) and r["one_read_ms"] > 0
