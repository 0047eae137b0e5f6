"""Pose models: backbones, heads and the regressor that joins them."""

from posereg.models.backbones import create_backbone, init_from_checkpoint
from posereg.models.factory import create_pose_model
from posereg.models.heads import (
    HEADS,
    HeatmapHead,
    HeatmapOutput,
    NormLinear,
    PoseHead,
    RegressionHead,
    RegressionOutput,
    average_outputs,
    create_head,
)
from posereg.models.pose import PoseRegressor

__all__ = [
    "HEADS",
    "HeatmapHead",
    "HeatmapOutput",
    "PoseHead",
    "average_outputs",
    "create_head",
    "NormLinear",
    "RegressionHead",
    "RegressionOutput",
    "PoseRegressor",
    "create_backbone",
    "create_pose_model",
    "init_from_checkpoint",
]
