"""posereg.metrics.calibration against hand-computed cases (issue 10, "Done when")."""

from __future__ import annotations

import math

import numpy as np
import pytest

from posereg.losses import GaussianNLLLoss
from posereg.metrics.calibration import auroc, average_ranks, coverage, pearson, spearman
from posereg.uncertainty import REPORT_LEVELS, region_from_criterion


def test_pearson_hand_computed():
    # dx = [-1.5, -.5, .5, 1.5], dy = [-3, -1, 0, 4]: sum dx dy = 11, sum dx^2 = 5, sum dy^2 = 26
    assert pearson(np.array([1, 2, 3, 4]), np.array([2, 4, 5, 9])) == pytest.approx(
        11 / math.sqrt(130), abs=1e-12
    )
    assert pearson(np.array([1, 2, 3]), np.array([3, 2, 1])) == pytest.approx(-1.0)


def test_average_ranks_share_ties():
    assert average_ranks(np.array([10, 20, 20, 30])).tolist() == [1, 2.5, 2.5, 4]
    assert average_ranks(np.array([5, 5, 5, 1])).tolist() == [3, 3, 3, 1]


def test_spearman_hand_computed_with_ties():
    # ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4]: sum dx dy = 4.5, sum dx^2 = 4.5, sum dy^2 = 5
    assert spearman(np.array([1, 2, 2, 3]), np.array([1, 3, 2, 4])) == pytest.approx(
        3 / math.sqrt(10), abs=1e-12
    )
    x = np.linspace(-2, 3, 11)
    assert spearman(x, np.exp(3 * x)) == pytest.approx(1.0)  # monotone: ranks agree
    assert pearson(x, np.exp(3 * x)) < 0.9  # but not linear


def test_auroc_pairs_with_ties_counting_half():
    # positives 0.9, 0.5, 0.3 vs negatives 0.5, 0.2: correct pairs 1+1+0.5+1+0+1 = 4.5 of 6
    scores = np.array([0.9, 0.5, 0.3, 0.5, 0.2])
    positives = np.array([True, True, True, False, False])
    assert auroc(scores, positives) == pytest.approx(0.75, abs=1e-12)
    assert auroc(np.array([3.0, 2.0, 1.0]), np.array([1, 0, 0])) == 1.0
    assert auroc(np.array([3.0, 2.0, 1.0]), np.array([0, 0, 1])) == 0.0
    assert auroc(np.ones(4), np.array([1, 0, 1, 0])) == 0.5


def test_nan_rules():
    assert math.isnan(auroc(np.array([0.1, 0.2]), np.array([True, True])))  # no negatives
    assert math.isnan(auroc(np.array([0.1, np.nan]), np.array([True, False])))  # NaN dropped
    assert math.isnan(pearson(np.array([1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0])))  # constant
    assert math.isnan(spearman(np.array([1.0]), np.array([2.0])))
    # a pair with a NaN is dropped, the rest is used
    x, y = np.array([1, 2, 3, 4, np.nan]), np.array([2, 4, 5, 9, 1])
    assert pearson(x, y) == pytest.approx(11 / math.sqrt(130))
    assert all(math.isnan(v) for v in coverage(np.zeros(0, dtype=bool)))
    with pytest.raises(ValueError, match="same number of values"):
        pearson(np.ones(3), np.ones(4))


def test_coverage_fraction_and_binomial_se():
    frac, se = coverage(np.array([True, True, False, True]))
    assert frac == 0.75
    assert se == pytest.approx(math.sqrt(0.75 * 0.25 / 4))


def _gaussian_predictions(n: int, seed: int = 0):
    """A perfectly calibrated Gaussian predictor in pixels: truth ~ N(mu, sigma^2) per axis."""
    rng = np.random.default_rng(seed)
    mu = rng.uniform(0, 640, size=(n, 2))
    sigma = np.exp(rng.normal(1.5, 0.7, size=(n, 2)))  # 1 to 20 px, per axis
    truth = mu + sigma * rng.standard_normal((n, 2))
    return mu, sigma, truth


@pytest.mark.parametrize("p", REPORT_LEVELS)
def test_calibrated_gaussian_covers_p_and_halved_sigma_fails(p):
    n = 20_000
    mu, sigma, truth = _gaussian_predictions(n)
    region = region_from_criterion(GaussianNLLLoss(), REPORT_LEVELS)
    assert region is not None and region.family == "gaussian"
    se_expected = math.sqrt(p * (1 - p) / n)
    frac, se = coverage(region.contains((truth - mu) / sigma, p))
    assert abs(frac - p) < 4 * se_expected, (p, frac)
    assert se == pytest.approx(se_expected, rel=0.1)
    # sigma halved: the same truth lies outside far more often (p=0.9 -> about 0.44)
    frac_half, _ = coverage(region.contains((truth - mu) / (sigma / 2), p))
    assert frac_half < p - 20 * se_expected, (p, frac_half)
    # the same check through the drawn semi-axes (pixels): inside the ellipse r_p sigma
    axes = region.semi_axes(sigma, p)
    in_ellipse = (((truth - mu) / axes) ** 2).sum(-1) <= 1.0
    assert (in_ellipse == region.contains((truth - mu) / sigma, p)).mean() > 0.9999
