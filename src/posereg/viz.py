"""Drawing: skeletons with per-keypoint confidence and sigma ellipses (OpenCV, BGR images)."""

from __future__ import annotations

import cv2
import numpy as np

from posereg.skeletons import Skeleton

__all__ = ["draw_pose", "draw_people", "confidence_color", "tile"]


def confidence_color(c: float) -> tuple[int, int, int]:
    """BGR colour from red (confidence 0) through yellow to green (confidence 1)."""
    c = float(np.clip(c, 0.0, 1.0))
    return (0, int(255 * min(1.0, 2 * c)), int(255 * min(1.0, 2 * (1 - c))))


def draw_pose(
    image: np.ndarray,
    keypoints: np.ndarray,
    skeleton: Skeleton,
    confidence: np.ndarray | None = None,
    sigma: np.ndarray | None = None,
    ellipse_scale: float = 1.0,
    thickness: int = 2,
    limb_color: tuple[int, int, int] = (255, 180, 0),
    point_color: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """Draw one pose on a copy of ``image`` (H, W, 3) uint8 BGR.

    Arguments:
        keypoints: (K, 2) pixels.
        skeleton: limbs to draw.
        confidence: (K,) keypoint colour from red (0) to green (1); None: all green.
        sigma: (K, 2) per-axis sigma in pixels, drawn as axis-aligned ellipses of
            ``ellipse_scale`` x sigma (the head predicts independent per-axis scales). RLE's
            sigma is a relative scale: pass the evaluation's ``sigma_calibration`` (median
            |error| / sigma) as ``ellipse_scale`` to draw the typical error.
        thickness: line width.
        limb_color: BGR colour of the limbs.
        point_color: one BGR colour for every keypoint (e.g. the truth beside a prediction);
            None: the confidence colour.

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
    for a, b in skeleton.limbs:
        if finite[a] and finite[b]:
            cv2.line(out, p(a), p(b), limb_color, thickness, cv2.LINE_AA, shift)
    if sigma is not None:
        sig = np.asarray(sigma, dtype=np.float64) * ellipse_scale
        for i in range(k):
            if finite[i] and np.isfinite(sig[i]).all():
                axes = (
                    max(1, int(round(sig[i, 0] * scale))),
                    max(1, int(round(sig[i, 1] * scale))),
                )
                cv2.ellipse(out, p(i), axes, 0, 0, 360, colors[i], 1, cv2.LINE_AA, shift)
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
    sigma: np.ndarray | None,
    boxes: np.ndarray,
    ellipse_scale: float = 1.0,
) -> np.ndarray:
    """Draw N people (box, limbs, sigma ellipses, keypoints) on a copy of ``image`` (H, W, 3) BGR.

    Arguments:
        keypoints: (N, K, 2) pixels. confidence: (N, K). sigma: (N, K, 2) pixels or None.
        boxes: (N, 4) (x, y, w, h) pixels, drawn in grey.
        ellipse_scale: see :func:`draw_pose`.
    """
    canvas = image.copy()
    thickness = max(1, round(max(canvas.shape[:2]) / 300))
    for i in range(len(keypoints)):
        x, y, bw, bh = boxes[i]
        cv2.rectangle(canvas, (int(x), int(y)), (int(x + bw), int(y + bh)), (200, 200, 200), 1)
        canvas = draw_pose(
            canvas, keypoints[i], skeleton, confidence[i], None if sigma is None else sigma[i],
            ellipse_scale, thickness=thickness,
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
