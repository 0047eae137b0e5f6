"""Target codecs: keypoints -> training targets (``encode``) and network outputs -> keypoints (``decode``).

One object per target encoding, after MMPose's codecs. All codecs share one output space:
``decode`` returns keypoints in crop-normalized coordinates (B, K, D) in [-0.5, 0.5] (see
:mod:`posereg.data.transforms`), which :func:`posereg.data.transforms.crop_to_image` maps back to
image pixels. ``encode`` works on one sample in NumPy (it runs in data-loader workers);
``decode`` works on batched tensors. The heads of :mod:`posereg.models.heads` decode through
these codecs and functions; nothing else re-implements them.

- :class:`RegressionCodec`: the official RLE target, ``x / W - 0.5``, weights = visible and inside
  the crop; confidence ``c = 1 - mean_d sigma_d`` (RLE Eq. 9, :func:`sigma_confidence`).
- :class:`HeatmapCodec`: SimpleBaseline Gaussian heatmaps (sigma 2 at 1/4 resolution), decode by
  argmax + quarter-pixel shift toward the higher neighbour; confidence = heatmap max.
- :class:`IntegralCodec`: Integral regression (Sun et al. 2018): coordinate targets, decode by
  soft-argmax (differentiable, 2D maps or 3D volumes); confidence = softmax mass at the peak
  (:func:`peak_mass`).

Heatmap pixel ``i`` stands for crop pixel ``i * stride`` (the official encoding), so a map
location ``i`` is the crop-normalized coordinate ``i / w - 0.5`` for every codec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "EncodedTarget",
    "DecodedKeypoints",
    "RegressionCodec",
    "HeatmapCodec",
    "IntegralCodec",
    "soft_argmax",
    "spatial_softmax",
    "expected_location",
    "peak_mass",
    "sigma_confidence",
    "CODECS",
    "create_codec",
]


@dataclass(frozen=True)
class EncodedTarget:
    """What ``encode`` returns for one sample.

    Attributes:
        target: (K, 2) normalized coordinates, or (K, h, w) heatmaps.
        target_weight: (K, 2) for coordinate targets, (K,) for heatmaps.
    """

    target: np.ndarray
    target_weight: np.ndarray


@dataclass(frozen=True)
class DecodedKeypoints:
    """What ``decode`` returns for a batch.

    Attributes:
        keypoints: (B, K, D) crop-normalized coordinates (D = 2, or 3 for volumetric heads).
        scores: (B, K) per-keypoint confidence.
        sigma: (B, K, D) predicted scales in crop-normalized units, for heads that predict them
            (regression, integral_rle); else None.
    """

    keypoints: Tensor
    scores: Tensor
    sigma: Tensor | None = None


def sigma_confidence(sigma: Tensor) -> Tensor:
    """Per-keypoint confidence from the predicted scales: c = 1 - mean_d sigma_d (RLE Eq. 9).

    Arguments:
        sigma: (B, K, D) in (0, 1).

    Returns:
        (B, K).
    """
    return 1.0 - sigma.mean(dim=-1)


def _coordinate_target(
    keypoints: np.ndarray, visibility: np.ndarray, input_size: tuple[int, int]
) -> EncodedTarget:
    h, w = input_size
    target = np.asarray(keypoints, dtype=np.float64)[:, :2] / np.array([w, h]) - 0.5
    inside = np.all((target >= -0.5) & (target <= 0.5), axis=1)
    weight = ((np.asarray(visibility) > 0) & inside).astype(np.float32)
    return EncodedTarget(target.astype(np.float32), np.repeat(weight[:, None], 2, axis=1))


class RegressionCodec:
    """Direct regression targets normalized to the crop (the official RLE convention).

    Arguments:
        input_size: (H, W) of the model input.

    Example:
        >>> codec = RegressionCodec((256, 192))
        >>> enc = codec.encode(np.array([[96.0, 64.0], [300.0, 10.0]]), np.array([2, 2]))
        >>> enc.target.tolist(), enc.target_weight[:, 0].tolist()
        ([[0.0, -0.25], [1.0625, -0.4609375]], [1.0, 0.0])
    """

    name = "regression"

    def __init__(self, input_size: tuple[int, int] = (256, 192)) -> None:
        self.input_size = (int(input_size[0]), int(input_size[1]))

    def encode(self, keypoints: np.ndarray, visibility: np.ndarray) -> EncodedTarget:
        """Crop-pixel keypoints (K, 2) and visibility (K,) -> target (K, 2), weight (K, 2).

        The weight is 1 for a labelled keypoint (v > 0) inside the crop, else 0.
        """
        return _coordinate_target(keypoints, visibility, self.input_size)

    def decode(self, pred: Tensor, sigma: Tensor | None = None) -> DecodedKeypoints:
        """Network output (B, K, D) (and optional sigma (B, K, D)) -> keypoints, scores (B, K), sigma.

        The score is ``1 - mean_d sigma_d`` (RLE Eq. 9), or 1 without sigma.
        """
        if sigma is None:
            scores = torch.ones(pred.shape[:-1], dtype=pred.dtype, device=pred.device)
        else:
            scores = sigma_confidence(sigma)
        return DecodedKeypoints(pred, scores, sigma)


class HeatmapCodec:
    """Gaussian heatmaps (SimpleBaseline) with argmax decoding.

    Arguments:
        input_size: (H, W) of the model input.
        heatmap_size: (h, w); default input / 4.
        sigma: Gaussian standard deviation in heatmap pixels (2).
        unbiased: centre the Gaussian at the exact sub-pixel location instead of the official
            rounding to the nearest heatmap pixel.
        refine: ``"quarter"`` (official: a 0.25 px step toward the higher neighbour),
            ``"taylor"`` (second-order fit of the log heatmap at the maximum, DARK-style; exact for
            unbiased Gaussian targets) or ``"none"``.

    Round trip (encode then decode of the target): within 0.5 heatmap px per axis with the
    official settings (the rounding); within 1e-3 px with ``unbiased=True, refine="taylor"``.
    """

    name = "heatmap"

    def __init__(
        self,
        input_size: tuple[int, int] = (256, 192),
        heatmap_size: tuple[int, int] | None = None,
        sigma: float = 2.0,
        unbiased: bool = False,
        refine: Literal["quarter", "taylor", "none"] = "quarter",
    ) -> None:
        if refine not in ("quarter", "taylor", "none"):
            raise ValueError(f"unknown refine {refine!r}; valid: quarter, taylor, none")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        if heatmap_size is None:
            heatmap_size = (self.input_size[0] // 4, self.input_size[1] // 4)
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.sigma = float(sigma)
        self.unbiased = unbiased
        self.refine = refine
        # input pixels per heatmap pixel, (x, y)
        self.stride = np.array(
            [self.input_size[1] / self.heatmap_size[1], self.input_size[0] / self.heatmap_size[0]]
        )

    def encode(self, keypoints: np.ndarray, visibility: np.ndarray) -> EncodedTarget:
        """Crop-pixel keypoints (K, 2), visibility (K,) -> heatmaps (K, h, w), weight (K,).

        A keypoint gets weight 0 (and an empty map) when unlabelled or when its 3-sigma window
        lies wholly outside the heatmap, as in the official code.
        """
        h, w = self.heatmap_size
        mu = np.asarray(keypoints, dtype=np.float64)[:, :2] / self.stride  # (K, 2) heatmap px
        if not self.unbiased:
            mu = np.floor(mu + 0.5)
        radius = 3.0 * self.sigma
        xs, ys = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
        dx = xs[None, :] - mu[:, :1]  # (K, w)
        dy = ys[None, :] - mu[:, 1:]  # (K, h)
        gx = np.where(np.abs(dx) <= radius, np.exp(-(dx**2) / (2 * self.sigma**2)), 0.0)
        gy = np.where(np.abs(dy) <= radius, np.exp(-(dy**2) / (2 * self.sigma**2)), 0.0)
        in_window = (
            (mu[:, 0] + radius >= 0)
            & (mu[:, 0] - radius <= w - 1)
            & (mu[:, 1] + radius >= 0)
            & (mu[:, 1] - radius <= h - 1)
        )
        weight = ((np.asarray(visibility) > 0) & in_window).astype(np.float32)
        target = (gy[:, :, None] * gx[:, None, :]).astype(np.float32) * weight[:, None, None]
        return EncodedTarget(target, weight)

    def decode(self, heatmaps: Tensor) -> DecodedKeypoints:
        """Heatmaps (B, K, h, w) -> crop-normalized keypoints (B, K, 2), scores = maxima (B, K)."""
        b, k, h, w = heatmaps.shape
        flat = heatmaps.detach().reshape(b, k, h * w).float()
        maxval, idx = flat.max(dim=-1)
        px, py = idx % w, torch.div(idx, w, rounding_mode="floor")
        coords = torch.stack([px, py], dim=-1).to(torch.float64)

        def at(dx: int, dy: int) -> Tensor:
            qx, qy = (px + dx).clamp(0, w - 1), (py + dy).clamp(0, h - 1)
            return flat.gather(-1, (qy * w + qx)[..., None])[..., 0].to(torch.float64)

        if self.refine == "quarter":
            # official condition: strictly inside by more than one pixel
            inner = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
            diff = torch.stack([at(1, 0) - at(-1, 0), at(0, 1) - at(0, -1)], dim=-1)
            coords = coords + 0.25 * torch.sign(diff) * inner[..., None]
        elif self.refine == "taylor":
            inner = (px >= 1) & (px <= w - 2) & (py >= 1) & (py <= h - 2)

            def log_at(dx: int, dy: int) -> Tensor:
                return torch.log(at(dx, dy).clamp_min(1e-10))

            c = log_at(0, 0)
            gx = 0.5 * (log_at(1, 0) - log_at(-1, 0))
            gy = 0.5 * (log_at(0, 1) - log_at(0, -1))
            hxx = log_at(1, 0) - 2 * c + log_at(-1, 0)
            hyy = log_at(0, 1) - 2 * c + log_at(0, -1)
            hxy = 0.25 * (log_at(1, 1) - log_at(1, -1) - log_at(-1, 1) + log_at(-1, -1))
            det = hxx * hyy - hxy**2
            ok = inner & (det > 1e-12) & (hxx < 0)  # a proper maximum
            safe = torch.where(ok, det, torch.ones_like(det))
            off_x = -(hyy * gx - hxy * gy) / safe
            off_y = -(-hxy * gx + hxx * gy) / safe
            offset = torch.stack([off_x, off_y], dim=-1).clamp(-1.0, 1.0)
            coords = coords + offset * ok[..., None]
        coords = coords * (maxval > 0)[..., None]  # official: all-zero maps decode to (0, 0)
        size = torch.tensor([w, h], dtype=torch.float64, device=coords.device)
        keypoints = (coords / size - 0.5).to(heatmaps.dtype)
        return DecodedKeypoints(keypoints, maxval.to(heatmaps.dtype))


def spatial_softmax(logits: Tensor, spatial_dims: int = 2) -> Tensor:
    """Softmax over the last ``spatial_dims`` axes (h, w) or (d, h, w), in float32.

    The maximum is subtracted before ``exp`` (the log-sum-exp trick, lecture 004), so logits of
    any size give finite probabilities; the sum runs in float32 even for half-precision logits.

    Arguments:
        logits: (B, K, h, w) or (B, K, d, h, w).
        spatial_dims: 2 or 3.

    Returns:
        probabilities of ``logits``' shape, float32 (or float64 for float64 logits), each map
        summing to 1.
    """
    shape = logits.shape
    flat = logits.reshape(*shape[:-spatial_dims], -1)
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    flat = flat - flat.amax(dim=-1, keepdim=True).detach()
    prob = torch.exp(flat)
    return (prob / prob.sum(dim=-1, keepdim=True)).reshape(shape)


def expected_location(prob: Tensor) -> Tensor:
    """Soft-argmax: the expected map location under ``prob``, crop-normalized.

    Arguments:
        prob: (B, K, h, w) or (B, K, d, h, w), each map summing to 1.

    Returns:
        (B, K, 2) = (x, y) or (B, K, 3) = (x, y, z), with ``x = E[i_x] / w - 0.5``,
        ``y = E[i_y] / h - 0.5``, ``z = E[i_z] / d - 0.5``.
    """
    spatial = prob.shape[2:]
    coords = []
    # last axis is x, then y, then z: marginalise the others, then take the mean index
    for axis in range(prob.dim() - 1, 1, -1):
        others = tuple(a for a in range(2, prob.dim()) if a != axis)
        marginal = prob.sum(dim=others)  # (B, K, n)
        n = spatial[axis - 2]
        index = torch.arange(n, dtype=prob.dtype, device=prob.device)
        coords.append((marginal * index).sum(dim=-1) / n - 0.5)
    return torch.stack(coords, dim=-1)


def peak_mass(prob: Tensor, keypoints: Tensor, radius: int = 1) -> Tensor:
    """Probability mass in the (2r + 1)^n window of map pixels around each keypoint.

    Arguments:
        prob: (B, K, h, w) or (B, K, d, h, w), each map summing to 1.
        keypoints: (B, K, 2 or 3) crop-normalized locations (e.g. from :func:`expected_location`).
        radius: window half-width in map pixels (1: a 3x3 or 3x3x3 window).

    Returns:
        (B, K) in [0, 1]: the probability that the keypoint lies within ``radius`` map pixels of
        the prediction.
    """
    b, k = prob.shape[:2]
    spatial = prob.shape[2:]
    size = 2 * radius + 1
    pool = torch.nn.functional.avg_pool2d if len(spatial) == 2 else torch.nn.functional.avg_pool3d
    window = pool(prob.reshape(b * k, 1, *spatial), size, 1, radius, count_include_pad=True)
    window = window.reshape(b, k, -1) * size ** len(spatial)
    # nearest map pixel of each keypoint, per axis (x, y[, z]) -> flat index over (..., h, w)
    flat = torch.zeros(b, k, dtype=torch.long, device=prob.device)
    stride = 1
    for i, n in enumerate(reversed(spatial)):  # w, h[, d]
        pos = torch.round((keypoints[..., i].detach() + 0.5) * n).long().clamp(0, n - 1)
        flat = flat + pos * stride
        stride *= n
    return window.gather(-1, flat[..., None])[..., 0]


def soft_argmax(heatmaps: Tensor) -> tuple[Tensor, Tensor]:
    """Differentiable soft-argmax (Integral regression): expected location under softmax(heatmaps).

    Arguments:
        heatmaps: logits (B, K, h, w), or volumes (B, K, d, h, w).

    Returns:
        keypoints (B, K, 2) (or (B, K, 3)) crop-normalized (``x_hm / w - 0.5``) and the softmax
        mass in the 3x3 (3x3x3) window at the keypoint (B, K) (see :class:`IntegralCodec`).
    """
    prob = spatial_softmax(heatmaps, heatmaps.dim() - 2)
    keypoints = expected_location(prob)
    return keypoints, peak_mass(prob, keypoints)


class IntegralCodec:
    """Integral regression: coordinate targets as :class:`RegressionCodec`, soft-argmax decode.

    Arguments:
        input_size: (H, W) of the model input.
        heatmap_size: (h, w) of the logits the head produces; default input / 4.

    The score is the softmax mass in the 3x3 window of map pixels around the decoded location
    (:func:`peak_mass`), not the softmax maximum: the mass is the probability that the joint
    lies within one map pixel of the prediction, so it stays in [0, 1] and means the same at
    any map resolution (the maximum of a map spread over the same image distance quarters
    when the map doubles in size), and a two-peaked map (left/right confusion), whose
    soft-argmax falls between the peaks, scores low as it should, where the maximum would
    report one peak's height.

    Encoding is 2D (keypoints (K, 2)); for volumes (B, K, d, h, w) ``decode`` returns
    (B, K, 3) with ``z = i_z / d - 0.5``, and the 3D data supplies targets in that range.
    """

    name = "integral"

    def __init__(
        self, input_size: tuple[int, int] = (256, 192), heatmap_size: tuple[int, int] | None = None
    ) -> None:
        self.input_size = (int(input_size[0]), int(input_size[1]))
        if heatmap_size is None:
            heatmap_size = (self.input_size[0] // 4, self.input_size[1] // 4)
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))

    def encode(self, keypoints: np.ndarray, visibility: np.ndarray) -> EncodedTarget:
        """Same targets and weights as :meth:`RegressionCodec.encode`."""
        return _coordinate_target(keypoints, visibility, self.input_size)

    def decode(self, heatmaps: Tensor) -> DecodedKeypoints:
        """Logits (B, K, h, w) or (B, K, d, h, w) -> keypoints (B, K, 2 or 3) by soft-argmax, scores (B, K)."""
        keypoints, scores = soft_argmax(heatmaps)
        return DecodedKeypoints(keypoints, scores)


Codec = RegressionCodec | HeatmapCodec | IntegralCodec

CODECS: dict[str, type[Codec]] = {
    "regression": RegressionCodec,
    "heatmap": HeatmapCodec,
    "integral": IntegralCodec,
}


def create_codec(name: str, **kwargs) -> Codec:
    """Build a codec by name (``regression``, ``heatmap``, ``integral``); ValueError if unknown."""
    try:
        cls = CODECS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; valid: {', '.join(CODECS)}") from None
    return cls(**kwargs)
