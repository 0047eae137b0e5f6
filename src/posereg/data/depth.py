"""Per-joint depth targets for single-stage 3D regression (``data.depth: true``).

The convention of the official RLE 3D code (``regression_nf_3d.py``, ``simple_transform_3d.py``,
after Sun et al. 2018): a joint's target is ``(u, v, d)`` with ``u, v`` the crop-normalized image
location (:mod:`posereg.data.transforms`) and

    d = (Z_k - Z_root) / depth_range        # root-relative camera depth, in [-0.5, 0.5] near the root

where ``Z`` is the camera-frame depth in mm and ``depth_range`` the depth side of the official
``bbox_3d_shape`` (2000 mm). A joint whose ``|d| > 0.5`` gets weight 0, as officially. The crop
(an image-plane affine map) leaves ``d`` alone; a horizontal flip swaps left and right joints and
keeps the sign of ``d`` (a mirror of the image is a mirror of X, not of Z).

The root is the skeleton's ``pelvis`` when it has one (Human3.6M-17, joint 0, as the official
code), else the midpoint of ``left_hip`` and ``right_hip`` (COCO-17 has no pelvis keypoint).
"""

from __future__ import annotations

import numpy as np

from posereg.skeletons import Skeleton

__all__ = ["DEPTH_RANGE_MM", "root_joints", "root_of", "depth_target"]

#: The depth side of the official ``bbox_3d_shape = (2000, 2000, 2000)`` (mm).
DEPTH_RANGE_MM = 2000.0


def root_joints(skeleton: Skeleton) -> tuple[int, ...]:
    """The joints whose mean is the root: ``(pelvis,)``, else ``(left_hip, right_hip)``.

    Raises:
        ValueError: a skeleton with neither (naming it and what it needs).

    Example:
        >>> from posereg.skeletons import COCO17, H36M17
        >>> root_joints(COCO17), root_joints(H36M17)
        ((11, 12), (0,))
    """
    names = skeleton.keypoint_names
    if "pelvis" in names:
        return (names.index("pelvis"),)
    if "left_hip" in names and "right_hip" in names:
        return (names.index("left_hip"), names.index("right_hip"))
    raise ValueError(
        f"skeleton {skeleton.name} has no 'pelvis' and no 'left_hip'/'right_hip' keypoints; "
        "single-stage 3D (data.depth) needs one of them as the root joint"
    )


def root_of(joints: np.ndarray, root: tuple[int, ...]) -> np.ndarray:
    """The root of poses: joints (..., K, D) -> (..., D), the mean of the ``root`` joints."""
    return np.asarray(joints)[..., list(root), :].mean(axis=-2)


def depth_target(
    joints_3d: np.ndarray, root: tuple[int, ...], depth_range: float = DEPTH_RANGE_MM
) -> np.ndarray:
    """Root-relative normalized depth of one pose.

    Arguments:
        joints_3d: (K, 3) camera-frame joints, mm.
        root: :func:`root_joints` of the skeleton.
        depth_range: mm that map to a target span of 1 (official: 2000).

    Returns:
        (K,) ``(Z_k - Z_root) / depth_range``.

    Example:
        >>> j = np.array([[0, 0, 4000.0], [0, 0, 4200.0], [0, 0, 3800.0]])
        >>> depth_target(j, (1, 2)).tolist()
        [0.0, 0.1, -0.1]
    """
    z = np.asarray(joints_3d, dtype=np.float64)[:, 2]
    return (z - z[list(root)].mean()) / depth_range
