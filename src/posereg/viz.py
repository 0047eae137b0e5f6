"""Drawing: skeletons with per-keypoint confidence and predictive-region ellipses (OpenCV, BGR).

The ellipse outlines are the calibrated p-regions of :mod:`posereg.uncertainty` (semi-axes
r_p x sigma in pixels, computed by :meth:`posereg.uncertainty.PredictiveRegion.semi_axes`); the
translucent filled ellipses inside them are the calibrated sigma (c_k x sigma,
:attr:`posereg.predict.PoseResult.sigma_calibrated`: the typical error, E|error| per axis).
This module draws what it is given and converts nothing.
"""

from __future__ import annotations

import cv2
import numpy as np

from posereg.skeletons import Skeleton

__all__ = ["draw_pose", "draw_people", "confidence_color", "tile", "SIGMA_ALPHA"]

#: Opacity of the calibrated-sigma discs: the image and the limbs stay readable through them.
SIGMA_ALPHA = 0.35


def confidence_color(c: float) -> tuple[int, int, int]:
    """BGR colour from red (confidence 0) through yellow to green (confidence 1)."""
    c = float(np.clip(c, 0.0, 1.0))
    return (0, int(255 * min(1.0, 2 * c)), int(255 * min(1.0, 2 * (1 - c))))


def draw_pose(
    image: np.ndarray,
    keypoints: np.ndarray,
    skeleton: Skeleton,
    confidence: np.ndarray | None = None,
    ellipse_axes: np.ndarray | None = None,
    thickness: int = 2,
    limb_color: tuple[int, int, int] = (255, 180, 0),
    point_color: tuple[int, int, int] | None = None,
    sigma_axes: np.ndarray | None = None,
) -> np.ndarray:
    """Draw one pose on a copy of ``image`` (H, W, 3) uint8 BGR.

    Arguments:
        keypoints: (K, 2) pixels.
        skeleton: limbs to draw.
        confidence: (K,) keypoint colour from red (0) to green (1); None: all green.
        ellipse_axes: (K, 2) semi-axes (x, y) in pixels of an axis-aligned ellipse per keypoint,
            e.g. :attr:`posereg.predict.PoseResult.region` (the predictive p-region,
            r_p x sigma); None or non-finite rows: no ellipse.
        thickness: line width.
        limb_color: BGR colour of the limbs.
        point_color: one BGR colour for every keypoint (e.g. the truth beside a prediction);
            None: the confidence colour.
        sigma_axes: (K, 2) semi-axes (x, y) in pixels of a filled ellipse drawn at
            ``SIGMA_ALPHA`` opacity, e.g. :attr:`posereg.predict.PoseResult.sigma_calibrated`;
            None or non-finite rows: none.

    Returns:
        The drawn image (H, W, 3) uint8.
    """
    out = image.copy()
    pts = np.asarray(keypoints, dtype=np.float64)
    k = len(pts)
    conf = np.ones(k) if confidence is None else np.asarray(confidence, dtype=np.float64)
    colors = [point_color or confidence_color(c) for c in conf]
    shift = 4  # sub-pixel drawing
    scale = 1 << shift

    def p(i: int) -> tuple[int, int]:
        return int(round(pts[i, 0] * scale)), int(round(pts[i, 1] * scale))

    finite = np.isfinite(pts).all(axis=1)

    def axes_of(semi: np.ndarray) -> tuple[int, int]:
        return max(1, int(round(semi[0] * scale))), max(1, int(round(semi[1] * scale)))

    if sigma_axes is not None:  # filled on a copy, blended once: translucent discs
        sig = np.asarray(sigma_axes, dtype=np.float64)
        layer = out.copy()
        for i in range(k):
            if finite[i] and np.isfinite(sig[i]).all():
                cv2.ellipse(
                    layer, p(i), axes_of(sig[i]), 0, 0, 360, colors[i], -1, cv2.LINE_AA, shift
                )
        out = cv2.addWeighted(layer, SIGMA_ALPHA, out, 1.0 - SIGMA_ALPHA, 0.0)
    for a, b in skeleton.limbs:
        if finite[a] and finite[b]:
            cv2.line(out, p(a), p(b), limb_color, thickness, cv2.LINE_AA, shift)
    if ellipse_axes is not None:
        semi = np.asarray(ellipse_axes, dtype=np.float64)
        for i in range(k):
            if finite[i] and np.isfinite(semi[i]).all():
                cv2.ellipse(
                    out, p(i), axes_of(semi[i]), 0, 0, 360, colors[i], 1, cv2.LINE_AA, shift
                )
    for i in range(k):
        if finite[i]:
            cv2.circle(
                out,
                p(i),
                (thickness + 1) * scale,
                colors[i],
                -1,
                cv2.LINE_AA,
                shift,
            )
    return out


def draw_people(
    image: np.ndarray,
    keypoints: np.ndarray,
    skeleton: Skeleton,
    confidence: np.ndarray,
    ellipse_axes: np.ndarray | None,
    boxes: np.ndarray,
    sigma_axes: np.ndarray | None = None,
) -> np.ndarray:
    """Draw N people (box, limbs, region ellipses, calibrated-sigma discs, keypoints) on a copy of
    ``image`` (H, W, 3) BGR.

    Arguments:
        keypoints: (N, K, 2) pixels. confidence: (N, K).
        ellipse_axes: (N, K, 2) semi-axes in pixels (:attr:`posereg.predict.PoseResult.region`)
            or None.
        boxes: (N, 4) (x, y, w, h) pixels, drawn in grey.
        sigma_axes: (N, K, 2) semi-axes in pixels of the translucent discs
            (:attr:`posereg.predict.PoseResult.sigma_calibrated`) or None.
    """
    canvas = image.copy()
    thickness = max(1, round(max(canvas.shape[:2]) / 300))
    for i in range(len(keypoints)):
        x, y, bw, bh = boxes[i]
        cv2.rectangle(canvas, (int(x), int(y)), (int(x + bw), int(y + bh)), (200, 200, 200), 1)
        canvas = draw_pose(
            canvas, keypoints[i], skeleton, confidence[i],
            None if ellipse_axes is None else ellipse_axes[i], thickness=thickness,
            sigma_axes=None if sigma_axes is None else sigma_axes[i],
        )  # fmt: skip
    return canvas


def tile(images: list[np.ndarray], columns: int = 4, pad: int = 2) -> np.ndarray:
    """Arrange equally sized (H, W, 3) images in a grid (row-major), with a dark padding.

    Image ``n`` lands at row ``r, c = divmod(n, columns)``, top-left corner
    ``(x, y) = (pad + c * (W + pad), pad + r * (H + pad))``.
    """
    if not images:
        raise ValueError("tile() needs at least one image")
    h, w = images[0].shape[:2]
    rows = -(-len(images) // columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 30, dtype=np.uint8)
    for n, img in enumerate(images):
        r, c = divmod(n, columns)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + h, x : x + w] = img
    return grid
