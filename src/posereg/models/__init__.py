"""Pose models: backbones, heads and the top-down model that joins them."""

from posereg.models.backbones import create_backbone, init_from_checkpoint
from posereg.models.factory import create_pose_model, pose_head_options
from posereg.models.heads import (
    HEADS,
    HeatmapHead,
    HeatmapOutput,
    IntegralHead,
    IntegralOutput,
    NormLinear,
    PoseHead,
    RegressionHead,
    RegressionOutput,
    average_outputs,
    create_head,
)
from posereg.models.pose import PoseRegressor, TopDownModel, upgrade_state_dict

__all__ = [
    "HEADS",
    "HeatmapHead",
    "HeatmapOutput",
    "IntegralHead",
    "IntegralOutput",
    "PoseHead",
    "average_outputs",
    "create_head",
    "NormLinear",
    "RegressionHead",
    "RegressionOutput",
    "PoseRegressor",
    "TopDownModel",
    "pose_head_options",
    "upgrade_state_dict",
    "create_backbone",
    "create_pose_model",
    "init_from_checkpoint",
]
