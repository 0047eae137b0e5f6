"""One typed entry point for a complete model: backbone + regression head + training criterion."""

from __future__ import annotations

import os
from typing import Any

from posereg.losses import build_loss
from posereg.models.backbones import create_backbone
from posereg.models.heads import RegressionHead
from posereg.models.pose import PoseRegressor

__all__ = ["create_pose_model"]


def create_pose_model(
    backbone: str = "resnet50",
    num_keypoints: int = 17,
    dim: int = 2,
    loss: str = "rle",
    loss_options: dict[str, Any] | None = None,
    pretrained: bool | str | os.PathLike = False,
    width: float = 1.0,
    norm_mu: bool = True,
    backbone_options: dict[str, Any] | None = None,
) -> PoseRegressor:
    """Create a regression model (paper Sec. 3.3): backbone -> GAP -> FC (mu, sigma), + loss.

    Arguments:
        backbone: a name from ``posereg.models.backbones.BACKBONES``.
        num_keypoints: K.
        dim: D, 2 for image keypoints, 3 for 3D joints.
        loss: a name from ``posereg.losses.LOSSES``; its flow (RLE, DLE) lives in
            ``model.criterion.flow`` and is trained and checkpointed with the model.
        loss_options: the loss's own options, e.g. ``{"convention": "paper", "q": "gaussian"}``.
        pretrained: backbone weights: False, True (ImageNet; online) or a local file path
            (see ``create_backbone``).
        width: backbone channel multiplier (ResNets).
        norm_mu: the official normalized linear layer for mu (see RegressionHead).
        backbone_options: extra options of the backbone factory.

    Returns:
        A PoseRegressor: ``model(images (B, 3, H, W))`` -> RegressionOutput (mu, sigma (B, K, D)).

    Example:
        >>> import torch
        >>> model = create_pose_model("resnet18", num_keypoints=17, width=0.25)
        >>> out = model(torch.randn(2, 3, 64, 48))
        >>> out.mu.shape, out.confidence.shape
        (torch.Size([2, 17, 2]), torch.Size([2, 17]))
    """
    if num_keypoints < 1:
        raise ValueError(f"num_keypoints must be >= 1, got {num_keypoints}")
    module, channels = create_backbone(
        backbone, pretrained=pretrained, width=width, **(backbone_options or {})
    )
    head = RegressionHead(channels, num_keypoints, dim=dim, norm_mu=norm_mu)
    criterion = build_loss(loss, dim=dim, **(loss_options or {}))
    return PoseRegressor(module, head, criterion)
