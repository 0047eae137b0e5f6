"""The loss family: closed forms, the official convention, the gradient shortcut, robustness."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from posereg.flows import RealNVP
from posereg.losses import LOSSES, DLELoss, RLELoss, build_loss

LOG2PI = math.log(2 * math.pi)


def _identity_flow(dim: int = 2) -> RealNVP:
    """All parameters zero: s = t = 0, so G_phi is exactly N(0, I)."""
    flow = RealNVP(dim=dim).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.zero_()
    return flow


def _random_flow(dim: int = 2, seed: int = 0) -> RealNVP:
    torch.manual_seed(seed)
    return RealNVP(dim=dim, init_gain=1.0).double()


def _inputs(b=3, k=5, d=2, seed=0, weight_dims=1):
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(b, k, d, generator=g, dtype=torch.float64) - 0.5
    target = pred + 0.05 * torch.randn(b, k, d, generator=g, dtype=torch.float64)
    sigma = 0.02 + 0.2 * torch.rand(b, k, d, generator=g, dtype=torch.float64)
    weight = (torch.rand(b, k, weight_dims, generator=g) > 0.3).double()
    weight[0, 0] = 1.0
    return pred, sigma, target, weight


# --- hand-computed values ------------------------------------------------------------------

PRED = torch.tensor([[[0.1, -0.2], [0.3, 0.0]], [[0.0, 0.0], [-0.4, 0.25]]], dtype=torch.float64)
TARGET = torch.tensor([[[0.0, 0.1], [0.5, 0.0]], [[0.2, -0.1], [0.0, 0.0]]], dtype=torch.float64)
SIGMA = torch.tensor([[[0.1, 0.2], [0.5, 0.25]], [[0.1, 0.1], [0.4, 0.5]]], dtype=torch.float64)
WEIGHT = torch.tensor(
    [[[1.0], [1.0]], [[1.0], [0.0]]], dtype=torch.float64
)  # last keypoint unlabelled


def _hand(term) -> float:
    """Sum of term(pred, sigma, target) over labelled coordinates, / B (= 2)."""
    total = 0.0
    for b in range(2):
        for k in range(2):
            if WEIGHT[b, k, 0] == 0:
                continue
            for d in range(2):
                p, s, t = float(PRED[b, k, d]), float(SIGMA[b, k, d]), float(TARGET[b, k, d])
                total += term(p, s, t)
    return total / 2


@pytest.mark.parametrize(
    ("name", "term"),
    [
        ("l1", lambda p, s, t: abs(t - p)),
        ("l2", lambda p, s, t: (t - p) ** 2),
        ("gaussian_nll", lambda p, s, t: math.log(s) + (t - p) ** 2 / (2 * s * s) + 0.5 * LOG2PI),
        ("laplace_nll", lambda p, s, t: math.log(2 * s) + abs(t - p) / s),
    ],
)
def test_simple_losses_equal_hand_computed_values(name, term):
    loss = build_loss(name)(PRED, SIGMA, TARGET, WEIGHT)
    assert float(loss) == pytest.approx(_hand(term), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(
    ("name", "term"),
    [
        ("l1", lambda p, s, t: (t - p).abs()),
        ("l2", lambda p, s, t: (t - p) ** 2),
        ("gaussian_nll", lambda p, s, t: s.log() + (t - p) ** 2 / (2 * s * s) + 0.5 * LOG2PI),
        ("laplace_nll", lambda p, s, t: (2 * s).log() + (t - p).abs() / s),
    ],
)
def test_simple_losses_in_3d_sum_the_per_coordinate_terms(name, term):
    pred, sigma, target, weight = _inputs(b=4, k=6, d=3, seed=11)
    expected = (term(pred, sigma, target) * weight).sum() / 4
    assert float(build_loss(name, dim=3)(pred, sigma, target, weight)) == pytest.approx(
        float(expected), rel=1e-12
    )


def test_l1_and_l2_ignore_sigma():
    for name in ("l1", "l2"):
        crit = build_loss(name)
        assert float(crit(PRED, SIGMA, TARGET, WEIGHT)) == float(
            crit(PRED, 2 * SIGMA, TARGET, WEIGHT)
        )


# --- flow losses with the identity flow have closed forms ----------------------------------


@pytest.mark.parametrize("dim", [2, 3])
def test_dle_with_identity_flow_is_the_gaussian_nll(dim):
    pred, sigma, target, weight = _inputs(d=dim)
    dle = build_loss("dle", dim=dim, flow=_identity_flow(dim))
    gauss = build_loss("gaussian_nll")
    torch.testing.assert_close(dle(pred, sigma, target, weight), gauss(pred, sigma, target, weight))


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("q", ["laplace", "gaussian"])
def test_paper_rle_with_identity_flow_is_q_plus_gaussian(q, dim):
    pred, sigma, target, weight = _inputs(seed=1, d=dim)
    rle = build_loss("rle", dim=dim, q=q, convention="paper", flow=_identity_flow(dim))
    bar = (target - pred) / sigma
    neg_log_q = bar.abs() + math.log(2) if q == "laplace" else 0.5 * bar**2 + 0.5 * LOG2PI
    neg_log_g = 0.5 * bar**2 + 0.5 * LOG2PI  # N(0, I) per coordinate
    expected = ((neg_log_q + neg_log_g + sigma.log()) * weight).sum() / pred.shape[0]
    torch.testing.assert_close(rle(pred, sigma, target, weight), expected)


# --- the official convention ---------------------------------------------------------------


def _official_rle_transcription(flow, pred_jts, sigma, gt_uv, gt_uv_weight):
    """rlepose/models/regression_nf.py (nf_loss) + rlepose/models/criterion.py (RLELoss), verbatim
    in structure: the reference the 'official' convention must reproduce."""
    batch_size, num_joints = pred_jts.shape[:2]
    bar_mu = (pred_jts - gt_uv) / sigma
    log_phi = flow.log_prob(bar_mu.reshape(-1, pred_jts.shape[2])).reshape(
        batch_size, num_joints, 1
    )
    nf_loss = torch.log(sigma) - log_phi
    amp = 1 / math.sqrt(2 * math.pi)

    def log_q(gt_uv, pred_jts, sigma):
        return torch.log(sigma / amp) + torch.abs(gt_uv - pred_jts) / (math.sqrt(2) * sigma + 1e-9)

    # 2D (criterion.RLELoss) weights the flow term with gt_uv_weight[:, :, :1]; 3D
    # (criterion.RLELoss3D) with the whole per-coordinate gt_uvd_weight: equal for weights that
    # are the same over the coordinates of a keypoint (as every dataset's are)
    nf_loss = nf_loss * (gt_uv_weight[:, :, :1] if pred_jts.shape[2] == 2 else gt_uv_weight)
    q_logprob = log_q(gt_uv, pred_jts, sigma) * gt_uv_weight
    loss = nf_loss + q_logprob
    if gt_uv_weight.sum() > 0:
        return loss.sum() / len(loss)
    return loss.sum()


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("weight_dims", [1, "D"])
def test_official_convention_equals_the_official_formula(seed, weight_dims, dim):
    flow = _random_flow(dim=dim, seed=seed)
    pred, sigma, target, weight = _inputs(b=8, k=17, d=dim, seed=seed)
    if weight_dims == "D" or dim == 3:  # RLELoss3D's weight is per coordinate
        weight = weight.expand(-1, -1, dim).clone()
    rle = build_loss("rle", dim=dim, flow=flow)  # official is the default
    assert rle.convention == "official" and rle.q == "laplace"
    ours = rle(pred, sigma, target, weight)
    ref = _official_rle_transcription(flow, pred, sigma, target, weight)
    assert abs(float((ours - ref).detach())) < 1e-6
    # and in float32, the dtype training runs in
    f32 = [t.float() for t in (pred, sigma, target, weight)]
    rle32 = build_loss("rle", dim=dim, flow=flow.float())
    ref32 = _official_rle_transcription(flow, *f32[:3], f32[3])
    err32 = abs(float(rle32(*f32).detach() - ref32.detach()))
    assert err32 <= 1e-6 * max(1.0, abs(float(ref32.detach())))


@pytest.mark.parametrize("dim", [2, 3])
def test_official_and_paper_differ_by_the_documented_terms(dim):
    """Per keypoint the official loss is 2 sum log sigma - D log phi + sum |d| / (sqrt2 sigma) + D log(1/amp)."""
    flow = _identity_flow(dim)
    pred, sigma, target, weight = _inputs(seed=3, d=dim)
    official = build_loss("rle", dim=dim, flow=flow)(pred, sigma, target, weight)
    bar = (pred - target) / sigma
    log_phi = -0.5 * (bar**2).sum(-1, keepdim=True) - 0.5 * dim * LOG2PI
    per_kp = (
        2 * sigma.log().sum(-1, keepdim=True)
        - dim * log_phi
        + ((target - pred).abs() / (math.sqrt(2) * sigma + 1e-9)).sum(-1, keepdim=True)
        + dim * math.log(math.sqrt(2 * math.pi))
    )
    torch.testing.assert_close(official, (per_kp * weight).sum() / pred.shape[0])


# --- the gradient shortcut -----------------------------------------------------------------


class _ConstantDensity(nn.Module):
    """log_prob independent of x: a 'flow' that carries no gradient to the residual."""

    def __init__(self):
        super().__init__()
        self.c = nn.Parameter(torch.tensor(-1.5, dtype=torch.float64))

    def log_prob(self, x):
        return self.c.expand(x.shape[0])


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("convention", ["official", "paper"])
def test_rle_gradient_reaches_mu_without_the_flow(convention, dim):
    pred, sigma, target, weight = _inputs(seed=4, d=dim)
    pred.requires_grad_(True)
    rle = build_loss("rle", dim=dim, convention=convention, flow=_ConstantDensity())
    (grad,) = torch.autograd.grad(rle(pred, sigma, target, weight), pred)
    # d(-log Q)/d mu alone: the Laplace term's sign(mu - mu_g) / scale
    scale = math.sqrt(2) * sigma + 1e-9 if convention == "official" else sigma
    expected = torch.sign(pred - target) / scale * weight / pred.shape[0]
    torch.testing.assert_close(grad, expected.detach())
    assert grad.abs().sum() > 0
    # DLE has no such shortcut: through a constant density, no gradient reaches mu
    dle = build_loss("dle", dim=dim, flow=_ConstantDensity())
    (grad_dle,) = torch.autograd.grad(dle(pred, sigma, target, weight), pred, allow_unused=True)
    assert grad_dle is None or float(grad_dle.abs().max()) == 0.0


def test_zero_parameter_flow_adds_only_the_gaussian_prior_to_the_mu_gradient():
    pred, sigma, target, weight = _inputs(seed=5)
    pred.requires_grad_(True)
    rle = build_loss("rle", convention="paper", flow=_identity_flow())
    (grad,) = torch.autograd.grad(rle(pred, sigma, target, weight), pred)
    bar = (target - pred.detach()) / sigma
    d_neg_log_q = -torch.sign(bar) / sigma  # d|bar|/d mu
    d_gauss = -bar / sigma  # d(bar^2 / 2)/d mu
    torch.testing.assert_close(grad, (d_neg_log_q + d_gauss) * weight / pred.shape[0])


# --- robustness ----------------------------------------------------------------------------

ALL_VARIANTS = [
    ("l1", {}),
    ("l2", {}),
    ("gaussian_nll", {}),
    ("laplace_nll", {}),
    ("dle", {}),
    ("rle", {}),
    ("rle", {"q": "gaussian"}),
    ("rle", {"convention": "paper"}),
    ("rle", {"convention": "paper", "q": "gaussian", "log_s": True}),
]


def _cheap(options: dict, dim: int) -> dict:
    """In 3D, a 16^3 log s grid instead of 48^3 (the property tested does not depend on it)."""
    return {**options, "log_s_points": 16} if options.get("log_s") and dim == 3 else options


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize(("name", "options"), ALL_VARIANTS)
def test_all_zero_weights_give_a_finite_zero_loss_and_zero_gradient(name, options, dim):
    crit = build_loss(name, dim=dim, **_cheap(options, dim))
    pred, sigma, target, _ = (t.float() for t in _inputs(seed=6, d=dim))
    pred.requires_grad_(True)
    sigma.requires_grad_(True)
    loss = crit(pred, sigma, target, torch.zeros(3, 5, 1))
    loss.backward()
    assert torch.isfinite(loss) and float(loss) == 0.0
    assert float(pred.grad.abs().max()) == 0.0
    assert sigma.grad is None or float(sigma.grad.abs().max()) == 0.0  # l1/l2 never touch sigma
    for p in crit.parameters():
        assert p.grad is None or float(p.grad.abs().max()) == 0.0


@pytest.mark.parametrize(("name", "options"), ALL_VARIANTS)
@pytest.mark.parametrize(
    ("residual", "sigma_value"), [(1e3, 1e-6), (1e3, 0.5), (0.0, 1e-6), (1.0, 0.0)]
)
@pytest.mark.parametrize("dim", [2, 3])
def test_extreme_residuals_and_sigmas_stay_finite(name, options, residual, sigma_value, dim):
    crit = build_loss(name, dim=dim, **_cheap(options, dim))
    pred = torch.zeros(2, 17, dim, requires_grad=True)
    target = torch.full((2, 17, dim), residual)
    target[0] *= -1
    sigma = torch.full((2, 17, dim), sigma_value, requires_grad=True)
    loss = crit(pred, sigma, target, torch.ones(2, 17, 1))
    loss.backward()
    assert torch.isfinite(loss), float(loss)
    assert torch.isfinite(pred.grad).all()
    assert sigma.grad is None or torch.isfinite(sigma.grad).all()
    for p in crit.parameters():
        assert torch.isfinite(p.grad).all()


def test_loss_can_be_negative_and_is_not_clamped():
    pred = torch.zeros(1, 1, 2)
    sigma = torch.full((1, 1, 2), 0.01)
    for convention in ("official", "paper"):
        loss = build_loss("rle", convention=convention)(
            pred, sigma, pred.clone(), torch.ones(1, 1, 1)
        )
        assert float(loss) < -5.0  # a sharp density at its mode exceeds 1 by far


# --- the exact normalizer log s (appendix E) -----------------------------------------------


@pytest.mark.parametrize(
    ("q", "s_per_dim"),
    [
        ("gaussian", 1 / (2 * math.sqrt(math.pi))),  # integral of N(x)^2
        ("laplace", math.exp(0.5) * 0.5 * math.erfc(1 / math.sqrt(2))),  # integral e^-|x|/2 N(x)
    ],
)
def test_log_normalizer_matches_the_closed_form_for_the_identity_flow(q, s_per_dim):
    exact = 2 * math.log(s_per_dim)

    def error(points: int) -> float:
        rle = RLELoss(
            q=q, convention="paper", log_s=True, log_s_points=points, flow=_identity_flow()
        )
        return abs(float(rle.log_normalizer(dtype=torch.float64, method="grid").detach()) - exact)

    # default grid (256 cells on [-10, 10]): the Riemann sum's discretisation error is < 1e-3
    assert error(256) < 1e-3
    # and it converges: halving the cell size cuts the error at least 3x (second order)
    assert error(512) < error(256) / 3 or error(512) < 1e-9


@pytest.mark.parametrize(
    ("q", "s_per_dim", "tolerance"),
    [
        ("gaussian", 1 / (2 * math.sqrt(math.pi)), 1e-9),
        # the 3D default grid (48 cells per axis on [-10, 10]) is coarse for the Laplace kink:
        # log s is off by 0.034 (a constant: it shifts the loss, not the gradients of mu, sigma)
        ("laplace", math.exp(0.5) * 0.5 * math.erfc(1 / math.sqrt(2)), 0.04),
    ],
)
@pytest.mark.slow
def test_log_normalizer_in_3d_matches_the_closed_form_and_converges(q, s_per_dim, tolerance):
    exact = 3 * math.log(s_per_dim)

    def error(points: int | None) -> float:
        rle = RLELoss(
            dim=3, q=q, convention="paper", log_s=True, log_s_points=points, flow=_identity_flow(3)
        )
        return abs(float(rle.log_normalizer(dtype=torch.float64, method="grid").detach()) - exact)

    assert error(None) < tolerance
    assert error(48) < error(24) / 3 or error(48) < 1e-9


def test_log_s_adds_the_normalizer_per_labelled_keypoint():
    flow = _random_flow(seed=7)
    pred, sigma, target, weight = _inputs(seed=7)
    plain = RLELoss(convention="paper", flow=flow)(pred, sigma, target, weight)
    with_s = RLELoss(convention="paper", log_s=True, flow=flow)
    expected = plain + with_s.log_normalizer(dtype=torch.float64) * weight.sum() / pred.shape[0]
    torch.testing.assert_close(with_s(pred, sigma, target, weight), expected)


def test_log_s_is_rejected_for_the_official_convention():
    with pytest.raises(ValueError, match="convention='paper'"):
        build_loss("rle", log_s=True)


# --- interface -----------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 3])
def test_weight_of_shape_k1_equals_weight_repeated_over_d(dim):
    pred, sigma, target, weight = (t.float() for t in _inputs(seed=8, d=dim))
    for name, options in ALL_VARIANTS:
        crit = build_loss(name, dim=dim, **options)
        torch.manual_seed(0)  # the same draw of log s's points for both (3D resamples them)
        a = crit(pred, sigma, target, weight)
        torch.manual_seed(0)
        b = crit(pred, sigma, target, weight.expand(-1, -1, dim))
        torch.testing.assert_close(a, b, msg=name)


def test_unlabelled_keypoints_do_not_change_the_loss():
    pred, sigma, target, weight = (t.float() for t in _inputs(seed=9))
    target2 = target.clone()
    target2[weight[..., 0] == 0] = 123.0  # garbage where unlabelled
    for name, options in ALL_VARIANTS:
        crit = build_loss(name, **options)
        torch.testing.assert_close(
            crit(pred, sigma, target, weight), crit(pred, sigma, target2, weight)
        )


class _RLEOnEveryPoint(RLELoss):
    """The RLE loss with the flow run on every keypoint, labelled or not (the earlier code)."""

    def log_g(self, bar_mu, weight=None):
        return super().log_g(bar_mu)


class _DLEOnEveryPoint(DLELoss):
    def log_g(self, bar_mu, weight=None):
        return super().log_g(bar_mu)


def test_flow_runs_only_on_labelled_keypoints_with_the_same_loss_and_gradients():
    """The flow term of an unlabelled keypoint has weight 0: it is skipped, values unchanged."""
    flow = _random_flow(seed=11).float()
    seen: list[int] = []
    flow.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    pred, sigma, target, weight = (t.float() for t in _inputs(b=8, k=17, seed=11))
    num_labelled = int((weight[..., 0] != 0).sum())
    assert 0 < num_labelled < 8 * 17
    cases = [
        (RLELoss(flow=flow), _RLEOnEveryPoint(flow=flow)),
        (RLELoss(flow=flow, convention="paper"), _RLEOnEveryPoint(flow=flow, convention="paper")),
        (DLELoss(dim=2, flow=flow), _DLEOnEveryPoint(dim=2, flow=flow)),
    ]
    for crit, reference in cases:
        losses, grads = [], []
        for c, expected_points in ((crit, num_labelled), (reference, 8 * 17)):
            p, s = pred.clone().requires_grad_(), sigma.clone().requires_grad_()
            seen.clear()
            losses.append(c(p, s, target, weight))
            assert seen == [expected_points], type(c).__name__
            grads.append(torch.autograd.grad(losses[-1], [p, s, *flow.parameters()]))
        torch.testing.assert_close(losses[0], losses[1], rtol=1e-6, atol=1e-6)
        for g, g_ref in zip(grads[0], grads[1], strict=True):
            torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-6)
    # an unlabelled keypoint with a residual the flow cannot represent no longer gives NaN
    target_far = target.clone()
    target_far[weight[..., 0] == 0] = 1e30
    assert not torch.isfinite(_RLEOnEveryPoint(flow=flow)(pred, sigma, target_far, weight))
    assert torch.isfinite(RLELoss(flow=flow)(pred, sigma, target_far, weight))
    # all labelled and none labelled: the flow runs on every point
    for w in (torch.ones_like(weight), torch.zeros_like(weight)):
        seen.clear()
        RLELoss(flow=flow)(pred, sigma, target, w)
        assert seen == [8 * 17]


def test_any_density_module_can_replace_the_flow():
    class StudentT(nn.Module):
        def log_prob(self, x):
            return torch.distributions.StudentT(3.0).log_prob(x).sum(-1)

    pred, sigma, target, weight = _inputs(seed=10)
    crit = build_loss("rle", convention="paper", flow=StudentT())
    bar = (target - pred) / sigma
    expected = (
        ((bar.abs() + math.log(2) + sigma.log()) * weight).sum(-1, keepdim=True)
        - torch.distributions.StudentT(3.0).log_prob(bar).sum(-1, keepdim=True) * weight
    ).sum() / pred.shape[0]
    torch.testing.assert_close(crit(pred, sigma, target, weight), expected)


def test_flow_is_a_registered_submodule_of_the_flow_losses():
    for name in ("dle", "rle"):
        crit = build_loss(name, dim=3)
        assert isinstance(crit.flow, RealNVP) and crit.flow.dim == 3
        assert any(k.startswith("flow.s.0") for k in crit.state_dict())
        assert len(list(crit.parameters())) > 0


def test_build_loss_errors_name_the_valid_choices():
    with pytest.raises(ValueError, match="valid: l1, l2, gaussian_nll, laplace_nll, dle, rle"):
        build_loss("smooth_l1")
    with pytest.raises(ValueError, match="does not take options"):
        build_loss("l1", q="laplace")
    with pytest.raises(ValueError, match="unknown q"):
        build_loss("rle", q="cauchy")
    with pytest.raises(ValueError, match="unknown convention"):
        build_loss("rle", convention="mmpose")
    assert set(LOSSES) == {"l1", "l2", "gaussian_nll", "laplace_nll", "dle", "rle"}


def test_shape_mismatch_is_a_clear_error():
    crit = build_loss("rle")
    with pytest.raises(ValueError, match="weight must be"):
        crit(torch.zeros(2, 3, 2), torch.ones(2, 3, 2), torch.zeros(2, 3, 2), torch.ones(2, 3, 3))
    with pytest.raises(ValueError, match="sigma shape"):
        crit(torch.zeros(2, 3, 2), torch.ones(2, 3, 1), torch.zeros(2, 3, 2), torch.ones(2, 3, 1))
