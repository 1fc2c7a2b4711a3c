"""The multinomial diffusion: schedules, marginals, posterior, KL, seeded draws."""

from __future__ import annotations

import pytest
import torch

from imagebart_core import rng
from imagebart_core.diffusion import MultinomialDiffusion
from imagebart_core.schedule import betas_from_alpha_bar, betas_from_metric_curve, geometric_betas

K = 5


def transition_matrix(beta: float, k: int = K) -> torch.Tensor:
    """Q[i, j] = q(x_l = j | x_{l-1} = i), float64, built from the definition (eq. 5)."""
    return (1 - beta) * torch.eye(k, dtype=torch.float64) + beta / k


@pytest.fixture
def diffusion() -> MultinomialDiffusion:
    return MultinomialDiffusion([0.0, 0.2, 0.35, 0.6, 1.0], K)


def test_geometric_schedule_matches_the_original_float32_values():
    betas = torch.tensor(geometric_betas(4), dtype=torch.float32)
    assert torch.equal(betas, torch.tensor([0.0, 0.25, 0.33333334, 0.5, 1.0], dtype=torch.float32))
    d = MultinomialDiffusion(geometric_betas(4), 548)
    expected = torch.tensor([1.0, 0.75, 0.49999997, 0.24999999, 0.0], dtype=torch.float32)
    assert torch.equal(d.alpha_bar, expected)


def test_alpha_bar_list_round_trips_and_rejects_bad_lists():
    betas = betas_from_alpha_bar([1.0, 0.8, 0.5, 0.0])
    d = MultinomialDiffusion(betas, K)
    assert torch.allclose(d.alpha_bar, torch.tensor([1.0, 0.8, 0.5, 0.0]), atol=1e-7)
    assert betas[-1] == 1.0
    with pytest.raises(ValueError, match="start at 1"):
        betas_from_alpha_bar([0.9, 0.0])
    with pytest.raises(ValueError, match="increase"):
        betas_from_alpha_bar([1.0, 0.4, 0.6, 0.0])


def test_metric_curve_schedule_equalises_the_metric():
    grid = torch.linspace(1, 0, 20).tolist()
    metric = [1.0 + 3.0 * (1 - a) ** 2 for a in grid]  # monotone: rises as codes are corrupted
    betas = betas_from_metric_curve(grid, metric, n_scales=3)
    d = MultinomialDiffusion(betas, K)
    abar = d.alpha_bar.double()
    # the metric at the chain's alpha-bars is (close to) equally spaced between its extremes
    values = 1.0 + 3.0 * (1 - abar) ** 2
    steps = values[1:] - values[:-1]
    assert torch.allclose(steps, steps.mean().expand_as(steps), atol=0.05)
    assert betas[0] == 0.0 and betas[-1] == 1.0


def test_marginal_equals_composition_of_single_steps(diffusion):
    for level in range(1, diffusion.num_levels + 1):
        composed = torch.eye(K, dtype=torch.float64)
        for step_level in range(2, level + 1):
            composed = composed @ transition_matrix(float(diffusion.betas[step_level - 1]))
        x1 = torch.arange(K)
        closed = diffusion.marginal_probs(x1, level).double()  # [K, K]: row x1
        assert torch.allclose(closed, composed, atol=1e-6), level


def test_step_probs_are_the_definition(diffusion):
    x = torch.arange(K)
    assert torch.allclose(diffusion.step_probs(x, 3).double(), transition_matrix(0.35), atol=1e-7)


def test_posterior_sums_to_one_and_equals_brute_force_bayes(diffusion):
    for level in range(2, diffusion.num_levels + 1):
        prior = torch.eye(K, dtype=torch.float64)  # q(x_{l-1} | x_1) by composing single steps
        for step_level in range(2, level):
            prior = prior @ transition_matrix(float(diffusion.betas[step_level - 1]))
        forward = transition_matrix(float(diffusion.betas[level - 1]))  # q(x_l | x_{l-1})
        for x1 in range(K):
            for xt in range(K):
                joint = forward[:, xt] * prior[x1]  # over x_{l-1} = k
                brute = joint / joint.sum()
                post = diffusion.posterior_probs(torch.tensor([xt]), torch.tensor([x1]), level)[0].double()
                assert post.sum().item() == pytest.approx(1.0, abs=1e-6)
                assert torch.allclose(post, brute, atol=1e-6), (level, x1, xt)


def test_posterior_at_the_top_level_is_the_marginal(diffusion):
    x1 = torch.tensor([2, 4])
    top = diffusion.num_levels
    post = diffusion.posterior_probs(torch.tensor([0, 1]), x1, top)
    assert torch.allclose(post, diffusion.marginal_probs(x1, top - 1), atol=1e-6)


def test_posterior_at_level_two_is_one_hot_at_the_clean_code(diffusion):
    x1 = torch.tensor([3])
    post = diffusion.posterior_probs(torch.tensor([1]), x1, 2)
    assert torch.allclose(post, torch.nn.functional.one_hot(x1, K).float(), atol=1e-7)


def test_kl_is_zero_exactly_when_the_model_is_the_posterior(diffusion):
    x1 = torch.randint(0, K, (64,), generator=torch.Generator().manual_seed(0))
    xt = torch.randint(0, K, (64,), generator=torch.Generator().manual_seed(1))
    for level in (2, 3, diffusion.num_levels):
        log_post = diffusion.log_posterior(xt, x1, level)
        kl_same = MultinomialDiffusion.kl(log_post, log_post + 7.0)  # logits up to a constant
        assert kl_same.abs().max().item() < 1e-6
        other = torch.randn(64, K, generator=torch.Generator().manual_seed(level))
        assert (MultinomialDiffusion.kl(log_post, other) > 1e-4).all()


def test_kl_ignores_zero_probability_terms():
    log_target = torch.log(torch.tensor([[1.0, 0.0, 0.0]]))
    logits = torch.tensor([[5.0, -3.0, 0.0]])
    expected = -torch.log_softmax(logits, -1)[0, 0]
    assert MultinomialDiffusion.kl(log_target, logits).item() == pytest.approx(expected.item(), rel=1e-6)


def test_seeded_draws_are_per_item_and_follow_the_distribution(diffusion):
    x1 = torch.zeros(2, 4000, dtype=torch.long)
    gens = rng.generators([7, 8], "t")
    a = diffusion.sample_marginal(x1, 3, gens)
    b = diffusion.sample_marginal(x1[1:], 3, rng.generators([8], "t"))
    assert torch.equal(a[1:], b)  # item 1 does not depend on item 0
    keep = float(diffusion.alpha_bar[2])
    frac_zero = (a == 0).double().mean().item()
    assert frac_zero == pytest.approx(keep + (1 - keep) / K, abs=0.03)
    top = diffusion.sample_marginal(x1, diffusion.num_levels, gens)
    counts = torch.bincount(top.flatten(), minlength=K).double() / top.numel()
    assert torch.allclose(counts, torch.full((K,), 1 / K, dtype=torch.float64), atol=0.02)


def test_posterior_sampling_follows_the_posterior(diffusion):
    n = 6000
    x1 = torch.full((1, n), 1)
    xt = torch.full((1, n), 3)
    draws = diffusion.sample_posterior(xt, x1, 3, rng.generators([0], "p"))
    freq = torch.bincount(draws.flatten(), minlength=K).double() / n
    post = diffusion.posterior_probs(torch.tensor([3]), torch.tensor([1]), 3)[0].double()
    assert torch.allclose(freq, post, atol=0.03)


def test_bad_levels_raise(diffusion):
    with pytest.raises(ValueError, match="level"):
        diffusion.marginal_probs(torch.tensor([0]), 0)
    with pytest.raises(ValueError, match="level"):
        diffusion.log_posterior(torch.tensor([0]), torch.tensor([0]), 1)
