"""Stick figures with exact COCO-17 keypoints: multi-person images in milliseconds.

Not the rendered bodies of :mod:`posereg.synth.generate` (no 3D, no occlusion model, no label
noise): a fixed standing pose, jittered, drawn as coloured limbs (the person's left limbs red,
right limbs blue, the rest green, a yellow head, so that left and right can be told apart). For
tests and benchmarks that need a few images with people whose keypoints are known exactly
(the dense model's overfit test and latency benchmark).

Example:
    >>> target = stick_people([(40.0, 60.0, 70.0), (100.0, 64.0, 50.0)], seed=0)
    >>> target["boxes"].shape, target["keypoints"].shape
    (torch.Size([2, 4]), torch.Size([2, 17, 3]))
    >>> draw_sticks((128, 128), target).shape
    torch.Size([3, 128, 128])
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from posereg.skeletons import COCO17

__all__ = ["STANDING", "draw_sticks", "stick_people"]

#: A standing person, COCO-17 order, (x, y) in units of the person's height about its centre.
STANDING = np.array(
    [
        (0.0, -0.42), (0.03, -0.45), (-0.03, -0.45), (0.06, -0.43), (-0.06, -0.43),
        (0.12, -0.30), (-0.12, -0.30), (0.20, -0.12), (-0.20, -0.12), (0.25, 0.05),
        (-0.25, 0.05), (0.08, 0.02), (-0.08, 0.02), (0.10, 0.24), (-0.10, 0.24),
        (0.10, 0.46), (-0.10, 0.46),
    ]
)  # fmt: skip

#: The box's margin around the keypoints, in units of the height.
BOX_MARGIN = 0.06


def stick_people(
    specs: Sequence[tuple[float, float, float]],
    seed: int = 0,
    jitter: float = 0.03,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Tensor]:
    """People given as (centre x, centre y, height) in pixels -> their targets in torchvision's
    detection format: ``boxes`` (N, 4) x1 y1 x2 y2 (the keypoints' extent plus a margin),
    ``labels`` (N,) ones, ``keypoints`` (N, 17, 3) with v = 2.

    Each keypoint of :data:`STANDING` moves by a normal draw of std ``jitter`` heights.
    """
    rng = np.random.default_rng(seed)
    boxes, keypoints = [], []
    for cx, cy, height in specs:
        pose = STANDING + rng.normal(0.0, jitter, STANDING.shape)
        kp = np.stack([cx + pose[:, 0] * height, cy + pose[:, 1] * height], 1)
        m = BOX_MARGIN * height
        lo, hi = kp.min(0) - m, kp.max(0) + m
        boxes.append([lo[0], lo[1], hi[0], hi[1]])
        keypoints.append(np.concatenate([kp, np.full((len(kp), 1), 2.0)], 1))
    k = COCO17.num_keypoints
    return {
        "boxes": torch.tensor(np.array(boxes).reshape(-1, 4), dtype=dtype),
        "labels": torch.ones(len(boxes), dtype=torch.int64),
        "keypoints": torch.tensor(np.array(keypoints).reshape(-1, k, 3), dtype=dtype),
    }


def draw_sticks(size: tuple[int, int], target: dict[str, Tensor]) -> Tensor:
    """An (H, W) image of the people of ``target`` (:func:`stick_people`): (3, H, W) in [0, 1]."""
    img = np.full((*size, 3), 40, np.uint8)
    left, right, middle = (230, 60, 60), (60, 60, 230), (60, 230, 60)
    for kp, box in zip(target["keypoints"].numpy(), target["boxes"].numpy(), strict=True):
        height = float(box[3] - box[1])
        for a, b in COCO17.limbs:
            # COCO-17: odd indices are the left keypoints, even ones (but the nose) the right
            same_side = a > 0 and b > 0 and a % 2 == b % 2
            colour = (left if a % 2 else right) if same_side else middle
            pa, pb = np.round(kp[a, :2]).astype(int), np.round(kp[b, :2]).astype(int)
            cv2.line(img, tuple(pa.tolist()), tuple(pb.tolist()), colour, max(2, int(height / 25)))
        head = np.round(kp[0, :2]).astype(int)
        cv2.circle(img, tuple(head.tolist()), max(3, int(height / 14)), (230, 230, 60), -1)
    return torch.from_numpy(img).permute(2, 0, 1).float() / 255
