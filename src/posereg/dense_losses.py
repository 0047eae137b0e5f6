"""Losses of the one-stage dense model (RLE paper Tab. 2d): objectness, box, keypoints.

Per image batch, with P the number of assigned (positive) locations over the batch (at least 1),
following FCOS (Tian et al. 2019; torchvision's ``FCOS.compute_loss``):

- objectness: ``sigmoid_focal_loss`` (alpha 0.25, gamma 2) summed over every location / P;
- box: ``generalized_box_iou_loss`` of the decoded boxes on the positives, summed / P, and
  FCOS's centerness, ``binary_cross_entropy_with_logits`` on the positives, summed / P;
- keypoints, on the positives, in person-scale units (:mod:`posereg.dense_codec`), one of:

  * ``rle``: :class:`posereg.losses.RLELoss` (official convention by default), whose
    reduction ``sum / B`` with B = P is the mean over positive locations;
  * ``l1``: :class:`posereg.losses.L1Loss` on the offsets (sigma ignored);
  * ``oks``: :class:`OKSLoss`, ``1 - OKS`` per location, as YOLO-pose.

No term is clamped: an RLE loss below zero (a density above 1, a confident and correct
prediction) keeps its gradient (tests/test_dense.py). Ultralytics' pose loss clamps its RLE
term at 0, which stops every gradient where the model is already confident.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from posereg.losses import KeypointLoss, L1Loss, RLELoss, _check_shapes
from posereg.skeletons import COCO17

__all__ = [
    "DENSE_KEYPOINT_LOSSES",
    "DenseLossTerms",
    "OKSLoss",
    "build_dense_keypoint_loss",
    "dense_loss",
    "oks_similarity",
]

DenseKeypointLoss = Literal["rle", "l1", "oks"]
DENSE_KEYPOINT_LOSSES: tuple[str, ...] = ("rle", "l1", "oks")


def oks_similarity(pred: Tensor, target: Tensor, weight: Tensor, k: Tensor) -> Tensor:
    """Object keypoint similarity per person, differentiable, in person-scale units.

    ``OKS = sum_i w_i exp(-d_i^2 / (2 k_i^2)) / sum_i w_i`` with ``d_i`` the distance in units
    of ``s = sqrt(area)``: the COCO formula ``exp(-d_px^2 / (2 s^2 k_i^2))``
    (:func:`posereg.metrics.coco.oks`, which the tests compare it with) after dividing the
    pixels by s. YOLO-pose uses the box area for s^2, as here.

    Arguments:
        pred, target: (P, K, 2) in units of s.
        weight: (P, K) 1 for a labelled keypoint, else 0.
        k: (K,) ``2 sigma_i`` (COCO's per-keypoint constants).

    Returns:
        (P,) in [0, 1]; 0 for a person without a labelled keypoint.
    """
    d2 = (pred - target).square().sum(-1)  # (P, K)
    sim = torch.exp(-d2 / (2 * k.square()))
    return (sim * weight).sum(-1) / weight.sum(-1).clamp_min(1)


class OKSLoss(KeypointLoss):
    """``1 - OKS`` per person (YOLO-pose), summed / P; the same call as every posereg loss.

    Arguments:
        sigmas: (K,) the skeleton's OKS sigmas (default COCO-17's); ``k = 2 sigma``.

    ``forward(pred, sigma, target, weight)``: pred, target (P, K, 2) in person-scale units,
    sigma ignored, weight (P, K, 1) or (P, K, 2). A person without a labelled keypoint adds 0.
    """

    def __init__(self, sigmas: Sequence[float] = COCO17.sigmas) -> None:
        super().__init__()
        self.register_buffer("k", 2.0 * torch.tensor(list(sigmas), dtype=torch.float32))

    def forward(self, pred: Tensor, sigma: Tensor, target: Tensor, weight: Tensor) -> Tensor:
        _check_shapes(pred, sigma, target, weight)
        w = weight[..., 0]
        loss = (1.0 - oks_similarity(pred, target, w, self.k.to(pred))) * (w.sum(-1) > 0)
        return loss.sum() / max(1, pred.shape[0])


def build_dense_keypoint_loss(
    name: DenseKeypointLoss, sigmas: Sequence[float] = COCO17.sigmas, **rle_options
) -> KeypointLoss:
    """The keypoint loss of the dense model by name: ``rle``, ``l1`` or ``oks``.

    Arguments:
        name: the loss; ValueError listing the valid ones if unknown.
        sigmas: OKS sigmas (``oks`` only).
        rle_options: :class:`posereg.losses.RLELoss` options (``rle`` only).
    """
    if name == "rle":
        return RLELoss(dim=2, **rle_options)
    if rle_options:
        raise ValueError(f"keypoint loss {name!r} takes no RLE options, got {sorted(rle_options)}")
    if name == "l1":
        return L1Loss()
    if name == "oks":
        return OKSLoss(sigmas)
    raise ValueError(
        f"unknown dense keypoint loss {name!r}; valid: {', '.join(DENSE_KEYPOINT_LOSSES)}"
    )


@dataclass(frozen=True)
class DenseLossTerms:
    """The dense model's loss and its terms (scalars).

    Attributes:
        total: ``objectness + box + centerness + keypoint_weight x keypoint``, what is minimised.
        objectness, box, centerness, keypoint: the terms (each already divided by P).
        num_positive: P, the number of assigned locations in the batch.
    """

    total: Tensor
    objectness: Tensor
    box: Tensor
    centerness: Tensor
    keypoint: Tensor
    num_positive: int


def dense_loss(
    logits: Tensor,
    pred_boxes: Tensor,
    centerness: Tensor,
    mu: Tensor,
    sigma: Tensor,
    target_labels: Tensor,
    target_boxes: Tensor,
    target_centerness: Tensor,
    target_keypoints: Tensor,
    keypoint_weight: Tensor,
    keypoint_loss: KeypointLoss,
    keypoint_loss_weight: float = 1.0,
) -> DenseLossTerms:
    """The three terms over a batch of M = B x A locations (module docstring).

    Arguments:
        logits: (M,) objectness logits.
        pred_boxes: (M, 4) decoded boxes x1 y1 x2 y2, pixels.
        centerness: (M,) centerness logits.
        mu, sigma: (M, K, 2) keypoint offsets and scales, person-scale units.
        target_labels: (M,) 1 for an assigned location, else 0.
        target_boxes: (M, 4) the assigned people's boxes x1 y1 x2 y2 (any value elsewhere).
        target_centerness: (M,) FCOS centerness of the assigned locations.
        target_keypoints: (M, K, 2) the encoded offsets (:class:`posereg.dense_codec.DenseTargets`).
        keypoint_weight: (M, K) labelled keypoints of assigned people.
        keypoint_loss: :func:`build_dense_keypoint_loss`'s module.
        keypoint_loss_weight: the keypoint term's factor in the total.
    """
    positive = target_labels > 0
    num_positive = int(positive.sum())
    norm = max(1, num_positive)
    objectness = sigmoid_focal_loss(logits, target_labels, reduction="sum") / norm
    if num_positive == 0:  # no person in the batch: only the objectness term has a target
        zero = (pred_boxes.sum() + centerness.sum() + mu.sum() + sigma.sum()) * 0.0
        return DenseLossTerms(objectness + zero, objectness, zero, zero, zero, 0)
    box = (
        generalized_box_iou_loss(pred_boxes[positive], target_boxes[positive], reduction="sum")
        / norm
    )
    center = (
        F.binary_cross_entropy_with_logits(
            centerness[positive], target_centerness[positive], reduction="sum"
        )
        / norm
    )
    keypoint = keypoint_loss(
        mu[positive],
        sigma[positive],
        target_keypoints[positive],
        keypoint_weight[positive][..., None],
    )
    total = objectness + box + center + keypoint_loss_weight * keypoint
    return DenseLossTerms(total, objectness, box, center, keypoint, num_positive)
