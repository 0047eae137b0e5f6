"""Single-stage 3D evaluation (``data.depth: true``): predicted (u, v, d) -> root-relative MPJPE.

The protocol of Integral regression (Sun et al., ECCV 2018) and of the official RLE code
(``rlepose/datasets/h36m.py``, ``H36m.evaluate``):

1. the predicted depth is made root-relative (``d_k - d_root``; the official model does this in
   its forward at evaluation) and scaled to mm (``x depth_range``, official 2000 mm), by the one
   depth codec :func:`posereg.decode.root_relative_depth` that ``posereg predict`` uses too
   (:func:`posereg.engine.evaluate.predict_dataset` hands it over in mm);
2. the camera depth of each joint is the ground-truth root depth plus that: ``Z_k = Z_root^gt +
   (d_k - d_root) * depth_range`` (the absolute distance is not predicted);
3. the predicted image point (u, v) (image pixels, after the flip test) is back-projected with the
   annotation's intrinsics, ``X_k = Z_k K^-1 (u_k, v_k, 1)`` (:func:`posereg.metrics.mpjpe.back_project`);
4. prediction and ground truth are made root-relative (root: pelvis, or mid-hip for COCO-17;
   :func:`posereg.data.depth.root_joints`) and MPJPE / PA-MPJPE are taken over all K joints
   (:func:`posereg.metrics.mpjpe.evaluate_3d`), in mm.
"""

from __future__ import annotations

import numpy as np

from posereg.data.dataset import TopDownDataset
from posereg.data.depth import root_joints, root_of
from posereg.metrics.mpjpe import Pose3DMetrics, back_project, evaluate_3d

__all__ = ["camera_joints", "evaluate_depth"]


def camera_joints(
    uv: np.ndarray, depth: np.ndarray, root_depth: np.ndarray, intrinsics: np.ndarray
) -> np.ndarray:
    """Predicted camera-frame joints from (u, v) and root-relative depth, with the true root depth.

    Arguments:
        uv: (N, K, 2) predicted image pixels.
        depth: (N, K) predicted root-relative depth, mm (:func:`posereg.decode.root_relative_depth`).
        root_depth: (N,) ground-truth camera depth of the root, mm.
        intrinsics: (N, 3, 3).

    Returns:
        (N, K, 3) mm, camera frame (not yet root-relative).
    """
    return back_project(uv, root_depth[:, None] + depth, intrinsics)


def evaluate_depth(
    uv: np.ndarray, depth: np.ndarray, dataset: TopDownDataset, keep: np.ndarray | None = None
) -> Pose3DMetrics:
    """Root-relative MPJPE, PA-MPJPE (and N-MPJPE, 3D PCK, AUC) of a 3D model's predictions.

    Arguments:
        uv: (N, K, 2) predicted image pixels, dataset order.
        depth: (N, K) predicted root-relative depth, mm, dataset order
            (:attr:`posereg.engine.evaluate.Predictions.depth`).
        dataset: a dataset built with ``depth_range`` (its table holds joints_3d, intrinsics).
        keep: (N,) instances to count (e.g. not on unreadable images); default all.
    """
    table = dataset.table
    if table.joints_3d is None or table.intrinsics is None or dataset.depth_range is None:
        raise ValueError(f"{table.source}: 3D evaluation needs a dataset built with depth targets")
    keep = np.ones(len(table), dtype=bool) if keep is None else keep
    root = root_joints(dataset.skeleton)
    truth = table.joints_3d[keep]
    pred = camera_joints(uv[keep], depth[keep], root_of(truth, root)[:, 2], table.intrinsics[keep])
    pred_rel = pred - root_of(pred, root)[:, None]
    truth_rel = truth - root_of(truth, root)[:, None]
    return evaluate_3d(pred_rel, truth_rel, dataset.skeleton.keypoint_names)
