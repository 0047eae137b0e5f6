"""PCK for any reference size, and MPII PCKh@0.5, PCKh@0.1 and AUC.

A keypoint is correct when ``||pred - target|| <= threshold x reference size`` (``<=`` as in the
official MPII evaluation; ties have measure zero). MPII's reference is the head size
``0.6 x ||head-box diagonal||`` from the official ground truth .mat (``headboxes_src``); without the
.mat, :func:`head_size_from_joints` gives a documented fallback that is NOT comparable to
published PCKh (the report says which one was used).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posereg.data.badinput import BadInputError
from posereg.skeletons import MPII16, Skeleton

__all__ = [
    "PCKResult",
    "PCKhResult",
    "pck",
    "pckh",
    "MPIIGroundTruth",
    "load_mpii_gt_mat",
    "head_size_from_joints",
    "evaluate_mpii",
    "MPII_HEAD_SIZE_FACTOR",
]

MPII_HEAD_SIZE_FACTOR = 0.6  # SC_BIAS of the official MPII evaluation
AUC_THRESHOLDS = np.linspace(0.0, 0.5, 51)  # 0, 0.01, ..., 0.5


@dataclass(frozen=True)
class PCKResult:
    """PCK at one threshold.

    Attributes:
        value: fraction of counted keypoints that are correct, in [0, 1] (NaN if none counted).
        per_joint: (K,) the same per joint.
        threshold: the fraction of the reference size.
        num_counted: keypoints counted.
    """

    value: float
    per_joint: np.ndarray
    threshold: float
    num_counted: int


@dataclass(frozen=True)
class PCKhResult:
    """MPII-style PCKh report (fractions in [0, 1]).

    Attributes:
        pckh_05, pckh_01: PCKh at 0.5 and 0.1 of the head size.
        auc: area under PCKh(a) for a in [0, 0.5] (51 steps, trapezoid), divided by 0.5.
        per_joint_05, per_joint_01: (K,) per-joint values.
        head_size_source: ``"headboxes"`` (official .mat) or ``"joints"`` (fallback).
    """

    pckh_05: float
    pckh_01: float
    auc: float
    per_joint_05: np.ndarray
    per_joint_01: np.ndarray
    head_size_source: str

    def __str__(self) -> str:
        note = (
            ""
            if self.head_size_source == "headboxes"
            else " (fallback head size: not comparable to official PCKh)"
        )
        return f"PCKh@0.5={self.pckh_05:.4f} PCKh@0.1={self.pckh_01:.4f} AUC={self.auc:.4f}{note}"


def _normalized_errors(pred, target, visible, reference_size):
    pred = np.asarray(pred, dtype=np.float64)[..., :2]
    target = np.asarray(target, dtype=np.float64)[..., :2]
    if pred.shape != target.shape:
        raise ValueError(f"pred {pred.shape} and target {target.shape} differ")
    visible = np.asarray(visible, dtype=bool)
    ref = np.asarray(reference_size, dtype=np.float64).reshape(-1, 1)
    if np.any(ref[:, 0][visible.any(axis=1)] <= 0):
        raise ValueError("reference sizes must be > 0 for every instance with counted keypoints")
    err = np.linalg.norm(pred - target, axis=-1) / np.where(ref > 0, ref, 1.0)
    return err, visible


def _fraction(correct: np.ndarray, visible: np.ndarray) -> tuple[float, np.ndarray]:
    per_joint_count = visible.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_joint = (correct & visible).sum(axis=0) / per_joint_count
        total = (correct & visible).sum() / visible.sum()
    return float(total), per_joint


def pck(
    pred: np.ndarray,
    target: np.ndarray,
    visible: np.ndarray,
    reference_size: np.ndarray,
    threshold: float,
) -> PCKResult:
    """PCK@threshold for any reference size (head size, torso size, box size ...).

    Arguments:
        pred: (N, K, 2) predicted keypoints.
        target: (N, K, 2) ground truth, same pixel frame.
        visible: (N, K) which keypoints count.
        reference_size: (N,) the normalizing length per instance.
        threshold: fraction of the reference size.
    """
    err, visible = _normalized_errors(pred, target, visible, reference_size)
    value, per_joint = _fraction(err <= threshold, visible)
    return PCKResult(value, per_joint, float(threshold), int(visible.sum()))


def pckh(
    pred: np.ndarray,
    target: np.ndarray,
    visible: np.ndarray,
    head_size: np.ndarray,
    head_size_source: str = "headboxes",
) -> PCKhResult:
    """PCKh@0.5, PCKh@0.1 and AUC over thresholds 0..0.5.

    Arguments:
        pred, target: (N, K, 2) keypoints.
        visible: (N, K) counted keypoints (MPII: not ``jnt_missing``).
        head_size: (N,) head sizes (MPII: 0.6 x head-box diagonal).
        head_size_source: recorded in the result.
    """
    err, visible = _normalized_errors(pred, target, visible, head_size)
    v05, j05 = _fraction(err <= 0.5, visible)
    v01, j01 = _fraction(err <= 0.1, visible)
    curve = np.array([_fraction(err <= a, visible)[0] for a in AUC_THRESHOLDS])
    auc = float(
        np.sum((curve[1:] + curve[:-1]) / 2.0 * np.diff(AUC_THRESHOLDS)) / AUC_THRESHOLDS[-1]
    )
    return PCKhResult(v05, v01, auc, j05, j01, head_size_source)


@dataclass(frozen=True)
class MPIIGroundTruth:
    """The official MPII validation ground truth (``gt_valid.mat``), in 0-based pixels.

    Attributes:
        joint_names: the 16 names of ``dataset_joints``.
        missing: (N, 16) bool, ``jnt_missing``.
        keypoints: (N, 16, 2) ``pos_gt_src`` minus 1.
        headboxes: (N, 2, 2) ``headboxes_src`` corners (top-left, bottom-right) minus 1.
        head_size: (N,) 0.6 x head-box diagonal.
    """

    joint_names: tuple[str, ...]
    missing: np.ndarray
    keypoints: np.ndarray
    headboxes: np.ndarray
    head_size: np.ndarray


def load_mpii_gt_mat(path: str | Path) -> MPIIGroundTruth:
    """Read the official MPII ground truth .mat (``jnt_missing`` (16, N), ``pos_gt_src``
    (16, 2, N), ``headboxes_src`` (2, 2, N), ``dataset_joints`` (1, 16) names).

    Raises:
        BadInputError: a missing file, field or an unexpected shape.
    """
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except FileNotFoundError:
        raise BadInputError(path, "", "MPII ground-truth .mat not found") from None
    except (ValueError, OSError) as e:
        raise BadInputError(path, "", f"not a readable .mat file ({e})") from None
    fields = ("jnt_missing", "pos_gt_src", "headboxes_src", "dataset_joints")
    absent = [f for f in fields if f not in mat]
    if absent:
        raise BadInputError(
            path, "", f"missing fields {absent}; expected the official gt_valid.mat layout"
        )
    missing = np.asarray(mat["jnt_missing"])
    pos = np.asarray(mat["pos_gt_src"], dtype=np.float64)
    boxes = np.asarray(mat["headboxes_src"], dtype=np.float64)
    n = missing.shape[1] if missing.ndim == 2 else -1
    if missing.shape != (16, n) or pos.shape != (16, 2, n) or boxes.shape != (2, 2, n):
        raise BadInputError(
            path,
            "",
            f"shapes jnt_missing {missing.shape}, pos_gt_src {pos.shape}, headboxes_src {boxes.shape}; "
            "expected (16, N), (16, 2, N), (2, 2, N)",
        )
    names = tuple(str(np.asarray(x).ravel()[0]) for x in np.asarray(mat["dataset_joints"]).ravel())
    headboxes = boxes.transpose(2, 0, 1) - 1.0  # (N, corner, xy)
    head_size = MPII_HEAD_SIZE_FACTOR * np.linalg.norm(headboxes[:, 1] - headboxes[:, 0], axis=-1)
    return MPIIGroundTruth(
        joint_names=names,
        missing=missing.T.astype(bool),
        keypoints=pos.transpose(2, 0, 1) - 1.0,
        headboxes=headboxes,
        head_size=head_size,
    )


def head_size_from_joints(keypoints: np.ndarray, skeleton: Skeleton = MPII16) -> np.ndarray:
    """Fallback head size when no head boxes exist: ``||head_top - upper_neck||``.

    The head segment length approximates 0.6 x the head-box diagonal only roughly; numbers
    computed with it are labelled ``head_size_source="joints"`` and are not comparable with
    published PCKh.

    Arguments:
        keypoints: (N, K, >=2) ground truth with ``head_top`` and ``upper_neck`` joints.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    top, neck = kp[:, skeleton.index("head_top"), :2], kp[:, skeleton.index("upper_neck"), :2]
    return np.linalg.norm(top - neck, axis=-1)


def evaluate_mpii(
    pred: np.ndarray,
    target: np.ndarray | None = None,
    visible: np.ndarray | None = None,
    gt: MPIIGroundTruth | None = None,
) -> PCKhResult:
    """MPII PCKh with head boxes when the official .mat is given, else the joint fallback.

    Arguments:
        pred: (N, 16, 2) predictions in 0-based pixels.
        target, visible: (N, 16, 2) and (N, 16) ground truth, used when ``gt`` is None.
        gt: the official ground truth (:func:`load_mpii_gt_mat`); gives targets, missing joints
            and head boxes.
    """
    if gt is not None:
        return pckh(pred, gt.keypoints, ~gt.missing, gt.head_size, "headboxes")
    if target is None or visible is None:
        raise ValueError("evaluate_mpii() needs either gt (the .mat) or target and visible")
    head = head_size_from_joints(target)
    visible = np.asarray(visible, dtype=bool) & (head > 0)[:, None]
    return pckh(pred, target, visible, np.where(head > 0, head, 1.0), "joints")
