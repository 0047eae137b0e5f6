"""Evaluation metrics: COCO OKS AP/AR (pycocotools), OKS-NMS, instance scores, PCK / PCKh, 3D (MPJPE),
calibration (correlations, AUROC, coverage)."""

from posereg.metrics.calibration import auroc, average_ranks, coverage, pearson, spearman
from posereg.metrics.coco import (
    COCOKeypointResult,
    evaluate_coco,
    evaluate_coco_reports,
    instance_score,
    make_coco_predictions,
    oks,
    oks_nms,
    oks_nms_per_image,
)
from posereg.metrics.mpjpe import Pose3DMetrics, evaluate_3d, mpjpe, n_mpjpe, pa_mpjpe
from posereg.metrics.pck import PCKhResult, PCKResult, evaluate_mpii, load_mpii_gt_mat, pck, pckh

__all__ = [
    "pearson",
    "spearman",
    "auroc",
    "average_ranks",
    "coverage",
    "COCOKeypointResult",
    "evaluate_coco",
    "evaluate_coco_reports",
    "instance_score",
    "make_coco_predictions",
    "oks",
    "oks_nms",
    "oks_nms_per_image",
    "PCKResult",
    "PCKhResult",
    "pck",
    "pckh",
    "evaluate_mpii",
    "load_mpii_gt_mat",
    "Pose3DMetrics",
    "evaluate_3d",
    "mpjpe",
    "pa_mpjpe",
    "n_mpjpe",
]
