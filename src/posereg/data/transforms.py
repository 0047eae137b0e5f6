"""The one affine helper of posereg: box -> center/scale, crop transform, warp, inverse mapping, flips.

Coordinate conventions (the official RLE / SimpleBaseline ones):

- Image and crop coordinates are continuous pixel coordinates whose integer values are pixel
  centres (as in ``cv2.warpAffine``), so keypoints and pixels move with the same matrix.
- A crop is described by ``center`` (2,) = (x, y) and ``scale`` (2,) = (w, h), the size in
  image pixels of the region that fills the model input; ``center`` lands on
  ``(W / 2, H / 2)`` of the ``(H, W)`` input.
- Crop-normalized coordinates: ``u = x_crop / W - 0.5``, ``v = y_crop / H - 0.5``; the crop spans
  [-0.5, 0.5]. This is the space of the regression targets and of every codec's decoded output,
  and :func:`normalize_coords` / :func:`denormalize_coords` are the one place that converts.
- Horizontal flip of an image of width ``w``: ``x -> w - 1 - x`` and left/right swapped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from posereg.skeletons import Skeleton

__all__ = [
    "fix_aspect_ratio",
    "box_to_center_scale",
    "get_affine_transform",
    "affine_points",
    "warp_crop",
    "normalize_coords",
    "denormalize_coords",
    "crop_to_image",
    "flip_keypoints",
    "flip_matrix",
    "compose",
    "reduction_matrix",
    "lower_body_mask",
]

# Names whose joints form the "lower body" for the half-body augmentation; every other joint is
# upper body. Derived from the skeleton table's names so that table stays the only one.
_LOWER_BODY_WORDS = ("hip", "knee", "ankle", "foot", "pelvis", "root")


def fix_aspect_ratio(size: np.ndarray, aspect_ratio: float) -> np.ndarray:
    """Grow a box size (..., 2) = (w, h) along one side so that w / h == aspect_ratio.

    Arguments:
        size: box sizes (..., 2) in pixels.
        aspect_ratio: target width / height (192 / 256 = 0.75 for a 256x192 input).

    Returns:
        The enlarged sizes (..., 2); never smaller than the input on either side.
    """
    size = np.asarray(size, dtype=np.float64)
    w, h = size[..., 0], size[..., 1]
    wider = w > aspect_ratio * h
    out = np.stack([np.where(wider, w, h * aspect_ratio), np.where(wider, w / aspect_ratio, h)], -1)
    return out


def box_to_center_scale(
    bbox: np.ndarray | Sequence[float], aspect_ratio: float, padding: float = 1.25
) -> tuple[np.ndarray, np.ndarray]:
    """Box (x, y, w, h) -> crop ``center`` (x, y) and ``scale`` (w, h) in pixels.

    The box is grown to the model's aspect ratio, then multiplied by ``padding`` (1.25 in the
    official recipe). Works on one box (4,) or a stack (N, 4).

    Arguments:
        bbox: boxes (..., 4) as COCO (x, y, w, h); the centre is (x + w / 2, y + h / 2).
        aspect_ratio: input width / height.
        padding: context factor applied after the aspect fix.

    Returns:
        center (..., 2) and scale (..., 2), float64.

    Example:
        >>> c, s = box_to_center_scale([10, 20, 30, 80], aspect_ratio=0.75)
        >>> c.tolist(), s.tolist()
        ([25.0, 60.0], [75.0, 100.0])
    """
    bbox = np.asarray(bbox, dtype=np.float64)
    center = bbox[..., :2] + 0.5 * bbox[..., 2:4]
    scale = fix_aspect_ratio(bbox[..., 2:4], aspect_ratio) * padding
    return center, scale


def get_affine_transform(
    center: np.ndarray | Sequence[float],
    scale: np.ndarray | Sequence[float],
    rotation: float,
    output_size: tuple[int, int],
    inverse: bool = False,
) -> np.ndarray:
    """The (2, 3) matrix mapping image pixels to crop pixels (or back with ``inverse``).

    ``y = diag(W / scale_w, H / scale_h) @ R(-rotation) @ (x - center) + (W / 2, H / 2)``, with
    ``R(t)`` the rotation by ``t`` degrees in image axes (x right, y down), the same map as the
    official three-point construction when scale has the input's aspect ratio.

    Arguments:
        center: crop centre (2,) in image pixels.
        scale: crop size (2,) = (w, h) in image pixels.
        rotation: degrees; positive turns the person counter-clockwise in the crop.
        output_size: (H, W) of the crop.
        inverse: return the crop -> image matrix instead.

    Returns:
        matrix (2, 3), float64.
    """
    cx, cy = float(center[0]), float(center[1])
    out_h, out_w = output_size
    sx, sy = out_w / float(scale[0]), out_h / float(scale[1])
    t = math.radians(rotation)
    cos, sin = math.cos(t), math.sin(t)
    # forward: A = S @ R(-t); R(-t) = [[cos, sin], [-sin, cos]]
    a = np.array([[sx * cos, sx * sin], [-sy * sin, sy * cos]])
    if not inverse:
        b = np.array([out_w / 2.0, out_h / 2.0]) - a @ np.array([cx, cy])
        return np.concatenate([a, b[:, None]], axis=1)
    a_inv = np.array([[cos / sx, -sin / sy], [sin / sx, cos / sy]])  # R(t) @ S^-1
    b_inv = np.array([cx, cy]) - a_inv @ np.array([out_w / 2.0, out_h / 2.0])
    return np.concatenate([a_inv, b_inv[:, None]], axis=1)


def affine_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine matrix to points (..., 2); returns (..., 2) float64."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def _as3x3(matrix: np.ndarray) -> np.ndarray:
    return np.vstack([matrix, [0.0, 0.0, 1.0]])


def flip_matrix(image_width: int) -> np.ndarray:
    """(2, 3) matrix of the horizontal mirror ``x -> image_width - 1 - x``."""
    return np.array([[-1.0, 0.0, image_width - 1.0], [0.0, 1.0, 0.0]])


def reduction_matrix(factor: float) -> np.ndarray:
    """(2, 3) matrix mapping pixels of an image decoded at 1/factor size to full-size pixels.

    A reduced pixel i covers full pixels [factor * i, factor * (i + 1)), so its centre is
    ``factor * i + (factor - 1) / 2`` (JPEG DCT-domain scaling averages such blocks).
    """
    off = (factor - 1.0) / 2.0
    return np.array([[float(factor), 0.0, off], [0.0, float(factor), off]])


def compose(*matrices: np.ndarray) -> np.ndarray:
    """Compose (2, 3) affine maps right to left: ``compose(A, B)(x) == A(B(x))``."""
    out = np.eye(3)
    for m in matrices:
        out = out @ _as3x3(m)
    return out[:2]


def warp_crop(image: np.ndarray, matrix: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """Crop with one ``cv2.warpAffine`` (bilinear, zero border).

    Arguments:
        image: (h, w, C) uint8 source.
        matrix: (2, 3) source-pixel -> crop-pixel map.
        output_size: (H, W).

    Returns:
        The crop (H, W, C), same dtype as ``image``.
    """
    out_h, out_w = output_size
    return cv2.warpAffine(
        image,
        matrix,
        (int(out_w), int(out_h)),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def normalize_coords(xy: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """Crop pixels (..., 2) -> crop-normalized (..., 2): ``x / W - 0.5``, ``y / H - 0.5``."""
    h, w = input_size
    return np.asarray(xy, dtype=np.float64) / np.array([w, h], dtype=np.float64) - 0.5


def denormalize_coords(uv: np.ndarray | Tensor, input_size: tuple[int, int]) -> np.ndarray | Tensor:
    """Crop-normalized (..., 2) -> crop pixels (..., 2); inverse of :func:`normalize_coords`."""
    h, w = input_size
    if isinstance(uv, Tensor):
        return (uv + 0.5) * torch.tensor([w, h], dtype=uv.dtype, device=uv.device)
    return (np.asarray(uv, dtype=np.float64) + 0.5) * np.array([w, h], dtype=np.float64)


def crop_to_image(
    pred: np.ndarray | Tensor,
    center: np.ndarray | Tensor,
    scale: np.ndarray | Tensor,
    rotation: np.ndarray | Tensor | None = None,
) -> np.ndarray | Tensor:
    """Map crop-normalized predictions back to image pixels (the exact inverse of the crop).

    ``x_img = center + R(rotation) @ (pred * scale)``; with no rotation (evaluation) this is
    ``center + pred * scale``.

    Arguments:
        pred: decoded keypoints (B, K, 2) in crop-normalized coordinates.
        center: crop centres (B, 2) in image pixels (``Batch.center``).
        scale: crop sizes (B, 2) in image pixels (``Batch.scale``).
        rotation: optional (B,) degrees used for the crop.

    Returns:
        keypoints (B, K, 2) in image pixels: a float64 array, or a tensor of ``pred``'s dtype.
    """
    if isinstance(pred, Tensor):
        center_t = torch.as_tensor(center, dtype=pred.dtype, device=pred.device)
        scale_t = torch.as_tensor(scale, dtype=pred.dtype, device=pred.device)
        offset = pred * scale_t[:, None, :]
        if rotation is not None:
            t = torch.deg2rad(torch.as_tensor(rotation, dtype=pred.dtype, device=pred.device))
            cos, sin = torch.cos(t)[:, None], torch.sin(t)[:, None]
            offset = torch.stack(
                [
                    cos * offset[..., 0] - sin * offset[..., 1],
                    sin * offset[..., 0] + cos * offset[..., 1],
                ],
                dim=-1,
            )
        return center_t[:, None, :] + offset
    pred = np.asarray(pred, dtype=np.float64)
    offset = pred * np.asarray(scale, dtype=np.float64)[:, None, :]
    if rotation is not None:
        t = np.deg2rad(np.asarray(rotation, dtype=np.float64))
        cos, sin = np.cos(t)[:, None], np.sin(t)[:, None]
        offset = np.stack(
            [
                cos * offset[..., 0] - sin * offset[..., 1],
                sin * offset[..., 0] + cos * offset[..., 1],
            ],
            axis=-1,
        )
    return np.asarray(center, dtype=np.float64)[:, None, :] + offset


def flip_keypoints(keypoints: np.ndarray, image_width: int, skeleton: Skeleton) -> np.ndarray:
    """Mirror keypoints (..., K, C >= 2) in an image of width ``image_width`` and swap left/right.

    Applying it twice returns the input exactly.
    """
    out = np.array(keypoints, dtype=np.float64, copy=True)
    out[..., 0] = image_width - 1.0 - out[..., 0]
    return out[..., skeleton.flip_index, :]


def lower_body_mask(skeleton: Skeleton) -> np.ndarray:
    """Boolean (K,) mask of the lower-body joints (hips, knees, ankles, pelvis) by name."""
    return np.array(
        [any(word in name for word in _LOWER_BODY_WORDS) for name in skeleton.keypoint_names]
    )
