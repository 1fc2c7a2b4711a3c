"""The runtime-precision figures (``python -m tools.precision``) and the JSON docs/performance.md cites."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tools import precision

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT.parent / "shared" / "reference" / "official-fixtures"
FIGURES = REPO_ROOT / "docs" / "bench" / "precision_fixtures.json"
NAME = "ffhq_4_scales_geometric"
FIGURE_KEYS = ("teacher_forced_logits_vs_fp32", "teacher_forced_argmax_changed_vs_fp32",
               "greedy_chain_tokens_changed_vs_fp32", "greedy_per_scale_tokens_changed_vs_fp32")

needs_fixtures = pytest.mark.skipif(not (FIXTURES / NAME).is_dir(),
                                    reason=f"the parity fixtures are not at {FIXTURES} (../shared absent)")


def test_logit_error_and_token_changes_count_what_differs():
    ref = [torch.zeros(1, 2, 3), torch.ones(1, 2, 3) * 4.0]
    moved = [ref[0].clone(), ref[1].clone()]
    moved[1][0, 1, 2] = 5.0  # one logit off by 1 on scale 2
    err = precision.logit_error(moved, ref)
    assert err["per_scale"][0] == {"max_abs": 0.0, "mean_abs": 0.0, "max_rel": 0.0, "max_abs_logit": 0.0}
    assert err["per_scale"][1]["max_abs"] == 1.0 and err["per_scale"][1]["max_rel"] == 0.25
    assert err["max_abs"] == 1.0 and err["mean_abs"] == pytest.approx(1.0 / 12)
    tokens = [torch.tensor([[1, 2, 3], [4, 5, 6]]), torch.tensor([[1, 2, 3], [4, 5, 6]])]
    other = [tokens[0].clone(), tokens[1].clone()]
    other[1][1, 1:] = 0
    ch = precision.token_changes(other, tokens)
    assert ch["changed"] == 2 and ch["tokens"] == 12 and ch["share"] == pytest.approx(2 / 12)
    assert [s["changed"] for s in ch["per_scale"]] == [0, 2] and ch["rows_changed"] == [[2, 1, 1]]
    assert precision.token_changes(tokens, [t.view(2, 1, 3) for t in tokens])["changed"] == 0  # grid vs flat
    with pytest.raises(ValueError, match="scale 1"):
        precision.token_changes([tokens[0][:1]], [tokens[0]])


@pytest.fixture(scope="module")
def ffhq_bf16(tmp_path_factory) -> dict:
    path = precision.convert_fixture(FIXTURES, NAME, tmp_path_factory.mktemp("prec") / "ffhq.safetensors")
    return precision.runtime_precision(path, FIXTURES, NAME, dtypes=("fp32", "bf16"))


@needs_fixtures
def test_fp32_against_itself_is_exact(ffhq_bf16):
    d = ffhq_bf16["dtypes"]["fp32"]
    assert d["weight_dtype"] == "float32"
    err = d["teacher_forced_logits_vs_fp32"]
    assert err["max_abs"] == 0.0 and err["mean_abs"] == 0.0 and len(err["per_scale"]) == ffhq_bf16["scales"] == 4
    for key in FIGURE_KEYS[1:]:
        assert d[key]["changed"] == 0 and d[key]["tokens"] == 4 * 2 * 256


@needs_fixtures
def test_bf16_moves_the_logits_a_little(ffhq_bf16):
    d = ffhq_bf16["dtypes"]["bf16"]
    assert d["weight_dtype"] == "bfloat16"
    err = d["teacher_forced_logits_vs_fp32"]
    for s in err["per_scale"]:
        assert 0.0 < s["max_abs"] and s["mean_abs"] < s["max_abs"]
        assert s["max_rel"] < 0.05, f"bf16 logits off by {s['max_rel']:.3g} of max |logit|: more than rounding"
    assert 0.0 < err["max_rel"] < 0.05
    for key in FIGURE_KEYS[1:]:
        assert 0.0 <= d[key]["share"] < 0.5 and d[key]["tokens"] == 4 * 2 * 256


def test_checked_in_figures_have_the_keys_the_docs_cite():
    figures = json.loads(FIGURES.read_text())
    assert {"command", "date", "torch", "fixtures"} <= set(figures)
    assert figures["command"].startswith("python -m tools.precision")
    for name in precision.FIXTURE_MODELS:
        r = figures["fixtures"][name]
        assert set(r["dtypes"]) == {"fp32", "bf16", "fp16"}
        assert all(r["dtypes"]["fp32"][k]["max_abs" if k == FIGURE_KEYS[0] else "changed"] == 0 for k in FIGURE_KEYS)
        for dt in ("bf16", "fp16"):
            d = r["dtypes"][dt]
            assert set(FIGURE_KEYS) <= set(d)
            assert len(d[FIGURE_KEYS[0]]["per_scale"]) == r["scales"]
            assert {"max_abs", "mean_abs", "max_rel"} <= set(d[FIGURE_KEYS[0]]["per_scale"][0])
            assert all({"changed", "tokens", "share"} <= set(d[k]) for k in FIGURE_KEYS[1:])
    docs = (REPO_ROOT / "docs" / "performance.md").read_text()
    assert "python -m tools.precision" in docs and "precision_fixtures.json" in docs


def test_item_by_item_greedy_tokens_equal_the_batched_ones():
    """The per-item path (batch-1 steps, what ``--step-mode compiled`` measures on CPU) gives the same greedy
    tokens as the batched one, here through the static steps (no compilation)."""
    from imagebart_core.config import tiny_config
    from imagebart_core.random_init import random_model

    model = random_model(tiny_config(n_scales=3, conditioning="class"), seed=2)
    cond = model.class_condition([1, 3])
    (h, w), n = model.config.grid, model.config.grid[0] * model.config.grid[1]
    gen = torch.Generator().manual_seed(0)
    greedy = {f"greedy.scale{t}.x_t": torch.randint(0, model.config.vocab_size, (2, n), generator=gen)
              for t in range(1, 4)}
    with torch.no_grad():
        batched_chain = precision.greedy_chain_tokens(model, 2, cond)
        batched_scales = precision.greedy_scale_tokens(model, greedy, cond)
        model.step_mode = "static"
        items_chain = precision.greedy_chain_tokens(model, 2, cond, item_by_item=True)
        items_scales = precision.greedy_scale_tokens(model, greedy, cond, item_by_item=True)
    for a, b in zip(batched_chain + batched_scales, items_chain + items_scales):
        assert a.shape == b.shape == (2, h, w) and torch.equal(a, b)
