"""The label-noise model reproduces its stated statistics (COCO k_i spreads, rates)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pycocotools.cocoeval import Params

from posereg.config import apply_overrides
from posereg.skeletons import COCO17, MPII16
from posereg.synth.generate import PRESETS, SynthConfig
from posereg.synth.noise import COCO_SCALE, NoiseConfig, apply_label_noise

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


@pytest.mark.parametrize("code, factor", [(2, COCO_SCALE), (1, 2.0 * COCO_SCALE)])
def test_spread_per_keypoint_is_k_times_scale(coco_noise: tuple, code: int, factor: float) -> None:
    """std of (label - truth) / s per axis is scale k_i (visible) or 2 scale k_i (occluded),
    within 10 %, at the default scale."""
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
    sd = COCO_SCALE * COCO17.oks_k[None, :] * np.sqrt(area)[:, None] * np.where(vis == 1, 2.0, 1.0)
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


def test_default_spread_is_cocos_measured_sigma(coco_noise: tuple) -> None:
    """At the default, the RMS 2D distance of a visible label from the truth, over sqrt(area), is
    COCO's per-keypoint sigma_i (pycocotools' own table), within 4 standard errors.

    COCO defines sigma_i^2 = E[d_i^2 / s^2] (d_i a 2D distance); for labels drawn per axis from
    N(0, a^2), d^2 / a^2 is chi-square with 2 degrees of freedom (mean 2, variance 4), so the
    relative standard error of the mean of d^2 is 1 / sqrt(n) and that of its root 1 / (2 sqrt n).
    """
    assert NoiseConfig().scale == COCO_SCALE
    assert COCO_SCALE == pytest.approx(0.35355339, abs=1e-8)  # 1 / (2 sqrt 2)
    coco_sigmas = np.asarray(Params(iouType="keypoints").kpt_oks_sigmas)
    np.testing.assert_allclose(COCO17.oks_k, 2 * coco_sigmas)  # the k_i the model scales
    clean, vis, area, labels, swapped_kp = coco_noise
    d = np.linalg.norm(labels.keypoints - clean, axis=-1) / np.sqrt(area)[:, None]  # (P, K)
    for i, sigma in enumerate(coco_sigmas):
        m = (vis[:, i] == 2) & ~labels.outlier[:, i] & ~swapped_kp[:, i]
        n = int(m.sum())
        assert n >= 3000
        rms = math.sqrt(np.mean(d[m, i] ** 2))
        assert abs(rms / sigma - 1.0) < 4 * 0.5 / math.sqrt(n), (i, rms, sigma)
    # The old default (scale = 1, k_i s per axis) was 2 sqrt 2 = 2.83 times that spread.
    assert 1.0 / COCO_SCALE == pytest.approx(2 * math.sqrt(2))


def test_presets_keep_their_relative_difficulty_and_other_scales_can_be_set() -> None:
    """easy, medium and hard are 0.5, 1 and 1.5 times the default (COCO's) spread, as they were
    relative to the old default (multi, the multi-person scenes, has medium's); the default
    config is medium's; any scale can be set."""
    ratios = {p: SynthConfig.preset(p).noise.scale / NoiseConfig().scale for p in PRESETS}
    expected = {"easy": 0.5, "medium": 1.0, "hard": 1.5, "multi": 1.0}
    assert ratios == pytest.approx(expected, rel=1e-12)
    assert SynthConfig().noise == SynthConfig.preset("medium").noise == NoiseConfig()
    assert SynthConfig.preset("hard", noise={"scale": 2 * COCO_SCALE}).noise.scale == 2 * COCO_SCALE
    assert apply_overrides(SynthConfig.preset("easy"), ["noise.scale=1.0"]).noise.scale == 1.0


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
