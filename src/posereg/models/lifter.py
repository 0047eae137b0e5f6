"""2D-to-3D lifting: the fully-connected baseline of Martinez et al. (ICCV 2017) with a per-joint sigma for RLE.

Normalisation (docs/lifting.md):

* 2D input (B, K_in, 2) pixels: centred on the mid-hip point and divided by the pose's RMS joint
  distance from it (so the lifter does not need the image size, which a COCO-results json does
  not carry, and works for any camera resolution), then standardised per coordinate with the
  training set's mean and std (as Martinez et al. standardise).
* 3D output: root-relative mm (pelvis at 0), standardised per coordinate with the training set's
  mean and std; the model predicts the standardised coordinates mu_hat and, for the likelihood
  losses, sigma_hat = sigmoid(fc_sigma) in the same standardised units (the official 3D head:
  sigmoid, in the units of the target). The pelvis is fixed at 0 and carries no loss.

The statistics are buffers of :class:`LiftNormalizer`, so a checkpoint holds everything needed to
lift new keypoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from posereg.losses import build_loss
from posereg.skeletons import H36M17, get_skeleton

__all__ = [
    "FCLifter",
    "LiftNormalizer",
    "LiftOutput",
    "LOSSES_WITH_SIGMA",
    "MIN_SPREAD_PX",
    "predict_lifter",
]

#: Losses that train sigma; with ``l1``/``l2`` the sigma output is untrained and not reported.
LOSSES_WITH_SIGMA = ("gaussian_nll", "laplace_nll", "dle", "rle")

#: A 2D pose whose RMS joint distance from the mid-hip point is below this (pixels) is
#: degenerate: all joints at one point (an all-zero array, a pose that was never detected).
#: The per-instance scaling would blow its rounding noise up to a pose-sized input, and the
#: lifter would return a plausible 3D pose for it; :class:`posereg.lift.Lifter` returns NaN.
MIN_SPREAD_PX = 1.0


@dataclass
class LiftOutput:
    """Raw lifter output in standardised units: mu (B, J, 3), sigma (B, J, 3) in (0, 1)."""

    mu: Tensor
    sigma: Tensor


def _hip_indices(skeleton: str) -> list[int]:
    names = get_skeleton(skeleton).keypoint_names
    try:
        return [names.index("left_hip"), names.index("right_hip")]
    except ValueError:
        raise ValueError(f"skeleton {skeleton!r} has no left_hip/right_hip to centre on") from None


class LiftNormalizer(nn.Module):
    """Input and output normalisation with the training set's statistics (buffers).

    Arguments:
        input_skeleton: name of the 2D skeleton (its hips centre the input).
        num_joints: J of the 3D output (17, Human3.6M-17).
    """

    def __init__(self, input_skeleton: str = "h36m17", num_joints: int = 17) -> None:
        super().__init__()
        k = get_skeleton(input_skeleton).num_keypoints
        self.input_skeleton = input_skeleton
        self.register_buffer("hips", torch.tensor(_hip_indices(input_skeleton)))
        self.register_buffer("mean_2d", torch.zeros(k, 2))
        self.register_buffer("std_2d", torch.ones(k, 2))
        self.register_buffer("mean_3d", torch.zeros(num_joints, 3))
        self.register_buffer("std_3d", torch.ones(num_joints, 3))

    def centred_2d(self, keypoints: Tensor) -> tuple[Tensor, Tensor]:
        """(B, K, 2) pixels -> (centred on the mid-hip point (B, K, 2), RMS joint distance
        from it (B,)), both in pixels."""
        root = keypoints[:, self.hips].mean(1, keepdim=True)
        x = keypoints - root
        return x, x.square().sum(-1).mean(-1).sqrt()

    def degenerate(self, keypoints: Tensor) -> Tensor:
        """(B,) True for the (B, K, 2) poses whose spread is under :data:`MIN_SPREAD_PX`."""
        return self.centred_2d(keypoints)[1] < MIN_SPREAD_PX

    def instance_2d(self, keypoints: Tensor) -> Tensor:
        """(B, K, 2) pixels -> centred on the mid-hip point, in units of the RMS joint distance."""
        x, spread = self.centred_2d(keypoints)
        return x / spread.clamp_min(1e-6)[:, None, None]

    def normalize_2d(self, keypoints: Tensor) -> Tensor:
        """(B, K, 2) pixels -> (B, K, 2) standardised."""
        return (self.instance_2d(keypoints) - self.mean_2d) / self.std_2d

    def normalize_3d(self, joints: Tensor) -> Tensor:
        """(B, J, 3) root-relative mm -> standardised."""
        return (joints - self.mean_3d) / self.std_3d

    def denormalize_3d(self, joints: Tensor) -> Tensor:
        """Standardised (B, J, 3) -> root-relative mm."""
        return joints * self.std_3d + self.mean_3d

    @torch.no_grad()
    def fit(self, keypoints_2d: Tensor, joints_3d: Tensor) -> None:
        """Set the statistics from training pairs (N, K, 2) pixels and (N, J, 3) mm."""
        x = self.instance_2d(keypoints_2d.to(self.mean_2d))
        y = joints_3d.to(self.mean_3d)
        self.mean_2d.copy_(x.mean(0))
        self.std_2d.copy_(x.std(0).clamp_min(1e-3))
        self.mean_3d.copy_(y.mean(0))
        self.std_3d.copy_(y.std(0).clamp_min(1.0))  # the pelvis: 0 +- 0 mm -> std 1


class _Linear(nn.Sequential):
    """Linear - BatchNorm - ReLU - Dropout (one layer of the Martinez block)."""

    def __init__(self, cin: int, cout: int, dropout: float) -> None:
        super().__init__(nn.Linear(cin, cout), nn.BatchNorm1d(cout), nn.ReLU(), nn.Dropout(dropout))


class _Residual(nn.Module):
    """Two Linear-BN-ReLU-Dropout layers with an identity skip (Martinez et al. Fig. 1)."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(_Linear(width, width, dropout), _Linear(width, width, dropout))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layers(x)


class FCLifter(nn.Module):
    """The FC lifting baseline (Martinez et al. 2017) with a sigma output and its loss.

    Arguments:
        input_skeleton: skeleton of the 2D input (``h36m17``, ``coco17``, ...).
        hidden: width (1024 in the paper).
        num_blocks: residual blocks (2).
        dropout: dropout probability (0.5).
        loss: a name from posereg.losses (``l2`` is the paper's baseline, ``rle`` uses the 3D
            RealNVP with the official conventions).
        loss_options: the loss's own options (e.g. ``{q: laplace, convention: official}``).

    Example:
        >>> model = FCLifter(hidden=64).eval()
        >>> model.predict_mm(torch.rand(2, 17, 2) * 100)[0].shape
        torch.Size([2, 17, 3])
    """

    def __init__(
        self,
        input_skeleton: str = "h36m17",
        hidden: int = 1024,
        num_blocks: int = 2,
        dropout: float = 0.5,
        loss: str = "rle",
        loss_options: dict | None = None,
    ) -> None:
        super().__init__()
        self.num_joints = H36M17.num_keypoints
        self.joint_names = H36M17.keypoint_names
        self.loss_name = loss
        k_in = get_skeleton(input_skeleton).num_keypoints
        self.normalizer = LiftNormalizer(input_skeleton, self.num_joints)
        self.stem = _Linear(k_in * 2, hidden, dropout)
        self.blocks = nn.Sequential(*[_Residual(hidden, dropout) for _ in range(num_blocks)])
        self.fc_coord = nn.Linear(hidden, self.num_joints * 3)
        self.fc_sigma = nn.Linear(hidden, self.num_joints * 3)
        self.criterion = build_loss(loss, dim=3, **(loss_options or {}))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)  # as the Martinez implementation
                nn.init.zeros_(m.bias)
        for m in (self.fc_coord, self.fc_sigma):
            # as the official RLE heads (xavier, gain 0.01): mu starts at the mean pose and sigma
            # at sigmoid(0) = 0.5 (a kaiming-initialised fc_sigma starts with sigmas of 1e-9 and
            # losses of 1e8 that the first epoch spends undoing)
            nn.init.xavier_uniform_(m.weight, gain=0.01)
        weight = torch.ones(self.num_joints, 1)
        weight[0] = 0.0  # the pelvis is 0 by construction
        self.register_buffer("joint_weight", weight)

    @property
    def has_sigma(self) -> bool:
        """Whether the loss trains the sigma output."""
        return self.loss_name in LOSSES_WITH_SIGMA

    def forward(self, keypoints_2d: Tensor) -> LiftOutput:
        """keypoints_2d (B, K_in, 2) pixels -> standardised mu, sigma (B, J, 3)."""
        b = len(keypoints_2d)
        x = self.normalizer.normalize_2d(keypoints_2d).reshape(b, -1)
        h = self.blocks(self.stem(x))
        mu = self.fc_coord(h).reshape(b, self.num_joints, 3)
        sigma = torch.sigmoid(self.fc_sigma(h)).reshape(b, self.num_joints, 3) + 1e-9  # official 3D
        return LiftOutput(mu=mu, sigma=sigma)

    def loss(self, output: LiftOutput, joints_3d: Tensor) -> Tensor:
        """The loss against root-relative mm targets (B, J, 3); the pelvis has weight 0."""
        target = self.normalizer.normalize_3d(joints_3d)
        weight = self.joint_weight.expand(len(target), -1, -1)  # (B, J, 1)
        return self.criterion(output.mu, output.sigma, target, weight)

    def to_mm(self, output: LiftOutput) -> tuple[Tensor, Tensor]:
        """Root-relative joints and sigma in mm (B, J, 3); the pelvis is exactly 0."""
        joints = self.normalizer.denormalize_3d(output.mu)
        joints = torch.cat([torch.zeros_like(joints[:, :1]), joints[:, 1:]], dim=1)
        return joints, output.sigma * self.normalizer.std_3d

    @torch.no_grad()
    def predict_mm(self, keypoints_2d: Tensor) -> tuple[Tensor, Tensor]:
        """Inference: (B, K_in, 2) pixels -> joints (B, J, 3) mm and sigma (B, J, 3) mm."""
        return self.to_mm(self(keypoints_2d))


@torch.no_grad()
def predict_lifter(
    model: FCLifter, keypoints_2d: np.ndarray, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Joints and sigma (N, 17, 3) in mm for 2D keypoints (N, K_in, 2) pixels (eval mode)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.as_tensor(np.asarray(keypoints_2d), dtype=torch.float32, device=device)
    out = [model.predict_mm(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    model.train(was_training)
    joints = torch.cat([o[0] for o in out]).double().cpu().numpy()
    sigma = torch.cat([o[1] for o in out]).double().cpu().numpy()
    return joints, sigma
