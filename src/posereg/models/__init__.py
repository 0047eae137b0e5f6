"""Pose models: backbones, heads and the regressor that joins them."""

from posereg.models.backbones import create_backbone, init_from_checkpoint
from posereg.models.factory import create_pose_model
from posereg.models.heads import NormLinear, RegressionHead, RegressionOutput
from posereg.models.pose import PoseRegressor

__all__ = [
    "NormLinear",
    "RegressionHead",
    "RegressionOutput",
    "PoseRegressor",
    "create_backbone",
    "create_pose_model",
    "init_from_checkpoint",
]
