"""The top-down regressor: backbone -> head, with the training criterion (and its flow) attached."""

from __future__ import annotations

from torch import Tensor, nn

from posereg.models.heads import RegressionOutput

__all__ = ["PoseRegressor"]


class PoseRegressor(nn.Module):
    """Backbone + regression head; owns the loss so the flow is trained and checkpointed with it.

    ``forward`` runs only the backbone and the head: the flow inside ``criterion`` is used by
    ``loss`` during training and never at inference (paper Sec. 3.3, "no overhead").

    Arguments:
        backbone: maps images (B, 3, H, W) to features (B, C, h, w) or (B, C).
        head: maps features to a RegressionOutput.
        criterion: a posereg.losses loss (or None for an inference-only model).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from posereg.models.heads import RegressionHead
        >>> from posereg.losses import build_loss
        >>> backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU())
        >>> model = PoseRegressor(backbone, RegressionHead(8, 17), build_loss("rle"))
        >>> out = model(torch.randn(2, 3, 64, 48))
        >>> out.mu.shape
        torch.Size([2, 17, 2])
    """

    def __init__(
        self, backbone: nn.Module, head: nn.Module, criterion: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.criterion = criterion

    def forward(self, images: Tensor) -> RegressionOutput:
        """images (B, 3, H, W) -> RegressionOutput (mu, sigma: (B, K, D))."""
        return self.head(self.backbone(images))

    def loss(self, output: RegressionOutput, target: Tensor, weight: Tensor) -> Tensor:
        """Training loss of an output against target (B, K, D) with weight (B, K, 1 or D)."""
        if self.criterion is None:
            raise RuntimeError("this PoseRegressor was built without a criterion (inference only)")
        return self.criterion(output.mu, output.sigma, target, weight)
