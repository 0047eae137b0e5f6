"""Pose models: backbones, heads and the regressor that joins them."""

from posereg.models.heads import NormLinear, RegressionHead, RegressionOutput
from posereg.models.pose import PoseRegressor

__all__ = ["NormLinear", "RegressionHead", "RegressionOutput", "PoseRegressor"]
