"""Prediction heads: backbone features -> a typed output, its loss, its decoding, its flip back.

- ``regression``: RLE's head (Li et al., ICCV 2021, Sec. 3.3): global average pool + FC -> mu, sigma.
- ``heatmap``: SimpleBaseline (Xiao et al., ECCV 2018): 3 deconvolutions + 1x1 conv -> K Gaussian
  heatmaps at 1/4 of the input, MSE, argmax decoding.
- ``integral``: Integral regression (Sun et al., ECCV 2018): the same trunk, soft-argmax of a
  softmax over each map -> coordinates, L1; 2D maps or 3D volumes (K x d x h x w).
- ``integral_rle``: the RLE paper's Tab. 2b: soft-argmax -> mu, FC on the pooled backbone
  features -> sigma, RLE loss.

Every head implements :class:`PoseHead`: ``head(features)`` -> its output dataclass,
``head.loss(output, target, target_weight)``, ``head.decode(output)`` ->
:class:`posereg.codecs.DecodedKeypoints` and ``head.flip_back(output, flip_index)`` for the flip
test; ``head.codec`` encodes the targets its loss expects. Heads are chosen by name from the plain
dict :data:`HEADS` through :func:`create_head`.

Coordinates are crop-normalized (x / W - 0.5, y / H - 0.5; :mod:`posereg.data.transforms`); the
formulas that decode them live in :mod:`posereg.codecs` and are called, not repeated, here.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from posereg.codecs import (
    Codec,
    DecodedKeypoints,
    HeatmapCodec,
    IntegralCodec,
    RegressionCodec,
    expected_location,
    peak_mass,
    sigma_confidence,
    spatial_softmax,
)
from posereg.losses import L1Loss, L2Loss, build_loss

__all__ = [
    "HEADS",
    "HeadOutput",
    "HeatmapHead",
    "HeatmapOutput",
    "IntegralHead",
    "IntegralOutput",
    "NormLinear",
    "PoseHead",
    "RegressionHead",
    "RegressionOutput",
    "average_outputs",
    "create_head",
    "flip_back_coordinates",
    "heatmap_head",
    "heatmap_mse_loss",
    "integral_head",
    "integral_rle_head",
    "regression_head",
]

FlipIndex = Sequence[int] | np.ndarray | Tensor


# ----------------------------------------------------------------------------- outputs


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
        return sigma_confidence(self.sigma)


@dataclass
class HeatmapOutput:
    """What the heatmap head predicts.

    Attributes:
        heatmaps: (B, K, h, w) maps at 1/4 of the input; the target is a Gaussian of peak 1.
    """

    heatmaps: Tensor


@dataclass
class IntegralOutput:
    """What the integral heads predict.

    Attributes:
        mu: soft-argmax locations (B, K, D), crop-normalized, float32.
        prob: the softmax of each map (B, K, h, w), or of each volume (B, K, d, h, w); float32.
        sigma: per-coordinate scales (B, K, D) in (0, 1) for ``integral_rle``; None otherwise.
    """

    mu: Tensor
    prob: Tensor
    sigma: Tensor | None = None


HeadOutput = RegressionOutput | HeatmapOutput | IntegralOutput
OutputT = TypeVar("OutputT", RegressionOutput, HeatmapOutput, IntegralOutput)


@runtime_checkable
class PoseHead(Protocol[OutputT]):
    """What every head provides (an ``nn.Module`` with these members).

    Attributes:
        num_keypoints: K.
        dim: D of the decoded keypoints (2, or 3 for volumetric / 3D heads).
        input_size: (H, W) of the model input.
        codec: encodes one sample's targets for :meth:`loss` (the dataset takes it from here).
    """

    num_keypoints: int
    dim: int
    input_size: tuple[int, int]
    codec: Codec

    def __call__(self, features: Tensor) -> OutputT:
        """Backbone features (B, C, h, w) -> the head's output."""
        ...

    def loss(self, output: OutputT, target: Tensor, target_weight: Tensor) -> Tensor:
        """Scalar training loss against the batched targets of ``codec.encode``."""
        ...

    def decode(self, output: OutputT) -> DecodedKeypoints:
        """Output -> keypoints (B, K, D) crop-normalized, scores (B, K), sigma (B, K, D) or None."""
        ...

    def flip_back(self, output: OutputT, flip_index: FlipIndex) -> OutputT:
        """The output on a mirrored input (``images.flip(-1)``) -> the original crop's frame."""
        ...


def average_outputs(output: OutputT, other: OutputT) -> OutputT:
    """Mean of two outputs of one head, field by field (the flip test's merge).

    For the regression head this is the official average of mu and sigma; for the heatmap head
    the official average of the maps before decoding; for the integral heads the average of the
    (exactly flipped) coordinates, of sigma, and of the probability maps (used for the score). A
    field that is None stays None.

    Example:
        >>> a = HeatmapOutput(torch.zeros(1, 2, 4, 3))
        >>> float(average_outputs(a, HeatmapOutput(torch.ones(1, 2, 4, 3))).heatmaps.mean())
        0.5
    """
    values = {}
    for field in dataclasses.fields(output):
        x, y = getattr(output, field.name), getattr(other, field.name)
        values[field.name] = None if x is None else 0.5 * (x + y)
    return type(output)(**values)


def _permutation(flip_index: FlipIndex, device: torch.device) -> Tensor:
    return torch.as_tensor(np.asarray(flip_index), dtype=torch.long, device=device)


def flip_back_coordinates(mu: Tensor, flip_index: FlipIndex, input_width: int) -> Tensor:
    """Crop-normalized coordinates predicted on the mirrored crop -> the original crop's frame.

    The mirror ``x -> W - 1 - x`` is ``u -> -u - 1 / W`` in crop-normalized coordinates (the
    official RLE flip shift ``-pred - 1 / (width_dim * 4)``, ``width_dim = W / 4``); left and right
    keypoints are swapped; y (and z) are unchanged.

    Arguments:
        mu: (B, K, D) prediction on the mirrored crop.
        flip_index: (K,) permutation (``Skeleton.flip_index``).
        input_width: W of the model input.

    Returns:
        (B, K, D).
    """
    out = mu[:, _permutation(flip_index, mu.device)]
    return torch.cat([-out[..., :1] - 1.0 / input_width, out[..., 1:]], dim=-1)


def _coordinate_weight(weight: Tensor, dim: int) -> Tensor:
    """Weights (B, K), (B, K, 1) or (B, K, D') -> (B, K, 1) or (B, K, D) for posereg.losses."""
    if weight.dim() == 2:
        return weight[..., None]
    if weight.dim() == 3 and weight.shape[-1] not in (1, dim):
        return weight[..., :1]  # e.g. (B, K, 2) 2D visibility for a 3D head: per keypoint
    return weight


def _build_criterion(loss: str, dim: int, loss_options: dict[str, Any] | None) -> nn.Module:
    return build_loss(loss, dim=dim, **(loss_options or {}))


# ----------------------------------------------------------------------------- regression


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
        input_size: (H, W) of the model input; needed by ``codec`` and ``flip_back``.
        criterion: the training loss, a :mod:`posereg.losses` loss (its flow trains and saves
            with the head); None for an inference-only head.

    Example:
        >>> head = RegressionHead(in_channels=512, num_keypoints=17)
        >>> out = head(torch.randn(2, 512, 8, 6))
        >>> out.mu.shape, out.sigma.shape, out.confidence.shape
        (torch.Size([2, 17, 2]), torch.Size([2, 17, 2]), torch.Size([2, 17]))
    """

    def __init__(
        self,
        in_channels: int,
        num_keypoints: int,
        dim: int = 2,
        norm_mu: bool = True,
        input_size: tuple[int, int] | None = None,
        criterion: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.dim = dim
        self.fc_coord = NormLinear(in_channels, num_keypoints * dim, norm=norm_mu)
        self.fc_sigma = NormLinear(in_channels, num_keypoints * dim, norm=False)
        self.criterion = criterion
        self.input_size = None if input_size is None else (int(input_size[0]), int(input_size[1]))
        self.codec = None if self.input_size is None else RegressionCodec(self.input_size)

    def forward(self, features: Tensor) -> RegressionOutput:
        """features (B, C, H, W) or pooled (B, C) -> RegressionOutput with (B, K, D) tensors."""
        if features.dim() == 4:
            features = features.mean(dim=(2, 3))  # global average pool
        b = features.shape[0]
        mu = self.fc_coord(features).reshape(b, self.num_keypoints, self.dim)
        sigma = torch.sigmoid(self.fc_sigma(features)).reshape(b, self.num_keypoints, self.dim)
        return RegressionOutput(mu=mu, sigma=sigma)

    def loss(self, output: RegressionOutput, target: Tensor, target_weight: Tensor) -> Tensor:
        """The criterion on (mu, sigma) in float32 (also under autocast); target (B, K, D)."""
        if self.criterion is None:
            raise RuntimeError(
                "this RegressionHead was built without a criterion (create_head builds one)"
            )
        weight = _coordinate_weight(target_weight, self.dim)
        return self.criterion(output.mu.float(), output.sigma.float(), target, weight)

    def decode(self, output: RegressionOutput) -> DecodedKeypoints:
        """keypoints = mu, scores = 1 - mean_d sigma_d (Eq. 9), sigma."""
        codec = self.codec or RegressionCodec()  # decoding does not depend on the input size
        return codec.decode(output.mu, output.sigma)

    def flip_back(self, output: RegressionOutput, flip_index: FlipIndex) -> RegressionOutput:
        """mu: swap left/right, ``u -> -u - 1 / W``; sigma: swap left/right."""
        if self.input_size is None:
            raise RuntimeError(
                "flip_back needs the head's input_size (RegressionHead(input_size=))"
            )
        perm = _permutation(flip_index, output.sigma.device)
        return RegressionOutput(
            mu=flip_back_coordinates(output.mu, flip_index, self.input_size[1]),
            sigma=output.sigma[:, perm],
        )


# ----------------------------------------------------------------------------- the deconv trunk


def deconv_layers(in_channels: int, channels: int = 256, num_layers: int = 3) -> nn.Sequential:
    """SimpleBaseline's upsampling: ``num_layers`` x (ConvTranspose 4x4 stride 2, BN, ReLU).

    Each layer doubles h and w (padding 1, no output padding, no bias), so three turn stride-32
    features into stride-4 maps. Weights are normal(0, 0.001), BN weight 1 and bias 0 (official init).
    Module names (``deconv_layers.{3i}``, ``.{3i + 1}``) follow the official pose_resnet.
    """
    layers: list[nn.Module] = []
    for _ in range(num_layers):
        deconv = nn.ConvTranspose2d(in_channels, channels, 4, stride=2, padding=1, bias=False)
        nn.init.normal_(deconv.weight, std=0.001)
        bn = nn.BatchNorm2d(channels)
        layers += [deconv, bn, nn.ReLU(inplace=True)]
        in_channels = channels
    return nn.Sequential(*layers)


def _final_layer(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)
    nn.init.normal_(conv.weight, std=0.001)
    nn.init.zeros_(conv.bias)
    return conv


def _map_head_input_size(
    name: str, input_size: Sequence[int], stride: int = 32, backbone: str | None = None
) -> tuple[int, int]:
    """(H, W) checked for a map head: multiples of the backbone's stride, or its features
    (rounded up) would give maps of another size than the codec's ``input / map stride``."""
    h, w = int(input_size[0]), int(input_size[1])
    if h % stride or w % stride:
        fit = f"{-(-h // stride) * stride}x{-(-w // stride) * stride}"
        whose = f"backbone {backbone!r}" if backbone else "the backbone"
        raise ValueError(
            f"the {name} head needs an input size whose sides are multiples of {stride} (its maps "
            f"come from the stride-{stride} features of {whose}), got {h}x{w}; e.g. {fit}"
        )
    return h, w


def _map_size(input_size: tuple[int, int], num_layers: int, stride: int = 32) -> tuple[int, int]:
    """(h, w) of the maps from stride-``stride`` features after ``num_layers`` doublings."""
    if stride % 2**num_layers:
        raise ValueError(
            f"num_deconv={num_layers}: {2**num_layers}x upsampling of stride-{stride} features "
            f"gives no whole map stride; use a num_deconv whose 2**num_deconv divides {stride}"
        )
    map_stride = stride // 2**num_layers
    return input_size[0] // map_stride, input_size[1] // map_stride


# ----------------------------------------------------------------------------- heatmap


def heatmap_mse_loss(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """SimpleBaseline's JointsMSELoss (use_target_weight=True): ``0.5 * mean((w p - w t)^2)``.

    The mean runs over B, K, h and w, which equals the official per-joint average of
    ``0.5 * MSELoss(pred_k * w_k, target_k * w_k)`` divided by K.

    Arguments:
        pred: (B, K, h, w).
        target: (B, K, h, w) Gaussian maps.
        weight: (B, K) or (B, K, 1) per-keypoint weights.

    Returns:
        scalar; 0 where every weight is 0.
    """
    if target.shape != pred.shape:
        raise ValueError(
            f"heatmap target shape {tuple(target.shape)} != prediction shape {tuple(pred.shape)}: "
            "the codec's heatmap_size must match the head's map size"
        )
    w = weight.reshape(pred.shape[0], pred.shape[1], 1, 1)
    return 0.5 * (pred * w - target * w).square().mean()


class HeatmapHead(nn.Module):
    """SimpleBaseline: deconv trunk + 1x1 conv -> K heatmaps; MSE on Gaussian targets; argmax decode.

    Arguments:
        in_channels: C of the backbone's feature map.
        num_keypoints: K.
        input_size: (H, W) of the model input; its sides must be multiples of ``feature_stride``.
        deconv_channels: channels of each deconvolution (256).
        num_deconv: number of deconvolutions (3: maps at 1/4 of the input from stride 32).
        sigma: Gaussian sigma in map pixels; default 2 at a 64-pixel-high map, scaled with the
            map height (256x192 -> 2, 384x288 -> 3 as the official configs, 64x48 -> 0.5).
        unbiased: sub-pixel Gaussian centres (see :class:`posereg.codecs.HeatmapCodec`).
        refine: ``"quarter"`` (official), ``"taylor"`` (DARK-style) or ``"none"``.
        shift_flipped: the official flip-test shift of the flipped-back maps by one map pixel
            to the right (SimpleBaseline ``TEST.SHIFT_HEATMAP``).
        feature_stride: the backbone's output stride (``backbone.stride``; 32 for every named
            backbone); the maps are at ``feature_stride / 2**num_deconv`` of the input.

    Example:
        >>> head = HeatmapHead(64, 17, (256, 192), deconv_channels=32)
        >>> out = head(torch.randn(2, 64, 8, 6))
        >>> out.heatmaps.shape, head.decode(out).keypoints.shape
        (torch.Size([2, 17, 64, 48]), torch.Size([2, 17, 2]))
    """

    def __init__(
        self,
        in_channels: int,
        num_keypoints: int,
        input_size: tuple[int, int],
        deconv_channels: int = 256,
        num_deconv: int = 3,
        sigma: float | None = None,
        unbiased: bool = False,
        refine: str = "quarter",
        shift_flipped: bool = True,
        feature_stride: int = 32,
    ) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.dim = 2
        self.input_size = _map_head_input_size("heatmap", input_size, feature_stride)
        self.shift_flipped = shift_flipped
        self.deconv_layers = deconv_layers(in_channels, deconv_channels, num_deconv)
        self.final_layer = _final_layer(deconv_channels, num_keypoints)
        heatmap_size = _map_size(self.input_size, num_deconv, feature_stride)
        if sigma is None:
            sigma = 2.0 * heatmap_size[0] / 64.0
        self.codec = HeatmapCodec(self.input_size, heatmap_size, sigma, unbiased, refine)  # type: ignore[arg-type]

    def forward(self, features: Tensor) -> HeatmapOutput:
        """features (B, C, h, w) -> heatmaps (B, K, 2^n h, 2^n w) (n = num_deconv, 3)."""
        return HeatmapOutput(self.final_layer(self.deconv_layers(features)))

    def loss(self, output: HeatmapOutput, target: Tensor, target_weight: Tensor) -> Tensor:
        """:func:`heatmap_mse_loss` in float32; target (B, K, h, w), weight (B, K)."""
        return heatmap_mse_loss(output.heatmaps.float(), target, target_weight)

    def decode(self, output: HeatmapOutput) -> DecodedKeypoints:
        """Argmax + the codec's refinement; score = map maximum; no sigma."""
        return self.codec.decode(output.heatmaps)

    def flip_back(self, output: HeatmapOutput, flip_index: FlipIndex) -> HeatmapOutput:
        """Official: mirror the maps, swap left/right, then shift one map pixel to the right.

        Mirroring a map maps map pixel ``j`` to ``w - 1 - j``, which is the image mirror
        ``x -> W - 1 - x`` only up to ``(s - 1) / s`` map pixels (s = W / w); the official shift
        (column 0 kept, column j <- column j - 1) overshoots it by ``1 / s`` map pixels, so a
        perfect flipped prediction comes back one input pixel to the right (tested).
        """
        maps = output.heatmaps[:, _permutation(flip_index, output.heatmaps.device)].flip(-1)
        if self.shift_flipped:
            maps = torch.cat([maps[..., :1], maps[..., :-1]], dim=-1)
        return HeatmapOutput(maps)


# ----------------------------------------------------------------------------- integral


class IntegralHead(nn.Module):
    """Integral regression: deconv trunk + 1x1 conv -> maps, softmax, soft-argmax -> coordinates.

    With ``with_sigma`` (``integral_rle``, RLE paper Tab. 2b) an FC on the globally pooled
    backbone features gives sigma = sigmoid(.) as in :class:`RegressionHead`, and the loss is
    RLE; otherwise the loss is L1 on the coordinates (Sun et al.).

    Scores: without sigma, the softmax mass in the 3x3 (3x3x3) window of map pixels around the
    decoded location (:func:`posereg.codecs.peak_mass`), not the softmax maximum: the mass is a
    probability (the joint within one map pixel of the prediction) with the same meaning at any
    map size, while the maximum shrinks by 4x when the map doubles; and a two-peaked map (a
    left/right confusion), whose soft-argmax falls between the peaks, gets a low mass, where the
    maximum would report one peak's height. With sigma: c = 1 - mean_d sigma_d (Eq. 9).

    Arguments:
        in_channels: C of the backbone's feature map.
        num_keypoints: K.
        input_size: (H, W) of the model input; its sides must be multiples of ``feature_stride``.
        deconv_channels: channels of each deconvolution (256).
        num_deconv: number of deconvolutions (3: maps at 1/4 of the input from stride 32).
        depth: d for the volumetric 3D variant (K x d x h x w volumes, soft-argmax over three
            axes, keypoints (B, K, 3) with ``z = E[i_z] / d - 0.5``); None for 2D maps.
        with_sigma: predict sigma from the pooled features (integral_rle).
        criterion: a :mod:`posereg.losses` loss; one that uses sigma needs ``with_sigma``.
        feature_stride: the backbone's output stride (see :class:`HeatmapHead`).

    Example:
        >>> head = IntegralHead(64, 17, (256, 192), deconv_channels=32, criterion=L1Loss())
        >>> out = head(torch.randn(2, 64, 8, 6))
        >>> out.mu.shape, out.prob.shape
        (torch.Size([2, 17, 2]), torch.Size([2, 17, 64, 48]))
    """

    def __init__(
        self,
        in_channels: int,
        num_keypoints: int,
        input_size: tuple[int, int],
        deconv_channels: int = 256,
        num_deconv: int = 3,
        depth: int | None = None,
        with_sigma: bool = False,
        criterion: nn.Module | None = None,
        feature_stride: int = 32,
    ) -> None:
        super().__init__()
        if criterion is not None and not with_sigma and not isinstance(criterion, L1Loss | L2Loss):
            raise ValueError(
                f"the integral head predicts no sigma, which {type(criterion).__name__} needs: "
                "use the head 'integral_rle', or the loss 'l1' or 'l2'"
            )
        if depth is not None and depth < 1:
            raise ValueError(f"depth must be >= 1 (volume bins), got {depth}")
        self.num_keypoints = num_keypoints
        self.depth = depth
        self.dim = 2 if depth is None else 3
        name = "integral_rle" if with_sigma else "integral"
        self.input_size = _map_head_input_size(name, input_size, feature_stride)
        self.deconv_layers = deconv_layers(in_channels, deconv_channels, num_deconv)
        self.final_layer = _final_layer(deconv_channels, num_keypoints * (depth or 1))
        self.fc_sigma = (
            NormLinear(in_channels, num_keypoints * self.dim, norm=False) if with_sigma else None
        )
        self.criterion = criterion
        map_size = _map_size(self.input_size, num_deconv, feature_stride)
        self.codec = IntegralCodec(self.input_size, map_size)

    def forward(self, features: Tensor) -> IntegralOutput:
        """features (B, C, h, w) -> mu (B, K, D), prob (B, K, [d,] 2^n h, 2^n w), sigma or None."""
        logits = self.final_layer(self.deconv_layers(features))  # (B, K * d, h, w)
        b, _, h, w = logits.shape
        if self.depth is not None:
            logits = logits.reshape(b, self.num_keypoints, self.depth, h, w)
        prob = spatial_softmax(logits, logits.dim() - 2)  # float32, max subtracted
        mu = expected_location(prob)  # soft-argmax, (B, K, D)
        sigma = None
        if self.fc_sigma is not None:
            pooled = features.mean(dim=(2, 3))  # as RegressionHead
            sigma = torch.sigmoid(self.fc_sigma(pooled)).reshape(b, self.num_keypoints, self.dim)
        return IntegralOutput(mu=mu, prob=prob, sigma=sigma)

    def loss(self, output: IntegralOutput, target: Tensor, target_weight: Tensor) -> Tensor:
        """The criterion on the soft-argmax coordinates in float32; target (B, K, D)."""
        if self.criterion is None:
            raise RuntimeError("this IntegralHead was built without a criterion")
        weight = _coordinate_weight(target_weight, self.dim)
        mu = output.mu.float()
        # l1 / l2 ignore sigma; it is passed for the shared signature
        sigma = torch.ones_like(mu) if output.sigma is None else output.sigma.float()
        return self.criterion(mu, sigma, target, weight)

    def decode(self, output: IntegralOutput) -> DecodedKeypoints:
        """keypoints = mu; score = peak mass (no sigma) or 1 - mean_d sigma_d (Eq. 9)."""
        if output.sigma is None:
            return DecodedKeypoints(output.mu, peak_mass(output.prob, output.mu))
        return DecodedKeypoints(output.mu, sigma_confidence(output.sigma), output.sigma)

    def flip_back(self, output: IntegralOutput, flip_index: FlipIndex) -> IntegralOutput:
        """Coordinates flipped exactly; maps mirrored, swapped and moved by the same amount.

        mu: :func:`flip_back_coordinates` (``u -> -u - 1 / W``, left/right swapped). Mirroring a
        map (``j -> w - 1 - j``) is ``u -> -u - 1 / w``, short of the image mirror by
        ``a = 1 - w / W`` map pixels (0.75 at stride 4), so the mirrored maps are moved right by
        ``a`` with linear interpolation (mass kept at the border): their soft-argmax is then the
        flipped-back mu, and the score (peak mass) is taken around the right place.
        """
        perm = _permutation(flip_index, output.prob.device)
        prob = output.prob[:, perm].flip(-1)
        a = 1.0 - prob.shape[-1] / self.input_size[1]
        moved = torch.cat([torch.zeros_like(prob[..., :1]), prob[..., :-1]], dim=-1)
        last = torch.cat([torch.zeros_like(prob[..., :-1]), prob[..., -1:]], dim=-1)
        prob = (1.0 - a) * prob + a * (moved + last)
        return IntegralOutput(
            mu=flip_back_coordinates(output.mu, flip_index, self.input_size[1]),
            prob=prob,
            sigma=None if output.sigma is None else output.sigma[:, perm],
        )


# ----------------------------------------------------------------------------- factories


def regression_head(
    in_channels: int,
    num_keypoints: int,
    input_size: tuple[int, int],
    dim: int = 2,
    norm_mu: bool = True,
    loss: str = "rle",
    loss_options: dict[str, Any] | None = None,
) -> RegressionHead:
    """RLE's regression head with its criterion (default RLE, official convention)."""
    criterion = _build_criterion(loss, dim, loss_options)
    return RegressionHead(in_channels, num_keypoints, dim, norm_mu, input_size, criterion)


def heatmap_head(
    in_channels: int,
    num_keypoints: int,
    input_size: tuple[int, int],
    deconv_channels: int = 256,
    num_deconv: int = 3,
    sigma: float | None = None,
    unbiased: bool = False,
    refine: str = "quarter",
    shift_flipped: bool = True,
    feature_stride: int = 32,
) -> HeatmapHead:
    """SimpleBaseline's heatmap head (see :class:`HeatmapHead`)."""
    return HeatmapHead(
        in_channels,
        num_keypoints,
        input_size,
        deconv_channels,
        num_deconv,
        sigma,
        unbiased,
        refine,
        shift_flipped,
        feature_stride,
    )


def integral_head(
    in_channels: int,
    num_keypoints: int,
    input_size: tuple[int, int],
    deconv_channels: int = 256,
    num_deconv: int = 3,
    depth: int | None = None,
    loss: str = "l1",
    loss_options: dict[str, Any] | None = None,
    feature_stride: int = 32,
) -> IntegralHead:
    """Integral regression (Sun et al.): soft-argmax + L1; ``depth`` for the 3D volumetric variant."""
    criterion = _build_criterion(loss, 2 if depth is None else 3, loss_options)
    return IntegralHead(
        in_channels, num_keypoints, input_size, deconv_channels, num_deconv, depth, False,
        criterion, feature_stride,
    )  # fmt: skip


def integral_rle_head(
    in_channels: int,
    num_keypoints: int,
    input_size: tuple[int, int],
    deconv_channels: int = 256,
    num_deconv: int = 3,
    depth: int | None = None,
    loss: str = "rle",
    loss_options: dict[str, Any] | None = None,
    feature_stride: int = 32,
) -> IntegralHead:
    """Integral + RLE (RLE paper Tab. 2b): soft-argmax mu, FC sigma on pooled features, RLE loss."""
    criterion = _build_criterion(loss, 2 if depth is None else 3, loss_options)
    return IntegralHead(
        in_channels, num_keypoints, input_size, deconv_channels, num_deconv, depth, True,
        criterion, feature_stride,
    )  # fmt: skip


#: Name -> factory(in_channels, num_keypoints, input_size, **options) -> a :class:`PoseHead`.
HEADS: dict[str, Callable[..., nn.Module]] = {
    "regression": regression_head,
    "heatmap": heatmap_head,
    "integral": integral_head,
    "integral_rle": integral_rle_head,
}


def create_head(
    name: str,
    in_channels: int,
    num_keypoints: int,
    input_size: tuple[int, int],
    *,
    stride: int = 32,
    backbone: str | None = None,
    **options: Any,
) -> nn.Module:
    """Create a head by name; it implements :class:`PoseHead`.

    Arguments:
        name: one of :data:`HEADS`.
        in_channels: C of the backbone's feature map.
        num_keypoints: K.
        input_size: (H, W) of the model input; for the map heads its sides must be multiples
            of ``stride``.
        stride: the backbone's output stride (``backbone.stride``), which the map heads size
            their maps from.
        backbone: the backbone's name, for the error messages.
        options: the factory's own keyword options (e.g. ``loss``, ``loss_options``, ``dim``,
            ``deconv_channels``, ``sigma``, ``refine``, ``depth``).

    Raises:
        ValueError: an unknown name (listing the valid ones), an option the head does not take
            (listing the ones it does), or an input size that does not fit the stride (naming
            the backbone and its stride).

    Example:
        >>> head = create_head("heatmap", 64, 17, (256, 192), deconv_channels=16)
        >>> type(head.codec).__name__, head.codec.heatmap_size
        ('HeatmapCodec', (64, 48))
    """
    try:
        factory = HEADS[name]
    except KeyError:
        raise ValueError(f"unknown head {name!r}; valid: {', '.join(HEADS)}") from None
    if num_keypoints < 1:
        raise ValueError(f"num_keypoints must be >= 1, got {num_keypoints}")
    params = [p for p in list(inspect.signature(factory).parameters)[3:] if p != "feature_stride"]
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(
            f"head {name!r} does not take options {unknown}; valid options: {', '.join(params)}"
        )
    if "feature_stride" in inspect.signature(factory).parameters:  # a map head
        _map_head_input_size(name, input_size, stride, backbone)
        options["feature_stride"] = stride
    return factory(in_channels, num_keypoints, input_size, **options)
