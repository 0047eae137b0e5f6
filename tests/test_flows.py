"""RealNVP: invertibility, Jacobian, normalization and sampling (mathematical properties)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from posereg.flows import RealNVP, coupling_masks


def _random_flow(dim: int, seed: int = 0, gain: float = 1.0, dtype=torch.float64) -> RealNVP:
    """A flow far from the identity: the official gain 0.01 would make every test trivial."""
    torch.manual_seed(seed)
    flow = RealNVP(dim=dim, init_gain=gain).to(dtype)
    with torch.no_grad():
        for m in flow.modules():
            if isinstance(m, nn.Linear):
                m.bias.normal_(0.0, 0.3)
    return flow


def test_official_masks_and_architecture():
    assert coupling_masks(2, 6).tolist() == [[0, 1], [1, 0]] * 3
    assert coupling_masks(3, 6).tolist() == [[0, 0, 1], [1, 1, 0]] * 3
    flow = RealNVP(dim=2)
    assert flow.num_layers == 6
    s_net, t_net = flow.s[0], flow.t[0]
    assert [type(m) for m in s_net] == [
        nn.Linear,
        nn.LeakyReLU,
        nn.Linear,
        nn.LeakyReLU,
        nn.Linear,
        nn.Tanh,
    ]
    assert [type(m) for m in t_net] == [nn.Linear, nn.LeakyReLU, nn.Linear, nn.LeakyReLU, nn.Linear]
    assert s_net[0].in_features == 2 and s_net[0].out_features == 64 and s_net[2].out_features == 64
    # the prior is a buffer (moves with .to(), saved in state_dict), not a parameter
    names = dict(flow.named_buffers())
    assert {"mask", "prior_loc", "prior_scale"} <= set(names)
    assert "prior_loc" not in dict(flow.named_parameters())
    # state_dict keys follow the official layout (s.i.j, t.i.j, mask)
    keys = set(flow.state_dict())
    assert "s.0.0.weight" in keys and "t.5.4.bias" in keys and "mask" in keys


@pytest.mark.parametrize("dim", [2, 3])
def test_inverse_of_forward_is_identity(dim):
    flow = _random_flow(dim, dtype=torch.float32)
    x = 3 * torch.randn(1000, dim)
    z, _ = flow(x)
    assert not torch.allclose(z, x, atol=1e-2), "the test flow must not be the identity"
    torch.testing.assert_close(flow.inverse(z), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(flow(flow.inverse(x))[0], x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dim", [2, 3])
def test_ladj_equals_slogdet_of_autograd_jacobian(dim):
    flow = _random_flow(dim, seed=1)
    x = 2 * torch.randn(20, dim, dtype=torch.float64)
    with torch.no_grad():
        _, ladj = flow(x)
    for i in range(len(x)):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], x[i])
        sign, logabsdet = torch.linalg.slogdet(jac)
        assert sign != 0
        assert abs(float(logabsdet - ladj[i])) < 1e-10


def test_log_prob_integrates_to_one_in_2d():
    flow = _random_flow(2, seed=2)
    n, r = 801, 14.0
    axis = torch.linspace(-r, r, n, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = flow.log_prob(grid).exp().sum() * (2 * r / (n - 1)) ** 2
    assert abs(float(mass) - 1.0) < 0.01


def test_zero_parameters_give_the_standard_normal():
    flow = RealNVP(dim=2)
    with torch.no_grad():
        for p in flow.parameters():
            p.zero_()
    x = torch.randn(50, 2)
    expected = -0.5 * x.square().sum(-1) - math.log(2 * math.pi)
    torch.testing.assert_close(flow.log_prob(x), expected)


def test_samples_follow_the_reported_density():
    """Histogram of samples vs the density integrated per bin: total variation small.

    The same comparison against the prior N(0, I) must fail, so the test can tell densities apart.
    """
    flow = _random_flow(2, seed=3)
    gen = torch.Generator().manual_seed(0)
    samples = flow.sample(200_000, generator=gen)
    lo, hi, bins, sub = -8.0, 8.0, 32, 8
    inside = ((samples > lo) & (samples < hi)).all(-1)
    idx = ((samples[inside] - lo) / (hi - lo) * bins).long().clamp(0, bins - 1)
    empirical = torch.bincount(idx[:, 0] * bins + idx[:, 1], minlength=bins * bins).double() / len(
        samples
    )

    # model probability per bin: midpoint rule on a sub-grid inside each bin
    fine = torch.linspace(lo, hi, bins * sub + 1, dtype=torch.float64)
    mid = (fine[:-1] + fine[1:]) / 2
    pts = torch.stack(torch.meshgrid(mid, mid, indexing="ij"), -1).reshape(-1, 2)
    cell = ((hi - lo) / (bins * sub)) ** 2
    with torch.no_grad():
        dens = flow.log_prob(pts).exp() * cell
        prior = flow.prior_log_prob(pts).exp() * cell
    model = dens.reshape(bins, sub, bins, sub).sum((1, 3)).reshape(-1)
    prior = prior.reshape(bins, sub, bins, sub).sum((1, 3)).reshape(-1)
    tv_model = 0.5 * float((empirical - model).abs().sum())
    tv_prior = 0.5 * float((empirical - prior).abs().sum())
    assert tv_model < 0.02, tv_model
    assert tv_prior > 5 * tv_model, (tv_prior, tv_model)


def test_prior_moves_with_the_module_dtype():
    flow = RealNVP(dim=3).double()
    assert flow.prior_loc.dtype == torch.float64
    x = torch.randn(4, 3, dtype=torch.float64)
    assert flow.log_prob(x).dtype == torch.float64


@pytest.mark.parametrize("bad", [1, 0])
def test_rejects_dimension_below_two(bad):
    with pytest.raises(ValueError, match="dim >= 2"):
        RealNVP(dim=bad)
