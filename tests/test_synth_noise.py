"""The label-noise model reproduces its stated statistics (COCO k_i spreads, rates)."""

from __future__ import annotations

import numpy as np
import pytest

from posereg.skeletons import COCO17, MPII16
from posereg.synth.noise import NoiseConfig, apply_label_noise

NUM_PEOPLE = 6000


def _people(seed: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    clean = rng.uniform(0, 500, (NUM_PEOPLE, k, 2))
    vis = rng.choice([0, 1, 2], p=[0.1, 0.3, 0.6], size=(NUM_PEOPLE, k))
    area = rng.uniform(200, 40000, NUM_PEOPLE)
    return clean, vis, area


@pytest.fixture(scope="module")
def coco_noise() -> tuple:
    clean, vis, area = _people(0, 17)
    cfg = NoiseConfig()
    labels = apply_label_noise(
        np.random.default_rng(1), clean, vis, area, COCO17.oks_k, COCO17.flip_pairs, cfg
    )
    swapped_kp = np.zeros(vis.shape, bool)
    for q, (a, b) in enumerate(COCO17.flip_pairs):
        swapped_kp[:, a] |= labels.swapped[:, q]
        swapped_kp[:, b] |= labels.swapped[:, q]
    return clean, vis, area, labels, swapped_kp


@pytest.mark.parametrize("code, factor", [(2, 1.0), (1, 2.0)])
def test_spread_per_keypoint_is_k_times_scale(coco_noise: tuple, code: int, factor: float) -> None:
    """std of (label - truth) / s per axis is k_i (visible) or 2 k_i (occluded), within 10 %."""
    clean, vis, area, labels, swapped_kp = coco_noise
    s = np.sqrt(area)[:, None, None]
    resid = (labels.keypoints - clean) / s  # (P, K, 2)
    for i, k in enumerate(COCO17.oks_k):
        m = (vis[:, i] == code) & ~labels.outlier[:, i] & ~swapped_kp[:, i]
        assert m.sum() >= 1000  # >= 2000 coordinate samples per keypoint
        sd = resid[m, i].std(axis=0)  # per axis
        np.testing.assert_allclose(sd, factor * k, rtol=0.1)
        np.testing.assert_allclose(resid[m, i].mean(axis=0), 0.0, atol=0.1 * factor * k)


def test_outlier_rate_and_spread(coco_noise: tuple) -> None:
    clean, vis, area, labels, swapped_kp = coco_noise
    labelled = vis > 0
    n = labelled.sum()
    rate = labels.outlier[labelled].mean()
    assert abs(rate - 0.03) < 4 * np.sqrt(0.03 * 0.97 / n)
    assert not labels.outlier[~labelled].any()
    # Gross errors: Laplace with standard deviation 5x the keypoint's spread.
    sd = COCO17.oks_k[None, :] * np.sqrt(area)[:, None] * np.where(vis == 1, 2.0, 1.0)
    m = labels.outlier & ~swapped_kp
    z = (labels.keypoints - clean)[m] / sd[m][:, None]
    np.testing.assert_allclose(z.std(), 5.0, rtol=0.1)
    # Laplace, not Gaussian: mean |z| / std = 1 / sqrt(2) (Gaussian: sqrt(2 / pi) = 0.80).
    np.testing.assert_allclose(np.abs(z).mean() / z.std(), 1 / np.sqrt(2), rtol=0.05)


def test_swap_rate_and_what_swaps(coco_noise: tuple) -> None:
    clean, vis, area, labels, _ = coco_noise
    pairs = np.asarray(COCO17.flip_pairs)
    eligible = (vis[:, pairs[:, 0]] > 0) & (vis[:, pairs[:, 1]] > 0)
    n = eligible.sum()
    rate = labels.swapped[eligible].mean()
    assert abs(rate - 0.01) < 4 * np.sqrt(0.01 * 0.99 / n)
    assert not labels.swapped[~eligible].any()
    # A swapped left label lies near the right truth (and not near the left one).
    s = np.sqrt(area)
    for q, (a, b) in enumerate(pairs):
        for p in np.flatnonzero(
            labels.swapped[:, q] & ~labels.outlier[:, a] & ~labels.outlier[:, b]
        ):
            near_b = np.linalg.norm(labels.keypoints[p, a] - clean[p, b]) / s[p]
            assert near_b < 6 * 2 * COCO17.oks_k[b]


def test_unlabelled_keypoints_stay_at_zero(coco_noise: tuple) -> None:
    _, vis, _, labels, _ = coco_noise
    assert np.all(labels.keypoints[vis == 0] == 0.0)


def test_noise_off_gives_the_truth() -> None:
    clean, vis, area = _people(2, 16)
    labels = apply_label_noise(
        np.random.default_rng(0),
        clean,
        vis,
        area,
        MPII16.oks_k,
        MPII16.flip_pairs,
        NoiseConfig.off(),
    )
    expected = np.where(vis[..., None] > 0, clean, 0.0)
    np.testing.assert_array_equal(labels.keypoints, expected)
    assert not labels.outlier.any() and not labels.swapped.any()


@pytest.mark.parametrize("scale", [0.5, 1.5])
def test_scale_multiplies_the_spread(scale: float) -> None:
    clean, vis, area = _people(3, 17)
    cfg = NoiseConfig(scale=scale, outlier_prob=0.0, swap_prob=0.0)
    labels = apply_label_noise(
        np.random.default_rng(0), clean, vis, area, COCO17.oks_k, COCO17.flip_pairs, cfg
    )
    z = (labels.keypoints - clean) / (np.sqrt(area)[:, None, None] * COCO17.oks_k[None, :, None])
    np.testing.assert_allclose(z[vis == 2].std(), scale, rtol=0.05)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"outlier_prob": 1.2}, "outlier_prob"),
        ({"swap_prob": -0.1}, "swap_prob"),
        ({"scale": -1.0}, "scale"),
        ({"outlier_scale": float("nan")}, "outlier_scale"),
    ],
)
def test_bad_noise_settings_are_rejected(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        NoiseConfig(**kwargs).validate()
