"""Prediction heads. The regression head is RLE's (Li et al., ICCV 2021, Sec. 3.3).

Outputs are in normalized crop coordinates (x / W - 0.5, y / H - 0.5; see posereg.codecs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["NormLinear", "RegressionHead", "RegressionOutput"]


@dataclass
class RegressionOutput:
    """What a regression model predicts.

    Attributes:
        mu: keypoint locations mu_hat (B, K, D).
        sigma: per-coordinate scales sigma_hat (B, K, D), in (0, 1).
    """

    mu: Tensor
    sigma: Tensor

    @property
    def confidence(self) -> Tensor:
        """Per-keypoint confidence c = 1 - mean_d sigma_d (paper Eq. 9): (B, K)."""
        return 1.0 - self.sigma.mean(dim=-1)


class NormLinear(nn.Module):
    """The official 'normalized linear' layer: y = x W^T / ||x|| + b.

    Dividing by the feature norm makes the output independent of the feature scale, which
    the official code uses for the coordinate branch. Weights are xavier-uniform with gain
    0.01 (as all official fc layers). The parameters live in ``.linear`` so that official
    checkpoints (``fc_coord.linear.weight``) map one to one.

    Arguments:
        in_features: C.
        out_features: output size.
        norm: divide by ||x|| (the official fc_sigma uses the same class with norm=False).
        bias: add a bias.
        eps: guards ||x|| against zero features (not in the official code, which has no
            guard; 1e-12 changes nothing for real features).

    Example:
        >>> layer = NormLinear(8, 4)
        >>> x = torch.randn(2, 8)
        >>> torch.allclose(layer(x), layer(10 * x), atol=1e-6)
        True
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        norm: bool = True,
        bias: bool = True,
        eps: float = 1e-12,
    ):
        super().__init__()
        self.norm = norm
        self.eps = eps
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        nn.init.xavier_uniform_(self.linear.weight, gain=0.01)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C) -> (B, out_features)."""
        y = x @ self.linear.weight.t()
        if self.norm:
            y = y / x.norm(dim=1, keepdim=True).clamp_min(self.eps)
        if self.linear.bias is not None:
            y = y + self.linear.bias
        return y


class RegressionHead(nn.Module):
    """Global average pool + two linear layers: mu (K x D) and sigma = sigmoid(.) (K x D).

    Arguments:
        in_channels: C of the backbone's feature map.
        num_keypoints: K.
        dim: D (2 for image keypoints, 3 for 3D).
        norm_mu: use the official normalized linear layer for mu (default True); else a
            plain ``nn.Linear`` (xavier gain 0.01 as well).

    Example:
        >>> head = RegressionHead(in_channels=512, num_keypoints=17)
        >>> out = head(torch.randn(2, 512, 8, 6))
        >>> out.mu.shape, out.sigma.shape, out.confidence.shape
        (torch.Size([2, 17, 2]), torch.Size([2, 17, 2]), torch.Size([2, 17]))
    """

    def __init__(
        self, in_channels: int, num_keypoints: int, dim: int = 2, norm_mu: bool = True
    ) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.dim = dim
        self.fc_coord = NormLinear(in_channels, num_keypoints * dim, norm=norm_mu)
        self.fc_sigma = NormLinear(in_channels, num_keypoints * dim, norm=False)

    def forward(self, features: Tensor) -> RegressionOutput:
        """features (B, C, H, W) or pooled (B, C) -> RegressionOutput with (B, K, D) tensors."""
        if features.dim() == 4:
            features = features.mean(dim=(2, 3))  # global average pool
        b = features.shape[0]
        mu = self.fc_coord(features).reshape(b, self.num_keypoints, self.dim)
        sigma = torch.sigmoid(self.fc_sigma(features)).reshape(b, self.num_keypoints, self.dim)
        return RegressionOutput(mu=mu, sigma=sigma)
