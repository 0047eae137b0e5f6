"""Crop outputs -> image space: the one crop-geometry decoder and depth codec.

The one place where a top-down model's decoded crop output (``model.predict``: crop-normalized
keypoints, sigma and scores, :class:`posereg.codecs.DecodedKeypoints`) becomes image pixels and
millimetres. Evaluation (:func:`posereg.engine.evaluate.predict_dataset`) and prediction
(:class:`posereg.predict.Predictor`) both call :func:`decode_crops`, and both write their COCO
results entries through :func:`posereg.metrics.make_coco_predictions`, so they cannot drift.
Inference code may import this module (it imports nothing of :mod:`posereg.engine`).

- crop geometry: ``x_img = center + mu x scale`` (:func:`posereg.data.transforms.crop_to_image`),
  ``sigma_img = sigma_hat x scale`` per axis;
- depth (single-stage 3D, :mod:`posereg.data.depth`): ``(d_k - d_root) x depth_range`` mm, the
  root the mean of :func:`posereg.data.depth.root_joints`; its sigma ``sigma_d x depth_range``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from posereg.codecs import DecodedKeypoints
from posereg.data.depth import DEPTH_RANGE_MM
from posereg.data.transforms import crop_to_image

__all__ = ["ImagePoses", "decode_crops", "root_relative_depth"]


@dataclass
class ImagePoses:
    """A batch of B crops' poses in image space.

    Attributes:
        keypoints: (B, K, 2) image pixels.
        sigma: (B, K, 2) per-axis sigma in image pixels (sigma_hat x crop size); None for a head
            without sigma.
        confidence: (B, K) the head's per-keypoint score.
        normalized: (B, K, 2) the crop-normalized keypoints the pixels came from.
        depth: (B, K) root-relative depth, mm (:func:`root_relative_depth`); None for 2D models.
        depth_sigma: (B, K) sigma of that depth, mm; None for 2D models or without sigma.
    """

    keypoints: np.ndarray
    sigma: np.ndarray | None
    confidence: np.ndarray
    normalized: np.ndarray
    depth: np.ndarray | None = None
    depth_sigma: np.ndarray | None = None


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy().astype(np.float64)


def root_relative_depth(
    depth: np.ndarray, root: Sequence[int], depth_range: float = DEPTH_RANGE_MM
) -> np.ndarray:
    """The depth codec's decode: normalized depth d (N, K) -> root-relative mm (N, K).

    ``(d_k - mean_{r in root} d_r) x depth_range`` (the inverse of
    :func:`posereg.data.depth.depth_target`, up to the root's absolute depth, which is not
    predicted); any common offset of d cancels.
    """
    d = np.asarray(depth, dtype=np.float64)
    return (d - d[:, list(root)].mean(axis=1, keepdims=True)) * depth_range


def decode_crops(
    decoded: DecodedKeypoints,
    center: np.ndarray,
    scale: np.ndarray,
    root: Sequence[int] | None = None,
    depth_range: float = DEPTH_RANGE_MM,
) -> ImagePoses:
    """Map a model's decoded crop output to image space.

    Arguments:
        decoded: ``model.predict``'s output: keypoints (B, K, 2|3) crop-normalized (the third
            coordinate a 3D model's normalized depth d), scores (B, K), sigma (B, K, 2|3) or None.
        center: (B, 2) crop centres, image pixels.
        scale: (B, 2) crop sizes (w, h), image pixels.
        root: the root joints of a 3D model's skeleton (:func:`posereg.data.depth.root_joints`);
            required when the keypoints have 3 coordinates.
        depth_range: mm per unit of d (``data.depth_range_mm``).

    Returns:
        :class:`ImagePoses` (float64 arrays).

    Raises:
        ValueError: 3D keypoints without ``root``.
    """
    mu = _numpy(decoded.keypoints[..., :2])
    scale = np.asarray(scale)
    sigma = None if decoded.sigma is None else _numpy(decoded.sigma[..., :2]) * scale[:, None, :]
    depth = depth_sigma = None
    if decoded.keypoints.shape[-1] == 3:
        if root is None:
            raise ValueError("decode_crops: a 3D model's keypoints need the skeleton's root joints")
        depth = root_relative_depth(_numpy(decoded.keypoints[..., 2]), root, depth_range)
        if decoded.sigma is not None:
            depth_sigma = _numpy(decoded.sigma[..., 2]) * depth_range
    return ImagePoses(
        keypoints=crop_to_image(mu, center, scale),
        sigma=sigma,
        confidence=_numpy(decoded.scores),
        normalized=mu,
        depth=depth,
        depth_sigma=depth_sigma,
    )
