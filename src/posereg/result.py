"""The result of pose inference on one image, :class:`PoseResult` (NumPy only: a leaf module)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PoseResult"]


@dataclass
class PoseResult:
    """Poses of the N people in one image: what every image family's inference returns.

    The one output that ``posereg predict``, ``video``, ``serve``, ``eval`` and ``export`` read,
    whatever model made it (:mod:`posereg.family`). Everything is in pixels of the (upright)
    image. The boxes are the people's boxes whichever way they were found: given by the caller
    or a person detector (top-down), or predicted by the model itself (detector-free families:
    an end-to-end or one-stage multi-person model); the scores are the matching instance scores.

    Attributes:
        keypoints: (N, K, 2) image pixels.
        sigma: (N, K, 2) per-axis sigma in image pixels; None for a head without sigma.
        confidence: (N, K) the head's per-keypoint score (1 - mean_d sigma_hat, Eq. 9, for heads
            with sigma; the heatmap maximum for the heatmap head).
        boxes: (N, 4) the (x, y, w, h) person boxes: those the keypoints were predicted in
            (top-down), or the model's own (detector-free families).
        scores: (N,) instance scores; top-down: by the evaluation's rule (``eval.score_rule``;
            official: box score + mean_k(c) + max_k(c)).
        region: (N, K, 2) semi-axes (x, y) in image pixels of each keypoint's predictive
            ``region_p``-region, r_p x sigma: the ellipse that holds the true keypoint with
            probability ``region_p`` if the model is calibrated (:mod:`posereg.uncertainty`);
            None when the head's loss learns no density (L1, L2, heatmap, integral).
        region_p: the region's level p (``Predictor.region_level``, default 0.9); None with
            ``region``.
        depth: (N, K) a 3D model's root-relative depth per joint, mm (``(d_k - d_root) x
            depth_range``; root: pelvis, or mid-hip for COCO-17; the absolute distance is not
            predicted); None for 2D models.
        depth_sigma: (N, K) the sigma of that depth, mm, for 3D heads that predict one.
        sigma_calibrated: (N, K, 2) c_k x sigma in image pixels: a Laplace scale per axis fitted
            on the run's validation set (``Predictor.calibration``; c = 1 for a checkpoint
            without one), so that E|error| ~ sigma_calibrated; None with ``sigma``.
    """

    keypoints: np.ndarray
    sigma: np.ndarray | None
    confidence: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    region: np.ndarray | None = None
    region_p: float | None = None
    depth: np.ndarray | None = None
    depth_sigma: np.ndarray | None = None
    sigma_calibrated: np.ndarray | None = None

    def select(self, people: np.ndarray) -> PoseResult:
        """The result restricted to the people ``people`` (indices or a boolean mask)."""

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[people]

        return PoseResult(
            self.keypoints[people],
            pick(self.sigma),
            self.confidence[people],
            self.boxes[people],
            self.scores[people],
            pick(self.region),
            self.region_p,
            pick(self.depth),
            pick(self.depth_sigma),
            pick(self.sigma_calibrated),
        )
