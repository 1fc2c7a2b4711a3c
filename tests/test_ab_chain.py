"""The same-run A/B tool (tools/ab_chain.py) on the tiny config: both sides time real chains in child processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools import ab_chain

REPO = Path(__file__).resolve().parent.parent


def test_ab_chain_times_both_checkouts(tmp_path):
    out = tmp_path / "ab.json"
    payload = ab_chain.main(["--a", str(REPO), "--b", str(REPO), "--model", "tiny", "--rounds", "1",
                             "--threads", "1", "--json", str(out)])
    (result,) = payload["results"]
    assert len(result["runs"]["a"]) == len(result["runs"]["b"]) == 1
    for side in ("a", "b"):
        run = result["runs"][side][0]
        assert run["chain_s"] >= run["sample_s"] > 0 and run["decode_s"] > 0
    assert result["speedup_b_over_a"] == pytest.approx(result["a_chain_s"] / result["b_chain_s"])
    assert json.loads(out.read_text())["results"][0]["dtype"] == "fp32"


def test_ab_chain_refuses_a_folder_that_is_no_checkout(tmp_path):
    with pytest.raises(SystemExit):
        ab_chain.main(["--a", str(tmp_path), "--model", "tiny"])


def test_ab_chain_sets_the_step_mode_of_side_b_only(tmp_path):
    payload = ab_chain.main(["--a", str(REPO), "--b", str(REPO), "--model", "tiny", "--rounds", "1",
                             "--threads", "1", "--b-step-mode", "static"])
    (result,) = payload["results"]
    a, b = result["runs"]["a"][0], result["runs"]["b"][0]
    assert (a["step_mode"], b["step_mode"]) == ("eager", "static")
    assert a["first_chain_s"] is None and b["first_chain_s"] > 0  # B ran one untimed chain first
    assert payload["b_step_mode"] == "static"
