"""Keypoint specifications (names, flip pairs, limbs, OKS sigmas) for COCO-17, MPII-16, Human3.6M-17.

The one table of skeletons in posereg: datasets, transforms, metrics, the synthetic
generator and visualisation all read from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Skeleton", "SKELETONS", "get_skeleton", "COCO17", "MPII16", "H36M17"]


@dataclass(frozen=True)
class Skeleton:
    """A keypoint layout.

    Arguments:
        name: short identifier (``"coco17"``, ``"mpii16"``, ``"h36m17"``).
        keypoint_names: the K joint names, in dataset order.
        flip_pairs: (left, right) index pairs swapped by a horizontal flip.
        limbs: (a, b) index pairs drawn as bones.
        sigmas: per-keypoint OKS constants sigma_i (OKS uses k_i = 2 sigma_i), length K.

    Example:
        >>> COCO17.num_keypoints, COCO17.index("left_wrist")
        (17, 9)
    """

    name: str
    keypoint_names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    limbs: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]

    def __post_init__(self) -> None:
        k = len(self.keypoint_names)
        if len(self.sigmas) != k:
            raise ValueError(f"{self.name}: {len(self.sigmas)} sigmas for {k} keypoints")
        for a, b in (*self.flip_pairs, *self.limbs):
            if not (0 <= a < k and 0 <= b < k):
                raise ValueError(f"{self.name}: index pair ({a}, {b}) outside 0..{k - 1}")

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    def index(self, keypoint_name: str) -> int:
        """Index of a keypoint by name; ValueError listing the valid names if unknown."""
        try:
            return self.keypoint_names.index(keypoint_name)
        except ValueError:
            raise ValueError(
                f"{self.name} has no keypoint {keypoint_name!r}; valid: {', '.join(self.keypoint_names)}"
            ) from None

    @property
    def flip_index(self) -> np.ndarray:
        """Permutation (K,) such that ``flipped[:, i] = keypoints[:, flip_index[i]]`` after mirroring."""
        perm = np.arange(self.num_keypoints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    @property
    def oks_k(self) -> np.ndarray:
        """COCO's k_i = 2 sigma_i (K,), the per-keypoint spread used by OKS."""
        return 2.0 * np.asarray(self.sigmas, dtype=np.float64)


COCO17 = Skeleton(
    name="coco17",
    keypoint_names=(
        "nose",
        "left_eye",
        "right_eye",
        "left_ear",
        "right_ear",
        "left_shoulder",
        "right_shoulder",
        "left_elbow",
        "right_elbow",
        "left_wrist",
        "right_wrist",
        "left_hip",
        "right_hip",
        "left_knee",
        "right_knee",
        "left_ankle",
        "right_ankle",
    ),  # fmt: skip
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    limbs=(
        (15, 13),
        (13, 11),
        (16, 14),
        (14, 12),
        (11, 12),
        (5, 11),
        (6, 12),
        (5, 6),
        (5, 7),
        (6, 8),
        (7, 9),
        (8, 10),
        (1, 2),
        (0, 1),
        (0, 2),
        (1, 3),
        (2, 4),
        (3, 5),
        (4, 6),
    ),  # fmt: skip  (COCO's own "skeleton" field, 0-based)
    # COCO's per-keypoint OKS sigmas (pycocotools COCOeval.Params.kpt_oks_sigmas).
    sigmas=(
        0.026,
        0.025,
        0.025,
        0.035,
        0.035,
        0.079,
        0.079,
        0.072,
        0.072,
        0.062,
        0.062,
        0.107,
        0.107,
        0.087,
        0.087,
        0.089,
        0.089,
    ),  # fmt: skip
)

MPII16 = Skeleton(
    name="mpii16",
    keypoint_names=(
        "right_ankle",
        "right_knee",
        "right_hip",
        "left_hip",
        "left_knee",
        "left_ankle",
        "pelvis",
        "thorax",
        "upper_neck",
        "head_top",
        "right_wrist",
        "right_elbow",
        "right_shoulder",
        "left_shoulder",
        "left_elbow",
        "left_wrist",
    ),  # fmt: skip
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    limbs=(
        (0, 1),
        (1, 2),
        (2, 6),
        (6, 3),
        (3, 4),
        (4, 5),
        (6, 7),
        (7, 8),
        (8, 9),
        (7, 12),
        (12, 11),
        (11, 10),
        (7, 13),
        (13, 14),
        (14, 15),
    ),  # fmt: skip
    # MPII has no official OKS constants; these are the ones MMPose uses for MPII.
    sigmas=(
        0.089,
        0.083,
        0.107,
        0.107,
        0.083,
        0.089,
        0.026,
        0.026,
        0.026,
        0.026,
        0.062,
        0.072,
        0.179,
        0.179,
        0.072,
        0.062,
    ),  # fmt: skip
)

H36M17 = Skeleton(
    name="h36m17",
    keypoint_names=(
        "pelvis",
        "right_hip",
        "right_knee",
        "right_ankle",
        "left_hip",
        "left_knee",
        "left_ankle",
        "spine",
        "thorax",
        "neck",
        "head",
        "left_shoulder",
        "left_elbow",
        "left_wrist",
        "right_shoulder",
        "right_elbow",
        "right_wrist",
    ),  # fmt: skip
    flip_pairs=((1, 4), (2, 5), (3, 6), (11, 14), (12, 15), (13, 16)),
    limbs=(
        (0, 1),
        (1, 2),
        (2, 3),
        (0, 4),
        (4, 5),
        (5, 6),
        (0, 7),
        (7, 8),
        (8, 9),
        (9, 10),
        (8, 11),
        (11, 12),
        (12, 13),
        (8, 14),
        (14, 15),
        (15, 16),
    ),  # fmt: skip
    # Human3.6M has no OKS constants: each joint takes the COCO sigma of its nearest COCO
    # counterpart (pelvis/spine as hips, thorax as shoulders, neck as nose, head as ears).
    sigmas=(
        0.107,
        0.107,
        0.087,
        0.089,
        0.107,
        0.087,
        0.089,
        0.107,
        0.079,
        0.026,
        0.035,
        0.079,
        0.072,
        0.062,
        0.079,
        0.072,
        0.062,
    ),  # fmt: skip
)

SKELETONS: dict[str, Skeleton] = {s.name: s for s in (COCO17, MPII16, H36M17)}


def get_skeleton(name: str) -> Skeleton:
    """Look up a skeleton by name; ValueError listing the valid names if unknown."""
    try:
        return SKELETONS[name]
    except KeyError:
        raise ValueError(f"unknown skeleton {name!r}; valid: {', '.join(SKELETONS)}") from None
