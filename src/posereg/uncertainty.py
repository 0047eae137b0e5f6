"""Calibrated predictive regions per keypoint from the density a loss learned (issue 10, item 3).

A regression head predicts, per keypoint, a location mu (D) and a scale sigma (D). Its loss
states what law the normalized residual ``bar_mu = (truth - mu) / sigma`` (per axis) follows;
the predictive p-region of a keypoint is then

    R_p = {x : |(x - mu) / sigma| <= r_p}   (|.| the Euclidean norm over the D axes)

an axis-aligned ellipse (D = 2) with semi-axes r_p * sigma_x, r_p * sigma_y, where r_p is the
p-quantile of |bar_mu| under that law: a calibrated model puts the truth inside R_p with
probability p. ``r_p`` is a number per model (per loss and flow), computed once; a keypoint's
region is ``r_p * sigma`` (:meth:`PredictiveRegion.semi_axes`, the one conversion).

The law of bar_mu, per loss (METHOD.md; equation numbers of the RLE paper, Li et al. 2021):

* ``gaussian_nll``: bar_mu_d iid N(0, 1), so |bar_mu|^2 ~ chi^2_D and
  r_p = sqrt(2 P^-1(D/2, p)) (P the regularized lower incomplete gamma; D = 2:
  sqrt(-2 ln(1 - p))).
* ``laplace_nll``: bar_mu_d iid Laplace(0, 1), density exp(-|x|) / 2; the law of the norm has no
  closed form and is integrated numerically (Gauss-Legendre on the polar angle, nested over D).
* ``dle`` and ``rle`` (convention ``official``; or ``paper`` without ``log_s``): the flow
  G_phi itself. In these losses the flow's parameters receive gradient only from the
  -log G_phi(bar_mu) term (DLE; Eq. 8 without log s; the official code's nf_loss): -log Q and
  log sigma do not depend on phi. Minimizing E[-log G_phi(bar_mu)] over normalized densities
  is maximum likelihood, so G_phi fits the law of the residuals the network produces, and that
  is the law a region must use. Sampling: z ~ N(0, I), x = G_phi's inverse (its generative
  direction, :meth:`posereg.flows.RealNVP.sample`), exact draws from G_phi.
* ``rle`` with ``convention="paper", log_s=True``: the flow's objective is then
  -log G_phi(bar_mu) + log s with s = integral Q G_phi (appendix E), i.e. -log of the
  normalized Eq. 7 density Q G_phi / s (up to the phi-free -log Q): maximum likelihood fits
  Q G_phi / s to the residuals, so that is the law used. Sampling: importance sampling from Q
  (unit Laplace or standard normal per axis) with weights G_phi(x); the mean weight estimates
  s (checked against :meth:`posereg.losses.RLELoss.log_normalizer` in the tests).

Note the paper's Eq. 7 names Q G_phi / s the model density in both cases; trained without
log s (the default in the paper and the official code) the flow does not fit that product but
the residual law directly, and Q G_phi / s would be far too narrow (for a Laplace Q roughly half
the radius: a Laplace of half the scale; tests/test_uncertainty.py measures it). ``density=`` overrides the rule.

L1, L2, heatmap and integral heads learn no density: :func:`region_from_criterion` returns None.

Calibrated sigma (issue 19, item 3). Beside the region, a keypoint's sigma is reported in the
units of the data (image pixels; mm for the lifter) as a Laplace scale fitted on held-out data:
``sigma_calibrated = c_kd * sigma_d`` per keypoint k and axis d (:class:`SigmaCalibration`).
With the model

    truth_d - mu_d = c_kd * sigma_d * e_d,   e_d ~ Laplace(0, 1) iid   (per axis d)

the log-likelihood of the validation residuals, sum -log(2 c sigma) - |r| / (c sigma), is
maximal at c_kd = mean over the keypoint's labelled residuals of |r_d| / sigma_d
(:func:`fit_sigma_scale`; pooled over the axes with ``per_axis=False``): the Laplace MLE, so c_k * sigma is the scale whose E|r| matches the
observed one (a calibrated model has E|r_d| = c_k sigma_d and P(|r_d| <= t c_k sigma_d) =
1 - exp(-t)). It is a read-out for users, not a second density: the region above stays the
flow's, and the two agree when the flow is close to a Laplace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from posereg.errors import CheckpointError
from posereg.losses import DLELoss, GaussianNLLLoss, L1Loss, L2Loss, LaplaceNLLLoss, RLELoss

__all__ = [
    "PredictiveRegion",
    "region_from_criterion",
    "radius_law_quantiles",
    "RELIABILITY_LEVELS",
    "REPORT_LEVELS",
    "DRAW_LEVEL",
    "FAST_NUM_SAMPLES",
    "q_flow_normalizer",
    "SigmaCalibration",
    "fit_sigma_scale",
    "laplace_within",
]

#: Levels of a reliability diagram: 0.05, 0.10, ..., 0.95.
RELIABILITY_LEVELS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))
#: Levels reported in tables.
REPORT_LEVELS: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)
#: The level drawn and written by ``posereg predict``/``video``/``serve``.
DRAW_LEVEL = 0.9
#: Monte-Carlo draws for a flow's region where it is computed on load (Predictor, the run
#: report): 0.1-0.3 s on one CPU thread for the official flow; the p = 0.9 quantile's standard
#: error is then 0.0013 in probability (about 0.1% of r_p).
FAST_NUM_SAMPLES = 50_000

_LEVEL_TOL = 1e-9
_QUAD_NODES = 64  # Gauss-Legendre nodes per nesting level of the radius-law integral


@dataclass(frozen=True)
class PredictiveRegion:
    """The predictive regions of a model: r_p in units of sigma at a set of levels p.

    Attributes:
        family: the law of bar_mu: ``"gaussian"``, ``"laplace"`` (the NLL losses), ``"flow"``
            (G_phi: DLE, RLE without log s) or ``"q_flow"`` (Q G_phi / s: paper RLE with log s).
        levels: the probabilities p, increasing.
        radii: r_p per level (same length), in units of sigma (the norm of bar_mu).
        dim: D, the number of coordinates of bar_mu.

    Example:
        >>> region = region_from_criterion(GaussianNLLLoss(), levels=(0.5, 0.9))
        >>> round(region.radius(0.9), 4)  # sqrt(-2 ln 0.1)
        2.146
        >>> region.contains(np.array([[1.0, 1.0], [3.0, 0.0]]), 0.9).tolist()
        [True, False]
    """

    family: str
    levels: tuple[float, ...]
    radii: tuple[float, ...]
    dim: int = 2

    def __post_init__(self) -> None:
        if len(self.levels) != len(self.radii) or not self.levels:
            raise ValueError(
                f"levels ({len(self.levels)}) and radii ({len(self.radii)}) must be non-empty "
                "and of the same length"
            )

    def radius(self, p: float) -> float:
        """r_p in units of sigma: the p-quantile of |bar_mu| under the learned law.

        Raises:
            ValueError: p is not one of ``levels`` (regions are computed per level; pass the
                level to :func:`region_from_criterion`).
        """
        for level, r in zip(self.levels, self.radii, strict=True):
            if abs(level - p) < _LEVEL_TOL:
                return r
        raise ValueError(
            f"no region at level p={p}; this region has levels "
            f"{', '.join(f'{v:g}' for v in self.levels)} (compute it with levels=(..., {p}))"
        )

    def contains(self, bar_mu: np.ndarray, p: float) -> np.ndarray:
        """Whether normalized residuals lie in the p-region: |bar_mu| <= r_p.

        Arguments:
            bar_mu: (..., D) (truth - mu) / sigma per axis.

        Returns:
            (...) bool; False where bar_mu holds a NaN.
        """
        bar_mu = np.asarray(bar_mu, dtype=np.float64)
        return np.linalg.norm(bar_mu, axis=-1) <= self.radius(p)

    def semi_axes(self, sigma: np.ndarray, p: float) -> np.ndarray:
        """The p-region's semi-axes r_p * sigma (..., D), in the units of ``sigma`` (e.g. pixels)."""
        return np.asarray(sigma, dtype=np.float64) * self.radius(p)


# --- analytic laws (product densities of iid coordinates) --------------------------------------


def _half_density(family: str, x: np.ndarray) -> np.ndarray:
    """Density of |X| at x >= 0 for one unit coordinate X (2 f(x))."""
    if family == "laplace":
        return np.exp(-x)
    return math.sqrt(2.0 / math.pi) * np.exp(-0.5 * x * x)


def _norm_cdf(family: str, dim: int, r: np.ndarray) -> np.ndarray:
    """P(|X| <= r) for X of ``dim`` iid unit coordinates, r (...) >= 0 -> (...).

    Recursion on D with the polar angle: with z = r sin(t), the last coordinate,
    F_D(r) = int_0^{pi/2} 2 f(r sin t) F_{D-1}(r cos t) r cos t dt, F_1(r) = P(|X_1| <= r);
    the integrand is smooth in t, so Gauss-Legendre converges fast.
    """
    if dim == 1:
        if family == "laplace":
            return -np.expm1(-r)
        from scipy.special import erf

        return erf(r / math.sqrt(2.0))
    nodes, weights = np.polynomial.legendre.leggauss(_QUAD_NODES)
    t = (nodes + 1.0) * (math.pi / 4.0)  # [-1, 1] -> [0, pi/2]
    w = weights * (math.pi / 4.0)
    rs = r[..., None]
    integrand = (
        _half_density(family, rs * np.sin(t))
        * _norm_cdf(family, dim - 1, rs * np.cos(t))
        * rs
        * np.cos(t)
    )
    return (integrand * w).sum(-1)


def radius_law_quantiles(
    family: Literal["gaussian", "laplace"], dim: int, levels: tuple[float, ...]
) -> tuple[float, ...]:
    """r_p for bar_mu of ``dim`` iid N(0, 1) or Laplace(0, 1) coordinates, per level p.

    Gaussian: the chi quantile sqrt(2 P^-1(D/2, p)). Laplace: the numerical CDF of the norm
    (:func:`_norm_cdf`, about 1e-10 accurate) inverted by bisection.
    """
    p = np.asarray(levels, dtype=np.float64)
    if family == "gaussian":
        from scipy.special import gammaincinv

        return tuple(float(v) for v in np.sqrt(2.0 * gammaincinv(dim / 2.0, p)))
    lo, hi = np.zeros_like(p), np.full_like(p, 10.0 + 10.0 * dim)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = _norm_cdf(family, dim, mid) < p
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return tuple(float(v) for v in 0.5 * (lo + hi))


# --- flows -----------------------------------------------------------------------------------


def _weighted_quantiles(
    values: np.ndarray, weights: np.ndarray | None, levels: tuple[float, ...]
) -> tuple[float, ...]:
    """p-quantiles of ``values`` (N,) under (unnormalized) ``weights`` (N,) or equal weights."""
    if weights is None:
        return tuple(float(v) for v in np.quantile(values, levels))
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    idx = np.searchsorted(cdf, np.asarray(levels), side="left")
    return tuple(float(v[min(i, len(v) - 1)]) for i in idx)


def _sample_q(q: str, num_samples: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """(num_samples, dim) float64 draws from the unit Q: Laplace (sign * Exp(1)) or N(0, I)."""
    if q == "laplace":
        u = torch.rand(num_samples, dim, generator=generator, dtype=torch.float64)
        sign = torch.rand(num_samples, dim, generator=generator, dtype=torch.float64) < 0.5
        return torch.where(sign, 1.0, -1.0) * -torch.log1p(-u)
    return torch.randn(num_samples, dim, generator=generator, dtype=torch.float64)


def _flow_device_dtype(flow: nn.Module) -> tuple[torch.device, torch.dtype]:
    tensor = next(iter(flow.parameters()), None)
    if tensor is None:
        return torch.device("cpu"), torch.float32
    return tensor.device, tensor.dtype


@torch.no_grad()
def _flow_norms(
    flow: nn.Module, dim: int, num_samples: int, seed: int, q: str | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Norms of draws from G_phi (q None) or from Q with importance weights G_phi (q given).

    The draws are made on the CPU from ``seed`` (the same numbers on any device) and moved to
    the flow's device.
    """
    generator = torch.Generator().manual_seed(seed)
    device, dtype = _flow_device_dtype(flow)
    if q is None:
        z = torch.randn(num_samples, dim, generator=generator).to(device=device, dtype=dtype)
        if hasattr(flow, "prior_loc"):  # RealNVP's prior N(loc, diag(scale^2)) (buffers)
            z = flow.prior_loc + flow.prior_scale * z
        x = flow.inverse(z)  # the generative direction: x ~ G_phi
        return x.double().norm(dim=-1).cpu().numpy(), None
    x = _sample_q(q, num_samples, dim, generator)
    log_g = flow.log_prob(x.to(device=device, dtype=dtype)).double().cpu()
    finite = torch.isfinite(log_g)
    if not finite.any():  # a flow with NaN weights: region_from_criterion says so
        return x.norm(dim=-1).numpy(), np.full(num_samples, np.nan)
    weights = torch.exp(log_g - log_g[finite].max()).numpy()
    return x.norm(dim=-1).numpy(), weights


@torch.no_grad()
def q_flow_normalizer(flow: nn.Module, q: str, num_samples: int = 200_000, seed: int = 0) -> float:
    """Monte-Carlo estimate of s = integral Q G_phi = E_{x ~ Q}[G_phi(x)] (appendix E).

    The importance-sampling denominator of the ``q_flow`` law (plain Monte Carlo on many
    points, no gradient); the loss's own estimate is :meth:`posereg.losses.RLELoss.log_normalizer`
    (the same estimator on fewer, quasi-random points, or a Riemann sum on a box).
    """
    generator = torch.Generator().manual_seed(seed)
    device, dtype = _flow_device_dtype(flow)
    dim = int(getattr(flow, "dim", 2))
    x = _sample_q(q, num_samples, dim, generator).to(device=device, dtype=dtype)
    return float(torch.exp(flow.log_prob(x).double()).mean())


def learned_density(criterion: DLELoss | RLELoss) -> Literal["flow", "q_flow"]:
    """Which law of bar_mu a flow loss fits (module docstring): ``"q_flow"`` (Q G_phi / s) only
    for RLE with ``convention="paper", log_s=True``; ``"flow"`` (G_phi itself) otherwise."""
    paper_log_s = isinstance(criterion, RLELoss) and criterion.convention == "paper"
    return "q_flow" if paper_log_s and bool(criterion.log_s) else "flow"


def region_from_criterion(
    criterion: nn.Module | None,
    levels: tuple[float, ...] = RELIABILITY_LEVELS,
    num_samples: int = 200_000,
    seed: int = 0,
    *,
    dim: int | None = None,
    density: Literal["flow", "q_flow"] | None = None,
) -> PredictiveRegion | None:
    """The predictive regions a trained loss defines (see the module docstring for each loss).

    Arguments:
        criterion: the head's loss (``model.criterion``), with its trained flow; None (a heatmap
            head), L1 or L2: no density, returns None.
        levels: the probabilities p, each in (0, 1).
        num_samples: Monte-Carlo draws for the flow-based laws (the quantile's standard error in
            probability is sqrt(p (1 - p) / num_samples), 7e-4 at p = 0.9 for 200,000); the
            analytic laws ignore it.
        seed: the draws' seed: the same criterion gives the same radii.
        dim: D; default the flow's dimension, or 2 for the NLL losses.
        density: override which law a flow loss uses: ``"flow"`` (G_phi) or ``"q_flow"``
            (Q G_phi / s; RLE only); None: the rule of the module docstring.

    Returns:
        A :class:`PredictiveRegion`, or None for losses without a density.

    Raises:
        ValueError: a level outside (0, 1), a loss this function does not know, or a flow whose
            draws are all NaN or inf (non-finite weights).
    """
    levels = tuple(sorted(float(p) for p in levels))
    if not levels or not all(0.0 < p < 1.0 for p in levels):
        raise ValueError(f"levels must be probabilities in (0, 1), got {levels}")
    if criterion is None or isinstance(criterion, L1Loss | L2Loss):
        return None
    if isinstance(criterion, GaussianNLLLoss | LaplaceNLLLoss):
        family = "gaussian" if isinstance(criterion, GaussianNLLLoss) else "laplace"
        d = dim or 2
        return PredictiveRegion(family, levels, radius_law_quantiles(family, d, levels), d)
    if not isinstance(criterion, DLELoss | RLELoss):
        raise ValueError(
            f"no predictive region for the loss {type(criterion).__name__}; known: "
            "GaussianNLLLoss, LaplaceNLLLoss, DLELoss, RLELoss (None for L1Loss, L2Loss)"
        )
    flow = criterion.flow
    d = dim or int(getattr(flow, "dim", criterion.dim))
    if density is None:
        density = learned_density(criterion)
    if density == "q_flow" and not isinstance(criterion, RLELoss):
        raise ValueError("density='q_flow' needs an RLE loss (DLE has no Q)")
    if density not in ("flow", "q_flow"):
        raise ValueError(f"unknown density {density!r}; valid: 'flow', 'q_flow'")
    q = criterion.q if density == "q_flow" else None  # type: ignore[union-attr]
    was_training = flow.training
    flow.eval()
    try:
        norms, weights = _flow_norms(flow, d, num_samples, seed, q)
    finally:
        flow.train(was_training)
    keep = np.isfinite(norms) if weights is None else np.isfinite(norms) & np.isfinite(weights)
    if not keep.any():
        raise ValueError(
            f"no predictive region: all {len(norms)} draws from the {density} density are NaN or "
            "inf, so the flow has non-finite weights (a run that diverged); use an earlier "
            "checkpoint"
        )
    norms = norms[keep]
    weights = None if weights is None else weights[keep]
    return PredictiveRegion(density, levels, _weighted_quantiles(norms, weights, levels), d)


# --- calibrated sigma: a per-keypoint Laplace scale fitted on held-out data ---------------------

#: The estimator of :func:`fit_sigma_scale`, recorded in checkpoints.
SIGMA_SCALE_ESTIMATOR = "laplace_mle"
#: Fewest labelled residuals (keypoints x axes) a keypoint needs for its own c_k; one with fewer
#: takes the scale pooled over all keypoints (the standard error of c_k is about c_k / sqrt(n)).
MIN_RESIDUALS = 10


def laplace_within(t: np.ndarray | float) -> np.ndarray:
    """P(|e| <= t) for e ~ Laplace(0, 1): 1 - exp(-t), the reliability diagram's prediction."""
    return -np.expm1(-np.asarray(t, dtype=np.float64))


def fit_sigma_scale(
    residual: np.ndarray, sigma: np.ndarray, labelled: np.ndarray, per_axis: bool = False
) -> np.ndarray:
    """c (K, D): the Laplace MLE of the scale of ``residual / sigma`` per keypoint (module docstring).

    c_k = mean_{i, d} |r_ikd| / sigma_ikd over the labelled instances i of keypoint k (and its D
    axes; per axis d with ``per_axis``). Keypoints with under :data:`MIN_RESIDUALS` residuals take
    the scale pooled over all keypoints (per axis with ``per_axis``); with none at all, 1.

    Arguments:
        residual: (N, K, D) truth - mu, in the units of ``sigma``.
        sigma: (N, K, D) the head's sigma in the same units, > 0.
        labelled: (N, K) bool, the residuals to use.
        per_axis: one c per keypoint and axis instead of one per keypoint.

    Returns:
        (K, D) float64; with ``per_axis=False`` the D columns are equal.
    """
    residual = np.asarray(residual, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    n, k, d = residual.shape
    ratio = np.abs(residual) / np.maximum(sigma, 1e-12)  # (N, K, D)
    use = np.asarray(labelled, dtype=bool)[..., None] & np.isfinite(ratio)  # (N, K, D)
    ratio = np.where(use, ratio, 0.0)
    axes = (0,) if per_axis else (0, 2)
    total = ratio.sum(axis=axes, keepdims=True).reshape(k, -1)  # (K, D or 1)
    count = use.sum(axis=axes, keepdims=True).reshape(k, -1)
    pooled_count = count.sum(axis=0)
    pooled = np.where(
        pooled_count > 0, total.sum(axis=0) / np.maximum(pooled_count, 1), 1.0
    )  # (D or 1,)
    scale = np.where(count >= MIN_RESIDUALS, total / np.maximum(count, 1), pooled)
    return np.broadcast_to(scale, (k, d)).copy()


@dataclass(frozen=True)
class SigmaCalibration:
    """Per-keypoint scales c (K, D) that turn a head's sigma into a calibrated one, c x sigma.

    Saved in a checkpoint as ``state["sigma_calibration"]`` = :meth:`to_state`; a checkpoint
    without it (older ones, runs evaluated against detections, heads without sigma) gives
    c = 1 with ``fitted=False`` (:meth:`from_state`).

    Attributes:
        scale: (K, D) c_k per keypoint (and axis), the Laplace MLE of :func:`fit_sigma_scale`.
        fitted: False for the identity that stands in for a missing calibration.
        data: what it was fitted on (``"val"``: the run's validation set).
        truth: what the residuals were measured against (``"labels"`` or ``"clean"``).

    Example:
        >>> cal = SigmaCalibration(np.array([[2.0, 2.0], [0.5, 0.5]]))
        >>> cal.apply(np.ones((1, 2, 2))).tolist()
        [[[2.0, 2.0], [0.5, 0.5]]]
    """

    scale: np.ndarray
    fitted: bool = True
    data: str = "val"
    truth: str = "labels"

    @classmethod
    def identity(cls, num_keypoints: int, dim: int) -> SigmaCalibration:
        """c = 1 everywhere, ``fitted=False``."""
        return cls(np.ones((num_keypoints, dim)), fitted=False, data="none", truth="none")

    @classmethod
    def fit(
        cls,
        residual: np.ndarray,
        sigma: np.ndarray,
        labelled: np.ndarray,
        per_axis: bool = False,
        truth: str = "labels",
    ) -> SigmaCalibration:
        """:func:`fit_sigma_scale` on validation residuals (N, K, D), sigma (N, K, D), mask (N, K)."""
        return cls(fit_sigma_scale(residual, sigma, labelled, per_axis), True, "val", truth)

    def apply(self, sigma: np.ndarray) -> np.ndarray:
        """c x sigma: (..., K, D) -> (..., K, D), in the units of ``sigma``."""
        return np.asarray(sigma, dtype=np.float64) * self.scale

    def to_state(self) -> dict:
        """Plain values for a checkpoint (``weights_only``-safe)."""
        return {
            "scale": np.asarray(self.scale, dtype=np.float64).round(6).tolist(),
            "estimator": SIGMA_SCALE_ESTIMATOR,
            "data": self.data,
            "truth": self.truth,
        }

    @classmethod
    def from_state(
        cls, state: dict, num_keypoints: int, dim: int, source: str = "checkpoint"
    ) -> SigmaCalibration:
        """The calibration a checkpoint ``state`` holds; :meth:`identity` when it holds none.

        Raises:
            CheckpointError: a ``sigma_calibration`` entry that is not a (K, D) table of
                non-negative finite numbers (names ``source``). (0 is a keypoint known exactly,
                e.g. the lifter's pelvis, the origin of its root-relative joints.)
        """
        saved = state.get("sigma_calibration")
        if saved is None:
            return cls.identity(num_keypoints, dim)
        try:
            scale = np.asarray(saved["scale"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            scale = np.zeros(0)
        if scale.shape != (num_keypoints, dim) or not (np.isfinite(scale) & (scale >= 0)).all():
            raise CheckpointError(
                f"{source}: sigma_calibration.scale must be {num_keypoints} x {dim} non-negative "
                f"numbers (one per keypoint and axis), got {np.shape(scale)}"
            )
        return cls(scale, True, str(saved.get("data", "val")), str(saved.get("truth", "labels")))

    def describe(self, units: str) -> str:
        """One line for a CLI: where c comes from, or that it is 1."""
        if not self.fitted:
            return (
                "sigma_calibrated = sigma (c = 1): the checkpoint holds no per-keypoint sigma "
                "calibration (saved before posereg fitted one, or never evaluated on labelled "
                "validation data)"
            )
        return (
            f"sigma_calibrated = c_k x sigma ({units}), c_k fitted on the validation set "
            f"(Laplace MLE, against the {self.truth}): c from {self.scale.min():.3g} to "
            f"{self.scale.max():.3g}"
        )
