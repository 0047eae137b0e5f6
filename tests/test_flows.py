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


# --- the fused computation (issue 9): same function as the official per-network one -------


def _per_net_reference(flow: RealNVP, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The official RealNVP.forward (rlepose/models/layers/real_nvp.py), network by network."""
    z, ladj = x, x.new_zeros(x.shape[0])
    for i in reversed(range(len(flow.s))):
        b = flow.mask[i]
        z_ = b * z
        s = flow.s[i](z_) * (1 - b)
        t = flow.t[i](z_) * (1 - b)
        z = (1 - b) * (z - t) * torch.exp(-s) + z_
        ladj = ladj - s.sum(dim=1)
    return z, ladj


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_flow_equals_the_per_network_computation(dim, dtype):
    flow = _random_flow(dim, seed=4, dtype=dtype)
    x = 2 * torch.randn(500, dim, dtype=dtype, requires_grad=True)
    z, ladj = flow(x)
    z_ref, ladj_ref = _per_net_reference(flow, x)
    assert not torch.allclose(z_ref, x, atol=1e-2), "the test flow must not be the identity"
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(z, z_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(ladj, ladj_ref, rtol=tol, atol=tol)
    # gradients with respect to the input and to every parameter of every s- and t-network
    inputs = [x, *flow.parameters()]
    grads = torch.autograd.grad((z.square().sum() + ladj.sum()), inputs)
    grads_ref = torch.autograd.grad((z_ref.square().sum() + ladj_ref.sum()), inputs)
    for (name, _), g, g_ref in zip(
        [("x", x), *flow.named_parameters()], grads, grads_ref, strict=True
    ):
        scale = float(g_ref.abs().max())
        assert float((g - g_ref).abs().max()) <= 10 * tol * max(scale, 1.0), name
    # the generative direction, and inputs with leading batch dimensions
    torch.testing.assert_close(flow.inverse(z_ref), x, rtol=tol, atol=100 * tol)
    z3, ladj3 = flow(x.detach().reshape(5, 100, dim))
    torch.testing.assert_close(z3.reshape(500, dim), z.detach(), rtol=0, atol=tol)
    torch.testing.assert_close(ladj3.reshape(500), ladj.detach(), rtol=0, atol=tol)


def test_other_masks_and_parametrized_activations_use_the_per_network_computation():
    flow = _random_flow(3, seed=5)
    state = flow.state_dict()
    state["mask"] = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]] * 3, dtype=torch.float64)
    flow.load_state_dict(state)  # not two alternating blocks: the fused path does not apply
    x = torch.randn(50, 3, dtype=torch.float64)
    z, ladj = flow(x)
    z_ref, ladj_ref = _per_net_reference(flow, x)
    torch.testing.assert_close(z, z_ref, rtol=0, atol=0)
    torch.testing.assert_close(ladj, ladj_ref, rtol=0, atol=0)
    torch.testing.assert_close(flow.inverse(z), x, rtol=0, atol=1e-10)
    # the official masks again: back to the fused path, still the same function
    state["mask"] = coupling_masks(3, 6).double()
    flow.load_state_dict(state)
    torch.testing.assert_close(flow(x)[0], _per_net_reference(flow, x)[0], rtol=1e-12, atol=1e-12)

    prelu = RealNVP(dim=2, act_layer=nn.PReLU).double()  # an activation with a parameter
    x2 = torch.randn(40, 2, dtype=torch.float64)
    torch.testing.assert_close(prelu(x2)[0], _per_net_reference(prelu, x2)[0], rtol=0, atol=0)


def test_a_state_dict_in_the_official_layout_loads_and_gives_the_same_density():
    """Checkpoints written before the fused computation (and official ones) load unchanged."""
    old = _random_flow(2, seed=6)
    # the layout every earlier posereg checkpoint has: mask, s.{i}.{j}, t.{i}.{j}, the prior
    state = {k: v.clone() for k, v in old.state_dict().items()}
    assert {"s.0.0.weight", "s.5.4.bias", "t.0.2.weight", "t.5.4.bias", "mask"} <= set(state)
    new = RealNVP(dim=2).double()
    new.load_state_dict(state, strict=True)
    x = torch.randn(100, 2, dtype=torch.float64)
    z_ref, ladj_ref = _per_net_reference(old, x)
    log_prob_ref = old.prior_log_prob(z_ref) + ladj_ref
    torch.testing.assert_close(new.log_prob(x), log_prob_ref, rtol=1e-12, atol=1e-12)
    assert set(new.state_dict()) == set(state)  # and saves in the same layout
