"""The label-noise model: how human annotators would have labelled the clean keypoints.

COCO's per-keypoint OKS constants k_i = 2 sigma_i were measured as the spread of redundant human
annotations of the same keypoint, relative to the object scale s = sqrt(area) (Ronchi & Perona,
"Benchmarking and Error Diagnosis in Multi-Instance Pose Estimation", ICCV 2017; the COCO
keypoint evaluation page). We use them as the annotators' spread (:data:`COCO_SCALE` below says
how the measured sigma_i becomes a per-axis standard deviation):

- labelled, visible (v = 2): label = truth + N(0, (scale k_i s)^2) per axis, with
  ``scale = COCO_SCALE`` = 1 / (2 sqrt 2) ~ 0.354 by default, i.e. a per-axis standard deviation
  of sigma_i s / sqrt 2 and an RMS 2D distance of sigma_i s, COCO's measurement;
- labelled, occluded (v = 1): the same with ``occluded_factor`` (2) times the spread;
- gross error: with probability ``outlier_prob`` (0.03) the label is instead truth + a Laplace
  draw per axis whose standard deviation is ``outlier_scale`` (5) times that spread;
- left/right swap: with probability ``swap_prob`` (0.01) per person and left/right pair of the
  skeleton (for COCO-17: eyes, ears, shoulders, elbows, wrists, hips, knees, ankles) the two
  labels trade places, when both are labelled.

``scale`` multiplies every spread (the difficulty presets use 0.5, 1 and 1.5 times
``COCO_SCALE``). Visibility codes
are decided from the clean points and never changed by noise (the generator clips a label that
noise pushes outside the image back to its border), and a swap moves positions but leaves each
slot's v code in place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from posereg.config import FRACTION, NON_NEGATIVE, Range, from_dict, to_dict

__all__ = ["COCO_SCALE", "NoiseConfig", "NoisyLabels", "apply_label_noise"]

#: The ``NoiseConfig.scale`` that reproduces COCO's measured annotator spread: 1 / (2 sqrt 2).
#:
#: COCO's keypoint evaluation page defines, per keypoint type i, sigma_i^2 = E[d_i^2 / s^2],
#: with d_i the Euclidean (2D) distance between a redundant human annotation and the keypoint
#: and s = sqrt(area); OKS uses k_i = 2 sigma_i. So sigma_i s is an RMS *distance*. The model
#: draws each axis independently, label - truth = (e_x, e_y) with e_x, e_y ~ N(0, a^2), so
#: E[d^2] = E[e_x^2] + E[e_y^2] = 2 a^2. Matching COCO, 2 a^2 = sigma_i^2 s^2 gives
#: a = sigma_i s / sqrt 2 = k_i s / (2 sqrt 2), i.e. ``scale`` = a / (k_i s) = 1 / (2 sqrt 2)
#: = 0.35355... . (``scale = 1``, a = k_i s per axis, the default before, is an RMS distance
#: of sqrt 2 k_i s = 2 sqrt 2 sigma_i s: 2.83 times what COCO measured.)
COCO_SCALE = 1.0 / (2.0 * math.sqrt(2.0))


@dataclass(frozen=True)
class NoiseConfig:
    """Settings of the label-noise model (defaults: the COCO-derived model above).

    Arguments:
        scale: per-axis standard deviation of a visible keypoint's label in units of k_i * s
            (default :data:`COCO_SCALE`, COCO's measured spread; 0 turns the Gaussian part off).
        occluded_factor: spread multiplier for occluded (v = 1) keypoints.
        outlier_prob: probability that a labelled keypoint is a gross error.
        outlier_scale: standard deviation of a gross error, in units of the keypoint's spread.
        swap_prob: probability per person and left/right pair that the two labels swap.

    Example:
        >>> NoiseConfig(scale=0.5).outlier_prob
        0.03
    """

    scale: float = COCO_SCALE
    occluded_factor: float = 2.0
    outlier_prob: float = 0.03
    outlier_scale: float = 5.0
    swap_prob: float = 0.01

    ranges: ClassVar[dict[str, Range]] = {
        "scale": NON_NEGATIVE, "occluded_factor": NON_NEGATIVE, "outlier_prob": FRACTION,
        "outlier_scale": NON_NEGATIVE, "swap_prob": FRACTION,
    }  # fmt: skip

    def validate(self) -> None:
        """Check types and ``ranges`` (``posereg.config``); ConfigError naming ``noise.<field>``."""
        from_dict(NoiseConfig, to_dict(self), prefix="noise.")

    @classmethod
    def off(cls) -> NoiseConfig:
        """No label noise at all (labels equal the clean truth)."""
        return cls(scale=0.0, outlier_prob=0.0, swap_prob=0.0)


@dataclass
class NoisyLabels:
    """Noisy labels of P people with K keypoints.

    Arguments:
        keypoints: noisy (x, y) labels (P, K, 2); zero where v = 0.
        outlier: which keypoints are gross errors (P, K) bool.
        swapped: which left/right pairs were swapped (P, num_pairs) bool.
    """

    keypoints: np.ndarray
    outlier: np.ndarray
    swapped: np.ndarray


def apply_label_noise(
    rng: np.random.Generator,
    clean: np.ndarray,
    visibility: np.ndarray,
    area: np.ndarray,
    k: np.ndarray,
    flip_pairs: tuple[tuple[int, int], ...],
    config: NoiseConfig,
) -> NoisyLabels:
    """Draw annotator labels around the clean keypoints.

    Arguments:
        rng: random generator.
        clean: clean keypoints (P, K, 2), pixels.
        visibility: COCO codes (P, K) in {0, 1, 2}.
        area: person area (P,), pixels (s = sqrt(area)).
        k: per-keypoint spread k_i (K,) (``Skeleton.oks_k``).
        flip_pairs: left/right index pairs that may swap.
        config: the noise settings.

    Returns:
        ``NoisyLabels``; keypoints with v = 0 stay at (0, 0).
    """
    p, n_kp = visibility.shape
    labelled = visibility > 0
    s = np.sqrt(np.asarray(area, dtype=np.float64))
    sd = (
        config.scale
        * k[None, :]
        * s[:, None]
        * np.where(visibility == 1, config.occluded_factor, 1.0)
    )  # (P, K)
    gauss = rng.standard_normal((p, n_kp, 2)) * sd[..., None]
    # A Laplace with scale b has standard deviation sqrt(2) b.
    b = config.outlier_scale * sd / np.sqrt(2.0)
    laplace = rng.laplace(0.0, 1.0, (p, n_kp, 2)) * b[..., None]
    outlier = (rng.random((p, n_kp)) < config.outlier_prob) & labelled
    labels = clean + np.where(outlier[..., None], laplace, gauss)
    pairs = np.asarray(flip_pairs, dtype=np.int64).reshape(-1, 2)
    swapped = (
        (rng.random((p, len(pairs))) < config.swap_prob)
        & labelled[:, pairs[:, 0]]
        & labelled[:, pairs[:, 1]]
    )
    for q, (a, c) in enumerate(pairs):
        m = swapped[:, q]
        labels[m, a], labels[m, c] = labels[m, c].copy(), labels[m, a].copy()
    labels[~labelled] = 0.0
    return NoisyLabels(keypoints=labels, outlier=outlier, swapped=swapped)
