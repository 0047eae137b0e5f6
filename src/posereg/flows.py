"""RealNVP normalizing flow (Dinh et al., ICLR 2017) as used by RLE (Li et al., ICCV 2021, appendix A).

Notation follows the paper and zuko: ``x`` is a residual in data space, ``z`` its image in
the latent space where the prior N(0, I) lives, ``ladj`` is log|det dz/dx|.

Parameter layout (``s.{i}``, ``t.{i}``, ``mask``) mirrors the official implementation
(rlepose/models/layers/real_nvp.py) so that its checkpoints map one to one.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["RealNVP", "coupling_masks"]


def coupling_masks(dim: int, num_layers: int) -> Tensor:
    """Alternating binary masks (num_layers, dim); 1 marks the coordinates a layer keeps.

    For dim 2 this gives [[0, 1], [1, 0], ...] and for dim 3 [[0, 0, 1], [1, 1, 0], ...],
    the official masks. In general the last ``dim // 2`` coordinates are kept by even layers.
    """
    if dim < 2:
        raise ValueError(
            f"RealNVP needs dim >= 2 (a coupling layer splits the coordinates), got {dim}"
        )
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    first = torch.zeros(dim)
    first[dim - dim // 2 :] = 1.0
    return torch.stack([first if i % 2 == 0 else 1.0 - first for i in range(num_layers)])


def _mlp(dim: int, hidden: int, act_layer: type[nn.Module], tanh: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Linear(dim, hidden),
        act_layer(),
        nn.Linear(hidden, hidden),
        act_layer(),
        nn.Linear(hidden, dim),
    ]
    if tanh:
        layers.append(nn.Tanh())  # bounds the log-scale of each coupling to [-1, 1]
    return nn.Sequential(*layers)


class RealNVP(nn.Module):
    r"""Stack of affine coupling layers with a standard normal prior.

    Coupling layer i with mask b (generative direction z -> x):
    ``x = b*z + (1-b) * (z * exp(s(b*z)) + t(b*z))``. The normalizing direction x -> z
    inverts the layers in reverse order and accumulates ``ladj = -sum (1-b) * s``.
    ``log_prob(x) = log N(z; 0, I) + ladj`` (change of variables, paper Eq. 4).

    Arguments:
        dim: dimension D of the residual (2 for image keypoints, 3 for 3D joints).
        num_layers: number of coupling layers (official: 6).
        hidden: width of the s- and t-networks (official: 64).
        act_layer: activation class of the s- and t-networks (official: LeakyReLU).
        init_gain: xavier-uniform gain of every Linear weight (official: 0.01, which
            makes the initial flow close to the identity, i.e. G_phi ~ N(0, I)).

    Example:
        >>> flow = RealNVP(dim=2)
        >>> x = torch.randn(5, 2)
        >>> flow.log_prob(x).shape
        torch.Size([5])
        >>> z, ladj = flow(x)
        >>> torch.allclose(flow.inverse(z), x, atol=1e-5)
        True
    """

    mask: Tensor
    prior_loc: Tensor
    prior_scale: Tensor

    def __init__(
        self,
        dim: int = 2,
        num_layers: int = 6,
        hidden: int = 64,
        act_layer: type[nn.Module] = nn.LeakyReLU,
        init_gain: float = 0.01,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("mask", coupling_masks(dim, num_layers))
        self.s = nn.ModuleList(_mlp(dim, hidden, act_layer, tanh=True) for _ in range(num_layers))
        self.t = nn.ModuleList(_mlp(dim, hidden, act_layer, tanh=False) for _ in range(num_layers))
        # The prior N(0, I) as buffers, so .to(device) and state_dict just work.
        self.register_buffer("prior_loc", torch.zeros(dim))
        self.register_buffer("prior_scale", torch.ones(dim))
        self.reset_parameters(init_gain)

    def reset_parameters(self, gain: float = 0.01) -> None:
        """Xavier-uniform weights with ``gain`` and zero-default biases, as the official code."""
        for net in (*self.s, *self.t):
            for m in net.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight, gain=gain)

    @property
    def num_layers(self) -> int:
        return len(self.s)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Normalizing direction.

        Arguments:
            x: residuals (N, D).

        Returns:
            z (N, D) and ladj = log|det dz/dx| (N,).
        """
        z = x
        ladj = x.new_zeros(x.shape[:-1])
        for i in reversed(range(self.num_layers)):
            b = self.mask[i]
            z_kept = b * z
            s = self.s[i](z_kept) * (1 - b)
            t = self.t[i](z_kept) * (1 - b)
            z = z_kept + (1 - b) * (z - t) * torch.exp(-s)
            ladj = ladj - s.sum(dim=-1)
        return z, ladj

    def inverse(self, z: Tensor) -> Tensor:
        """Generative direction: latent z (N, D) -> x (N, D)."""
        x = z
        for i in range(self.num_layers):
            b = self.mask[i]
            x_kept = b * x
            s = self.s[i](x_kept) * (1 - b)
            t = self.t[i](x_kept) * (1 - b)
            x = x_kept + (1 - b) * (x * torch.exp(s) + t)
        return x

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log N(z; loc, diag(scale^2)) summed over the last dim: (N, D) -> (N,)."""
        u = (z - self.prior_loc) / self.prior_scale
        return (-0.5 * u.square() - torch.log(self.prior_scale) - 0.5 * math.log(2 * math.pi)).sum(
            -1
        )

    def log_prob(self, x: Tensor) -> Tensor:
        """log G_phi(x): (N, D) -> (N,)."""
        z, ladj = self(x)
        return self.prior_log_prob(z) + ladj

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw (num_samples, D) samples: z ~ prior, x = inverse(z)."""
        eps = torch.randn(
            num_samples,
            self.dim,
            generator=generator,
            device=self.prior_loc.device,
            dtype=self.prior_loc.dtype,
        )
        return self.inverse(self.prior_loc + self.prior_scale * eps)
