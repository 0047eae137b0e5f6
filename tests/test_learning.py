"""End-to-end learning: RLE on heavy-tailed residuals recovers locations and learns their density."""

from __future__ import annotations

import math

import pytest
import torch

from posereg.losses import RLELoss, build_loss

TRIALS, N_TRAIN, N_TEST, SCALE, DF = 12, 500, 4000, 0.05, 1.5


def _data(seed: int):
    """TRIALS independent 2D locations, each observed N times with Student-t(DF) noise of SCALE."""
    g = torch.Generator().manual_seed(seed)
    mu_true = 0.6 * torch.rand(TRIALS, 2, generator=g) - 0.3  # (T, 2)
    t = torch.distributions.StudentT(DF)
    torch.manual_seed(seed)
    train = mu_true + SCALE * t.sample((N_TRAIN, TRIALS, 2))  # (N, T, 2): B = samples, K = trials
    test = mu_true + SCALE * t.sample((N_TEST, TRIALS, 2))
    return mu_true, train, test


def _fit(criterion, train: torch.Tensor, steps: int = 300):
    """Gradient descent on free (mu, sigma) per trial and on the criterion's flow."""
    mu = train.median(dim=0).values.clone() * 0  # start at 0: nothing given away
    mu.requires_grad_(True)
    sigma_logit = torch.full((TRIALS, 2), -2.0, requires_grad=True)
    params = [{"params": [mu, sigma_logit], "lr": 1e-2}]
    if list(criterion.parameters()):
        params.append({"params": criterion.parameters(), "lr": 3e-3})
    opt = torch.optim.Adam(params)
    weight = torch.ones(N_TRAIN, TRIALS, 1)
    for _ in range(steps):
        pred = mu.expand(N_TRAIN, -1, -1)
        sigma = torch.sigmoid(sigma_logit).expand(N_TRAIN, -1, -1)
        loss = criterion(pred, sigma, train, weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return mu.detach(), torch.sigmoid(sigma_logit).detach()


@pytest.mark.slow
@pytest.mark.parametrize("convention", ["official", "paper"])
def test_rle_recovers_locations_better_than_l2_under_heavy_tails(convention):
    mu_true, train, _ = _data(seed=0)
    mu_rle, _ = _fit(build_loss("rle", convention=convention), train)
    mu_l2 = train.mean(dim=0)  # the exact minimiser of the L2 loss
    mu_l2_gd, _ = _fit(build_loss("l2"), train)
    torch.testing.assert_close(mu_l2_gd, mu_l2, atol=2e-3, rtol=0)  # GD reaches it too
    err_rle = float((mu_rle - mu_true).norm(dim=-1).mean())
    err_l2 = float((mu_l2 - mu_true).norm(dim=-1).mean())
    assert err_rle < 0.5 * err_l2, (err_rle, err_l2)


@pytest.mark.slow
def test_learned_density_beats_a_gaussian_fit_on_held_out_residuals():
    mu_true, train, test = _data(seed=1)
    crit = RLELoss(convention="paper")
    mu, sigma = _fit(crit, train)
    # Held-out log-likelihood per 2D point of the normalised density Q G_phi / (s sigma).
    exact = RLELoss(convention="paper", log_s=True, flow=crit.flow)
    with torch.no_grad():
        loss = exact(
            mu.expand(N_TEST, -1, -1),
            sigma.expand(N_TEST, -1, -1),
            test,
            torch.ones(N_TEST, TRIALS, 1),
        )
    ll_rle = -float(loss) / TRIALS
    # Gaussian maximum-likelihood fit per trial and coordinate.
    m, s = train.mean(0), train.std(0)
    ll_gauss = float(torch.distributions.Normal(m, s).log_prob(test).sum(-1).mean())
    assert ll_rle > ll_gauss + 0.5, (ll_rle, ll_gauss)
    # and the true density (Student-t) bounds it from above, up to estimation noise
    ll_true = float(
        (torch.distributions.StudentT(DF).log_prob((test - mu_true) / SCALE) - math.log(SCALE))
        .sum(-1)
        .mean()
    )
    assert ll_rle < ll_true + 0.05, (ll_rle, ll_true)
