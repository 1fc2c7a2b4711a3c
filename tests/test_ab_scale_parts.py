"""The per-part A/B tool (tools/ab_scale_parts.py) on the tiny config: both sides time real parts in child processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools import ab_scale_parts

REPO = Path(__file__).resolve().parent.parent


def test_ab_scale_parts_times_every_scale_and_batch_on_both_sides(tmp_path):
    out = tmp_path / "ab.json"
    payload = ab_scale_parts.main(["--a", str(REPO), "--b", str(REPO), "--model", "tiny", "--dtype", "fp32", "bf16",
                                   "--scales", "1", "3", "--batch", "1", "2", "--steps", "2", "--threads", "1",
                                   "--json", str(out)])
    assert [r["dtype"] for r in payload["results"]] == ["fp32", "bf16"]
    for result in payload["results"]:
        for side in ("a", "b"):
            r = result[side]
            assert not r["timed_out"]
            assert [(p["scale"], p["batch"]) for p in r["parts"]] == [(1, 1), (1, 2), (3, 1), (3, 2)]
            assert all(p["prepare_s"] > 0 and p["ms_per_step"] > 0 for p in r["parts"])
    assert json.loads(out.read_text())["model"] == "tiny"


def test_a_side_past_its_timeout_is_stopped_and_marked():
    r = ab_scale_parts.run_side(REPO, "tiny", "fp32", [1, 2, 3], [1], threads=1, steps=2, timeout=0.5)
    assert r["timed_out"] and r["parts"] == []  # importing torch alone takes longer


def test_ab_scale_parts_refuses_a_folder_that_is_no_checkout(tmp_path):
    with pytest.raises(SystemExit):
        ab_scale_parts.main(["--a", str(tmp_path), "--model", "tiny"])
