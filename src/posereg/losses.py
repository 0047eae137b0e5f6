"""Keypoint regression losses as negative log-likelihoods (RLE paper, Li et al. ICCV 2021, Sec. 3).

Every loss has the same call signature, so the paper's whole ablation (Tab. 1, 7, 17) is a
change of name::

    criterion = build_loss("rle", dim=2)                    # or "l1", "l2", "gaussian_nll", ...
    loss = criterion(pred, sigma, target, weight)            # (B, K, D) x 3, (B, K, 1 or D) -> ()

Losses that do not use ``sigma`` accept and ignore it. Reduction, for every loss: the sum of
the weighted per-element terms divided by the batch size B (the official RLE reduction), or
the plain (zero) sum when every weight is zero.

Two conventions exist for RLE (see docs/losses.md):

* ``official`` (default): exactly the official RLELoss + RegressFlow terms that produced the
  paper's numbers: residual (pred - target) / sigma, Q a Laplace of scale sqrt(2) sigma with
  the Gaussian constant amp = 1/sqrt(2 pi), log sigma counted in both the flow term and the
  Q term, the flow term broadcast over the D coordinates.
* ``paper``: Eq. 8 literally, -log Q(bar_mu) - log G_phi(bar_mu) + sum_d log sigma_d with
  bar_mu = (target - pred) / sigma and Q a unit-scale Laplace or a standard normal, with the
  optional normalizer log s of appendix E (estimated by importance sampling from Q, or by the
  appendix's Riemann sum: :meth:`RLELoss.log_normalizer`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from posereg.flows import RealNVP

__all__ = [
    "LOG_S_RESAMPLE",
    "LOG_S_SAMPLES",
    "SIGMA_EPS",
    "KeypointLoss",
    "L1Loss",
    "L2Loss",
    "GaussianNLLLoss",
    "LaplaceNLLLoss",
    "DLELoss",
    "RLELoss",
    "NonFiniteLossError",
    "build_loss",
    "q_samples",
    "LOSSES",
]

#: Lower clamp on sigma before any log or division. 1e-9 is the constant the official code
#: adds in its denominators; a sigmoid output falls below it only for logits below about
#: -20.7 (and underflows to exactly 0 below about -104 in float32, where log and division
#: would give inf/NaN), so every realistic sigma (1e-6 and below) is used unchanged.
SIGMA_EPS = 1e-9

_LOG_2PI = math.log(2 * math.pi)
_AMP = 1.0 / math.sqrt(2 * math.pi)  # the official code's Q constant

#: Default number of points of the sampling estimate of log s (:meth:`RLELoss.log_normalizer`)
#: per dimension D (other D: the 3D value). Chosen for accuracy and cost (docs/losses.md): the
#: error of log s is <= 0.0075 for random flows at these n, and log s costs <= 1.1x the train
#: step of the main 2D model and of the lifter; in 3D, 1024 points would cost the lifter ~1.15x.
LOG_S_SAMPLES: dict[int, int] = {2: 1024, 3: 512}

#: Default of ``RLELoss(log_s_resample=...)`` per dimension D (other D: the 3D value): new
#: points x_i ~ Q at every step in 3D, where a flow trained against fixed points fits them
#: (measured on the lifter, docs/losses.md); the fixed, deterministic points in 2D, where it
#: was not seen.
LOG_S_RESAMPLE: dict[int, bool] = {2: False, 3: True}


class NonFiniteLossError(RuntimeError):
    """Training stopped: too many consecutive non-finite losses (raised by the training loop; a
    user error, e.g. a learning rate too high, reported in one line by the CLI)."""


def _reduce(loss: Tensor, weight: Tensor) -> Tensor:
    """Official reduction: sum / B when any weight is positive, else the plain sum (zero)."""
    total = loss.sum()
    if bool(weight.sum() > 0):
        return total / loss.shape[0]
    return total


class KeypointLoss(nn.Module):
    """Base class: ``forward(pred, sigma, target, weight) -> scalar``.

    Arguments of ``forward``:
        pred: predicted locations mu_hat (B, K, D).
        sigma: predicted scales sigma_hat (B, K, D), positive; ignored by l1 and l2.
        target: labels mu_g (B, K, D).
        weight: per-keypoint visibility weights (B, K, 1) or (B, K, D).
    """

    def forward(self, pred: Tensor, sigma: Tensor, target: Tensor, weight: Tensor) -> Tensor:
        _check_shapes(pred, sigma, target, weight)
        return _reduce(self.elementwise(pred, sigma, target) * weight, weight)

    def elementwise(self, pred: Tensor, sigma: Tensor, target: Tensor) -> Tensor:
        """Unweighted per-coordinate terms (B, K, D)."""
        raise NotImplementedError


def _check_shapes(pred: Tensor, sigma: Tensor, target: Tensor, weight: Tensor) -> None:
    if pred.dim() != 3:
        raise ValueError(f"pred must be (B, K, D), got shape {tuple(pred.shape)}")
    for name, t in (("sigma", sigma), ("target", target)):
        if t.shape != pred.shape:
            raise ValueError(f"{name} shape {tuple(t.shape)} != pred shape {tuple(pred.shape)}")
    if (
        weight.dim() != 3
        or weight.shape[:2] != pred.shape[:2]
        or weight.shape[2] not in (1, pred.shape[2])
    ):
        raise ValueError(
            f"weight must be (B, K, 1) or (B, K, D) = {tuple(pred.shape)}, got {tuple(weight.shape)}"
        )


class L1Loss(KeypointLoss):
    """Constant-variance Laplace likelihood: |mu_g - mu_hat| per coordinate (paper Sec. 3.1)."""

    def elementwise(self, pred: Tensor, sigma: Tensor, target: Tensor) -> Tensor:
        return (target - pred).abs()


class L2Loss(KeypointLoss):
    """Constant-variance Gaussian likelihood: (mu_g - mu_hat)^2 per coordinate (paper Sec. 3.1)."""

    def elementwise(self, pred: Tensor, sigma: Tensor, target: Tensor) -> Tensor:
        return (target - pred).square()


class GaussianNLLLoss(KeypointLoss):
    """Learned-variance Gaussian NLL: log sigma + (mu_g - mu)^2 / (2 sigma^2) + log(2 pi) / 2."""

    def elementwise(self, pred: Tensor, sigma: Tensor, target: Tensor) -> Tensor:
        sigma = sigma.clamp_min(SIGMA_EPS)
        return torch.log(sigma) + (target - pred).square() / (2 * sigma.square()) + 0.5 * _LOG_2PI


class LaplaceNLLLoss(KeypointLoss):
    """Learned-scale Laplace NLL: log(2 sigma) + |mu_g - mu| / sigma."""

    def elementwise(self, pred: Tensor, sigma: Tensor, target: Tensor) -> Tensor:
        sigma = sigma.clamp_min(SIGMA_EPS)
        return torch.log(2 * sigma) + (target - pred).abs() / sigma


def _neg_log_q(q: str, bar_mu: Tensor) -> Tensor:
    """-log Q per coordinate for the unit-scale density Q (paper convention)."""
    if q == "laplace":  # Q(x) = exp(-|x|) / 2
        return bar_mu.abs() + math.log(2.0)
    return 0.5 * bar_mu.square() + 0.5 * _LOG_2PI  # standard normal


def _q_quantile(q: str, u: Tensor) -> Tensor:
    """Inverse CDF of the unit-scale Q per coordinate: u in (0, 1) -> x with Q-probability u below."""
    if q == "laplace":  # F(x) = 1/2 + sign(x) (1 - exp(-|x|)) / 2
        c = u - 0.5
        return -torch.sign(c) * torch.log1p(-2 * c.abs())
    return math.sqrt(2.0) * torch.erfinv(2 * u - 1)  # standard normal


def q_samples(q: str, dim: int, num_samples: int, seed: int = 0) -> Tensor:
    """Fixed draws x_i ~ Q (unit Laplace or standard normal per axis): (num_samples, dim) float64.

    Randomized quasi-Monte Carlo: the first ``num_samples`` points of a scrambled Sobol sequence
    (``torch.quasirandom.SobolEngine``, scrambled with ``seed``) mapped through Q's inverse CDF.
    Each point is marginally uniform before the map, so a mean over them is an unbiased
    estimate of an expectation under Q, like plain Monte Carlo, but the points fill the cube
    evenly and its error falls nearly as 1/n instead of 1/sqrt(n) for smooth integrands
    (for log s: 10-50x smaller than plain Monte Carlo at n = 1024-4096, docs/losses.md). Powers
    of two keep the Sobol balance. The same arguments give the same points on every machine.
    """
    u = torch.quasirandom.SobolEngine(dim, scramble=True, seed=seed).draw(
        num_samples, dtype=torch.float64
    )
    # u is never exactly 0 or 1 in practice; the clamp keeps the tails finite if it were
    return _q_quantile(q, u.clamp(1e-12, 1 - 1e-12))


def _log_mean_exp(log_values: Tensor) -> Tensor:
    """log of the mean of exp(log_values) over dim 0: (n,) -> scalar (the sampling estimate of
    log s from log G_phi(x_i), x_i ~ Q)."""
    return torch.logsumexp(log_values, dim=0) - math.log(log_values.shape[0])


class _FlowLoss(KeypointLoss):
    """Shared parts of the flow-based losses (DLE, RLE): the flow and the per-keypoint log G_phi."""

    def __init__(
        self, dim: int, flow: nn.Module | None, flow_layers: int = 6, flow_hidden: int = 64
    ) -> None:
        super().__init__()
        self.dim = dim
        # Owned here so that it is trained with the model and saved in its checkpoints.
        self.flow = (
            flow
            if flow is not None
            else RealNVP(dim=dim, num_layers=flow_layers, hidden=flow_hidden)
        )

    def log_g(self, bar_mu: Tensor, weight: Tensor | None = None) -> Tensor:
        """log G_phi per keypoint: bar_mu (B, K, D) -> (B, K, 1).

        With ``weight`` (B, K, 1 or D), the flow term's weight is ``weight[..., :1]``, and on the
        CPU the flow runs only on the keypoints where it is nonzero; the others get 0, which
        their zero weight would have multiplied anyway (so the loss and its gradients are the
        same, and an extreme residual of an unlabelled keypoint cannot turn the loss into
        NaN). The flow's cost on the CPU is proportional to the number of points; on a GPU it
        is kernel launches, and selecting the points would cost a device-to-host sync.
        """
        return self._log_g_and_more(bar_mu, weight, None)[0]

    def _log_g_and_more(
        self, bar_mu: Tensor, weight: Tensor | None, more: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """:meth:`log_g`, and log G_phi of ``more`` points (M, D) -> (M,) from the same flow call.

        One call on the keypoints and ``more`` concatenated instead of two: the flow's fixed
        cost per call (stacking its parameters, the per-layer kernels, the same again in
        backward) is paid once (RLE's log s on the sampling points, issue 19).
        """
        b, k, d = bar_mu.shape
        points = bar_mu.reshape(b * k, d)
        labelled = None
        if weight is not None and points.device.type == "cpu":
            labelled = (weight[..., 0] != 0).reshape(b * k).nonzero().squeeze(1)
            # all labelled: nothing to skip; none: keep the zero gradients that the flow's
            # parameters get from the full computation (the optimizer steps them either way)
            if 0 < len(labelled) < b * k:
                points = points.index_select(0, labelled)
            else:
                labelled = None
        if more is not None:
            log_prob = self.flow.log_prob(torch.cat([points, more.to(points)]))
            log_prob, log_prob_more = log_prob[: len(points)], log_prob[len(points) :]
        else:
            log_prob, log_prob_more = self.flow.log_prob(points), None
        if labelled is not None:
            log_prob = points.new_zeros(b * k).index_copy(0, labelled, log_prob)
        return log_prob.reshape(b, k, 1), log_prob_more


class DLELoss(_FlowLoss):
    """Direct likelihood estimation (paper Fig. 2b): -log G_phi(bar_mu) + sum_d log sigma_d.

    bar_mu = (mu_g - mu_hat) / sigma_hat. The flow term is joint over the D coordinates and
    weighted by ``weight[..., :1]``; the log sigma terms are per coordinate.
    """

    def forward(self, pred: Tensor, sigma: Tensor, target: Tensor, weight: Tensor) -> Tensor:
        _check_shapes(pred, sigma, target, weight)
        sigma = sigma.clamp_min(SIGMA_EPS)
        bar_mu = (target - pred) / sigma
        # (B, K, 1): the joint flow term once per keypoint, plus the per-coordinate log sigma
        loss = -self.log_g(bar_mu, weight) * weight[..., :1] + (torch.log(sigma) * weight).sum(
            -1, keepdim=True
        )
        return _reduce(loss, weight)


class RLELoss(_FlowLoss):
    """Residual log-likelihood estimation (paper Eq. 8, Fig. 2c).

    Arguments:
        dim: coordinate dimension D (2 or 3).
        q: the fixed density Q, ``"laplace"`` (default, paper's best) or ``"gaussian"``.
        convention: ``"official"`` (default; the terms of the official code, which produced
            the paper's numbers) or ``"paper"`` (Eq. 8 literally). See the module docstring.
        log_s: add the normalizer log s = log integral Q G_phi (appendix E), so that
            Q G_phi / s is a normalized density; paper convention only. How it is computed:
            ``log_s_method`` (see :meth:`log_normalizer`).
        log_s_method: ``"sampling"`` (default): importance sampling from Q on
            ``log_s_samples`` points (fixed, or new at each step: ``log_s_resample``);
            ``"grid"``: the appendix's Riemann sum (the reference, 256^2 or 48^3 flow
            evaluations per step).
        log_s_samples: number n of points x_i ~ Q of the sampling estimate (default
            :data:`LOG_S_SAMPLES`: 1024 for D=2, 512 for D=3), drawn once (:func:`q_samples`,
            seed ``log_s_seed``) and held in the non-persistent buffer ``log_s_points_q``, so
            ``.to(device)`` moves them and checkpoints do not hold them.
        log_s_seed: the scramble seed of those points.
        log_s_resample: draw new points at every evaluation (a scramble seed from torch's
            global generator) instead of using the fixed ones: the error of log s becomes
            noise around an (almost) unbiased value instead of a fixed offset, and the flow
            cannot fit the particular points; the loss is then reproducible only under a
            fixed ``torch.manual_seed``. Default None: :data:`LOG_S_RESAMPLE` for ``dim``,
            True in 3D (trained against 512 fixed points the 3D flow fits them: log s ends
            3.0 too low and the lifter 1.4x worse; docs/losses.md) and False in 2D (the
            deterministic fixed points, not fitted at 1024 points).
        log_s_range: grid method: half-width r of the integration box, in units of sigma.
        log_s_points: grid method: points per dimension (default 256 for D=2, 48 for D=3).
        flow: the density G_phi; any module with ``log_prob(x: (N, D)) -> (N,)``.
            Default: ``RealNVP(dim, flow_layers, flow_hidden)``.
        flow_layers, flow_hidden: the default flow's coupling layers and MLP width (the
            official settings: 6 and 64; paper Tab. 11 varies them).

    Example:
        >>> criterion = RLELoss(dim=2)
        >>> pred, target = torch.zeros(4, 17, 2), 0.01 * torch.randn(4, 17, 2)
        >>> sigma, weight = torch.full((4, 17, 2), 0.05), torch.ones(4, 17, 1)
        >>> criterion(pred, sigma, target, weight).shape
        torch.Size([])
    """

    def __init__(
        self,
        dim: int = 2,
        q: Literal["laplace", "gaussian"] = "laplace",
        convention: Literal["official", "paper"] = "official",
        log_s: bool = False,
        log_s_method: Literal["sampling", "grid"] = "sampling",
        log_s_samples: int | None = None,
        log_s_seed: int = 0,
        log_s_resample: bool | None = None,
        log_s_range: float = 10.0,
        log_s_points: int | None = None,
        flow: nn.Module | None = None,
        flow_layers: int = 6,
        flow_hidden: int = 64,
    ) -> None:
        super().__init__(dim, flow, flow_layers, flow_hidden)
        if q not in ("laplace", "gaussian"):
            raise ValueError(f"unknown q {q!r}; valid: 'laplace', 'gaussian'")
        if convention not in ("official", "paper"):
            raise ValueError(f"unknown convention {convention!r}; valid: 'official', 'paper'")
        if log_s and convention != "paper":
            raise ValueError(
                "log_s=True needs convention='paper': the official loss has no normalizer "
                "(its Q is not a normalized density)"
            )
        if log_s_method not in ("sampling", "grid"):
            raise ValueError(f"unknown log_s_method {log_s_method!r}; valid: 'sampling', 'grid'")
        if log_s_samples is None:
            log_s_samples = LOG_S_SAMPLES.get(dim, LOG_S_SAMPLES[3])
        if log_s_samples < 1:
            raise ValueError(f"log_s_samples must be >= 1, got {log_s_samples}")
        self.q = q
        self.convention = convention
        self.log_s = log_s
        self.log_s_method = log_s_method
        if log_s_resample is None:
            log_s_resample = LOG_S_RESAMPLE.get(dim, LOG_S_RESAMPLE[3])
        self.log_s_resample = log_s_resample
        self.log_s_range = log_s_range
        self.log_s_points = log_s_points or (256 if dim == 2 else 48)
        # the x_i ~ Q of the sampling estimate, (n, D); float32 unless the module is converted
        self.log_s_points_q: Tensor
        self.register_buffer(
            "log_s_points_q",
            q_samples(q, dim, log_s_samples, log_s_seed).to(torch.get_default_dtype()),
            persistent=False,  # a function of (q, dim, n, seed): checkpoints stay as they were
        )

    def forward(self, pred: Tensor, sigma: Tensor, target: Tensor, weight: Tensor) -> Tensor:
        _check_shapes(pred, sigma, target, weight)
        sigma = sigma.clamp_min(SIGMA_EPS)
        if self.convention == "official":
            loss = self._official(pred, sigma, target, weight)
        else:
            loss = self._paper(pred, sigma, target, weight)
        return _reduce(loss, weight)

    def _official(self, pred: Tensor, sigma: Tensor, target: Tensor, weight: Tensor) -> Tensor:
        # rlepose/models/regression_nf.py: bar_mu = (pred - gt) / sigma, nf_loss = log sigma - log_phi
        delta = pred - target
        bar_mu = delta / sigma
        nf_loss = torch.log(sigma) - self.log_g(
            bar_mu, weight
        )  # (B, K, D): log_phi broadcast over D
        residual = delta.abs()  # |target - pred|
        if self.q == "laplace":
            # rlepose/models/criterion.py RLELoss.logQ: Laplace of scale sqrt(2) sigma, constant amp
            log_q = torch.log(sigma / _AMP) + residual / (math.sqrt(2) * sigma + 1e-9)
        else:
            # Not in the official code: the Gaussian analogue with the same amp constant.
            log_q = torch.log(sigma / _AMP) + residual.square() / (2 * sigma.square() + 1e-9)
        return nf_loss * weight[..., :1] + log_q * weight

    def _paper(self, pred: Tensor, sigma: Tensor, target: Tensor, weight: Tensor) -> Tensor:
        bar_mu = (target - pred) / sigma  # paper's reparameterization
        per_coord = (_neg_log_q(self.q, bar_mu) + torch.log(sigma)) * weight  # -log Q + log sigma
        if self.log_s and self.log_s_method == "sampling":
            # log G_phi of the keypoints and of the points x_i ~ Q in one flow call
            log_g, log_g_q = self._log_g_and_more(bar_mu, weight, self._sampling_points())
            assert log_g_q is not None
            per_keypoint = -log_g + _log_mean_exp(log_g_q)  # -log G_phi + log s
        else:
            per_keypoint = -self.log_g(bar_mu, weight)  # -log G_phi, joint over D
            if self.log_s:
                per_keypoint = per_keypoint + self.log_normalizer(pred.device, pred.dtype)
        return per_coord.sum(-1, keepdim=True) + per_keypoint * weight[..., :1]  # (B, K, 1)

    def log_normalizer(
        self,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        method: Literal["sampling", "grid"] | None = None,
    ) -> Tensor:
        """log s = log of the integral of Q(x) G_phi(x) over R^D (appendix E): a scalar tensor.

        Differentiable with respect to the flow. ``method`` (default ``self.log_s_method``):

        * ``"sampling"``: importance sampling from Q, s = E_{x ~ Q}[G_phi(x)], on the fixed
          points x_1..x_n of ``log_s_points_q`` (:func:`q_samples`)::

              log s ~= logsumexp_i log G_phi(x_i) - log n

          The mean of G_phi(x_i) is unbiased for s (over the points' randomization); its log
          is biased low by about Var / (2 n s^2) (Jensen; Var the variance of G_phi(x) under
          Q; quasi-random points make the mean's variance, and so the bias, smaller than with
          independent draws). The estimate is good while G_phi is not much narrower than Q:
          the relative variance E_Q[G^2] / s^2 grows as G_phi concentrates. With the default n
          (1024 in 2D, 512 in 3D) it is within 0.0075 of the reference for random flows in 2D
          and 3D, and 0.03 for a flow 4x narrower in 3D (docs/losses.md, the tests). With
          fixed points (the 2D default) the loss is deterministic and its error is a fixed
          offset; with ``log_s_resample`` (the 3D default) new points at every call make it
          noise instead. Over
          32 scramble seeds the error's mean is <= 0.002 and its std 0.001-0.007 for random
          flows at the defaults (``benchmarks/bench_log_s.py --accuracy``). In the loss
          (``forward``) the flow runs once on the labelled keypoints and these points
          concatenated (:meth:`_log_g_and_more`), which this method's separate call would not.
          Trained against fixed points, a 3D flow (512 points) fits them: log s on them ends
          3.0 below its value (measured on the lifter; in 2D not seen), which is why 3D
          resamples by default (:data:`LOG_S_RESAMPLE`, docs/losses.md).
        * ``"grid"``: the appendix's Riemann sum, the midpoint rule on ``log_s_points`` cells
          per dimension covering [-log_s_range, log_s_range]^D (cell centres avoid the Laplace
          kink at 0); 256^2 or 48^3 flow evaluations. In 3D with the Laplace Q the default
          48 cells per axis give log s 0.03-0.09 too low (the kink; more for a narrow G_phi),
          several times sampling's error.

        Arguments:
            device, dtype: where and in what precision to evaluate; default the points'
                buffer (sampling) or the CPU and float32 (grid).
            method: ``"sampling"`` or ``"grid"``; None: ``self.log_s_method``.
        """
        method = method or self.log_s_method
        if method == "sampling":
            x = self._sampling_points().to(device=device, dtype=dtype)
            return _log_mean_exp(self.flow.log_prob(x))
        if method != "grid":
            raise ValueError(f"unknown log_s method {method!r}; valid: 'sampling', 'grid'")
        r, n = self.log_s_range, self.log_s_points
        h = 2 * r / n
        axis = torch.linspace(-r + h / 2, r - h / 2, n, device=device, dtype=dtype)
        grid = torch.stack(torch.meshgrid(*([axis] * self.dim), indexing="ij"), dim=-1).reshape(
            -1, self.dim
        )
        log_qg = -_neg_log_q(self.q, grid).sum(-1) + self.flow.log_prob(grid)
        return torch.logsumexp(log_qg, dim=0) + self.dim * math.log(h)

    def _sampling_points(self) -> Tensor:
        """The points x_1..x_n ~ Q of the sampling estimate (n, D): the fixed buffer, or new
        ones drawn now with ``log_s_resample``."""
        x = self.log_s_points_q  # (n, D), x_i ~ Q
        if self.log_s_resample:
            seed = int(torch.randint(2**31 - 1, ()))  # the global generator: seeded runs repeat
            x = q_samples(self.q, self.dim, len(x), seed).to(x)
        return x


LossFactory = Callable[..., KeypointLoss]

#: Name -> factory; every factory takes ``dim`` and its own keyword options.
LOSSES: dict[str, LossFactory] = {
    "l1": lambda dim=2: L1Loss(),
    "l2": lambda dim=2: L2Loss(),
    "gaussian_nll": lambda dim=2: GaussianNLLLoss(),
    "laplace_nll": lambda dim=2: LaplaceNLLLoss(),
    "dle": lambda dim=2, flow=None, flow_layers=6, flow_hidden=64: DLELoss(
        dim=dim, flow=flow, flow_layers=flow_layers, flow_hidden=flow_hidden
    ),
    "rle": RLELoss,
}


def build_loss(name: str, dim: int = 2, **options) -> KeypointLoss:
    """Create a loss by name: ``l1``, ``l2``, ``gaussian_nll``, ``laplace_nll``, ``dle``, ``rle``.

    Arguments:
        name: loss name; ValueError listing the valid ones if unknown.
        dim: coordinate dimension D.
        options: the loss's own options (RLE: q, convention, log_s, log_s_method,
            log_s_samples, log_s_seed, log_s_resample, log_s_range, log_s_points, flow,
            flow_layers,
            flow_hidden; DLE: flow, flow_layers, flow_hidden). An option the loss does not
            take is an error.

    Example:
        >>> build_loss("rle", q="gaussian", convention="paper").q
        'gaussian'
    """
    try:
        factory = LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}") from None
    try:
        return factory(dim=dim, **options)
    except TypeError as e:
        raise ValueError(f"loss {name!r} does not take options {sorted(options)}: {e}") from None
