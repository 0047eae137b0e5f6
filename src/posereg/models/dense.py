"""One-stage dense multi-person pose with RLE (RLE paper Tab. 2d; FCOS-style, Tian et al. 2019).

A ResNet trunk (:mod:`posereg.models.backbones`) with torchvision's
``FeaturePyramidNetwork`` on C3-C5 gives P3-P5 (strides 8, 16, 32). A head shared by the levels
predicts at every location a: an objectness logit, a box (l, t, r, b) / stride with FCOS's
centerness logit, and per
keypoint mu (an offset from the location in units of the person scale S = sqrt(box area))
and sigma in the same units (a sigmoid, as the official RLE heads). The target encoding and
decoding are :mod:`posereg.dense_codec`; the losses :mod:`posereg.dense_losses`; docs/dense.md
has the equations.

Inference (:meth:`DensePoseModel.predict`): scores sqrt(objectness x centerness) (FCOS) -> top-k -> NMS (box IoU with
``torchvision.ops.batched_nms``, or OKS-NMS, :func:`posereg.metrics.coco.oks_nms`) -> people in
image pixels as :class:`posereg.predict.PoseResult`, sigma x S, confidence 1 - mean sigma
(Eq. 9). The network, its grid and the decode up to box NMS (:func:`decode_image`) are torch
operations on tensor shapes only, so the ONNX export (:mod:`posereg.export_multiperson`) traces
this same code with dynamic image sizes (the flip test too); OKS-NMS (:func:`oks_nms_people`)
runs in NumPy after it. The network's cost does not depend on the number of people; only the decode after
NMS does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection._utils import _topk_min
from torchvision.ops import FeaturePyramidNetwork, batched_nms

from posereg.codecs import sigma_confidence
from posereg.data.dataset import IMAGENET_MEAN, IMAGENET_STD
from posereg.dense_codec import DenseCodec, DenseGrid, make_grid
from posereg.dense_losses import (
    DenseKeypointLoss,
    DenseLossTerms,
    build_dense_keypoint_loss,
    dense_loss,
)
from posereg.metrics.coco import oks_nms
from posereg.models.backbones import ResNetTrunk, create_backbone
from posereg.result import PoseResult
from posereg.skeletons import COCO17, Skeleton

__all__ = [
    "DenseHead",
    "DenseOutput",
    "DensePeople",
    "DensePoseModel",
    "build_dense_model",
    "decode_image",
    "decode_people",
    "oks_nms_people",
    "pad_to_multiple",
]

#: The strides of P3, P4, P5 on a ResNet trunk (layer2, layer3, layer4).
DENSE_STRIDES = (8, 16, 32)
_RESNET_LEVELS = {"layer2": "p3", "layer3": "p4", "layer4": "p5"}


@dataclass(frozen=True)
class DenseOutput:
    """The network's raw outputs over the A locations of all levels (:class:`DenseGrid` order).

    Attributes:
        logits: (B, A) objectness logits.
        box_distances: (B, A, 4) (l, t, r, b) / stride, >= 0.
        centerness: (B, A) centerness logits (FCOS).
        mu: (B, A, K, 2) keypoint offsets in person-scale units.
        sigma: (B, A, K, 2) keypoint scales in person-scale units, in (0, 1).
        grid: the locations.
    """

    logits: Tensor
    box_distances: Tensor
    centerness: Tensor
    mu: Tensor
    sigma: Tensor
    grid: DenseGrid


def _tower(channels: int, num_convs: int, groups: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(groups, channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class DenseHead(nn.Module):
    """The head shared by every FPN level: three towers, objectness; box + centerness (FCOS);
    keypoints (its own, as YOLO-pose's keypoint branch: sharing the box tower, the RLE term's
    gradients slowed the boxes down in the overfit test).

    Arguments:
        in_channels: C of the FPN maps.
        num_keypoints: K.
        num_convs: 3x3 conv + GroupNorm + ReLU layers per tower (FCOS: 4).
        prior_probability: the objectness prior at initialisation (RetinaNet's 0.01).

    Example:
        >>> head = DenseHead(32, num_keypoints=17)
        >>> logits, boxes, centerness, mu, sigma = head(torch.randn(2, 32, 4, 6))
        >>> logits.shape, boxes.shape, mu.shape, bool((sigma > 0).all() & (sigma < 1).all())
        (torch.Size([2, 24]), torch.Size([2, 24, 4]), torch.Size([2, 24, 17, 2]), True)
    """

    def __init__(
        self,
        in_channels: int,
        num_keypoints: int = 17,
        num_convs: int = 2,
        prior_probability: float = 0.01,
    ) -> None:
        super().__init__()
        groups = math.gcd(32, in_channels)
        self.num_keypoints = num_keypoints
        self.cls_tower = _tower(in_channels, num_convs, groups)
        self.reg_tower = _tower(in_channels, num_convs, groups)
        self.keypoint_tower = _tower(in_channels, num_convs, groups)
        self.cls_logits = nn.Conv2d(in_channels, 1, 3, padding=1)
        self.box = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(in_channels, 1, 3, padding=1)
        self.mu = nn.Conv2d(in_channels, 2 * num_keypoints, 3, padding=1)
        self.sigma = nn.Conv2d(in_channels, 2 * num_keypoints, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        nn.init.constant_(
            self.cls_logits.bias, -math.log((1 - prior_probability) / prior_probability)
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """One level's map (B, C, h, w) -> logits (B, hw), box distances (B, hw, 4),
        centerness logits (B, hw), mu (B, hw, K, 2), sigma (B, hw, K, 2), locations row-major."""
        b, _, h, w = x.shape
        k = self.num_keypoints
        c, r, p = self.cls_tower(x), self.reg_tower(x), self.keypoint_tower(x)
        logits = self.cls_logits(c).reshape(b, h * w)
        # relu as torchvision's FCOSRegressionHead: distances are >= 0
        boxes = F.relu(self.box(r)).permute(0, 2, 3, 1).reshape(b, h * w, 4)
        centerness = self.centerness(r).reshape(b, h * w)
        mu = self.mu(p).permute(0, 2, 3, 1).reshape(b, h * w, k, 2)  # channel 2k + d
        sigma = torch.sigmoid(self.sigma(p)).permute(0, 2, 3, 1).reshape(b, h * w, k, 2)
        return logits, boxes, centerness, mu, sigma


class DensePoseModel(nn.Module):
    """ResNet + FPN + :class:`DenseHead` with its keypoint loss (module docstring).

    Arguments:
        trunk: a :class:`posereg.models.backbones.ResNetTrunk`.
        keypoint_loss: the keypoint loss module (:func:`posereg.dense_losses.build_dense_keypoint_loss`),
            owned here so that an RLE flow is trained and saved with the model.
        skeleton: keypoint names, flip pairs and OKS sigmas (K = its keypoint count).
        fpn_channels: C of the FPN maps.
        head_convs: conv layers per head tower.
        center_radius: FCOS centre sampling radius (:class:`posereg.dense_codec.DenseCodec`).
        keypoint_loss_weight: the keypoint term's factor in the total loss
            (:func:`build_dense_model` chooses it per loss).

    Images are (B, 3, H, W) in [0, 1] (ImageNet normalisation happens inside); ``forward`` pads
    H and W up to multiples of 32 at the bottom and right (no coordinate changes).
    """

    def __init__(
        self,
        trunk: ResNetTrunk,
        keypoint_loss: nn.Module,
        skeleton: Skeleton = COCO17,
        fpn_channels: int = 64,
        head_convs: int = 2,
        center_radius: float = 1.5,
        keypoint_loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(trunk, ResNetTrunk):
            raise ValueError(
                f"the dense model needs a ResNet trunk (C3-C5 for its FPN), got {type(trunk).__name__}"
            )
        self.body = IntermediateLayerGetter(trunk, _RESNET_LEVELS)
        in_channels = [_stage_channels(trunk, name) for name in _RESNET_LEVELS]
        self.fpn = FeaturePyramidNetwork(in_channels, fpn_channels)
        self.skeleton = skeleton
        self.head = DenseHead(fpn_channels, skeleton.num_keypoints, head_convs)
        self.codec = DenseCodec(DENSE_STRIDES, skeleton.num_keypoints, center_radius)
        self.keypoint_loss = keypoint_loss
        self.keypoint_loss_weight = float(keypoint_loss_weight)
        self.register_buffer(
            "mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "flip_index", torch.as_tensor(skeleton.flip_index, dtype=torch.long), persistent=False
        )

    # ------------------------------------------------------------------ network
    def forward(self, images: Tensor) -> DenseOutput:
        """Images (B, 3, H, W) in [0, 1] -> :class:`DenseOutput` over the padded input's grid."""
        x = pad_to_multiple((images - self.mean) / self.std, DENSE_STRIDES[-1])
        features = list(self.fpn(self.body(x)).values())  # P3, P4, P5
        outputs = [self.head(f) for f in features]
        logits, boxes, centerness, mu, sigma = (
            torch.cat(parts, dim=1) for parts in zip(*outputs, strict=True)
        )
        # the grid from the maps' own shapes (= codec.grid of the padded size): an ONNX export
        # traces it as a function of the input's size
        grid = make_grid(
            [f.shape[-2:] for f in features], self.codec.strides, images.device, logits.dtype
        )
        return DenseOutput(logits, boxes, centerness, mu, sigma, grid)

    def flip_forward(self, images: Tensor) -> DenseOutput:
        """Flip test: the mean of the outputs of the images and of their mirror images mapped
        back (:meth:`posereg.dense_codec.DenseCodec.mirror_outputs`); sigma averages too.

        The padded width must be what the flip mirrors about: images whose width is not a
        multiple of 32 are padded first.
        """
        # pad with what normalises to 0, so that forward's zero padding is the same (by
        # pad_to_multiple: the padding follows the input's size in an ONNX export)
        images = pad_to_multiple(images - self.mean, DENSE_STRIDES[-1]) + self.mean
        out = self(images)
        flipped = self(images.flip(-1))
        scores = torch.stack([flipped.logits, flipped.centerness], dim=-1)  # (B, A, 2)
        scores, boxes, mu, sigma = self.codec.mirror_outputs(
            scores,
            flipped.box_distances,
            flipped.mu,
            flipped.sigma,
            out.grid,
            self.flip_index,
        )
        return DenseOutput(
            (out.logits + scores[..., 0]) / 2,
            (out.box_distances + boxes) / 2,
            (out.centerness + scores[..., 1]) / 2,
            (out.mu + mu) / 2,
            (out.sigma + sigma) / 2,
            out.grid,
        )

    # ------------------------------------------------------------------ training
    def loss(self, images: Tensor, targets: Sequence[Mapping[str, Tensor]]) -> DenseLossTerms:
        """The training loss of a batch (:func:`posereg.dense_losses.dense_loss`).

        Arguments:
            images: (B, 3, H, W) in [0, 1].
            targets: B dicts in torchvision's detection format: ``boxes`` (N, 4) x1 y1 x2 y2,
                ``keypoints`` (N, K, 3), image pixels (``labels`` is not read: every box is a
                person).
        """
        out = self(images)
        return self.loss_from_output(out, targets)

    def loss_from_output(
        self, out: DenseOutput, targets: Sequence[Mapping[str, Tensor]]
    ) -> DenseLossTerms:
        """:meth:`loss` on outputs already computed."""
        if len(targets) != out.logits.shape[0]:
            raise ValueError(f"{len(targets)} targets for {out.logits.shape[0]} images")
        encoded = [self.codec.encode(t, out.grid) for t in targets]
        # each location's assigned box (the first box, or zeros, where none: not read)
        boxes = [
            torch.cat([t["boxes"].to(out.logits), out.logits.new_zeros(1, 4)])[
                e.matched.clamp_min(0)
            ]
            for t, e in zip(targets, encoded, strict=True)
        ]
        pred_boxes = self.codec.decode_boxes(out.box_distances, out.grid)  # (B, A, 4)
        k = self.skeleton.num_keypoints
        return dense_loss(
            out.logits.reshape(-1),
            pred_boxes.reshape(-1, 4),
            out.centerness.reshape(-1),
            out.mu.reshape(-1, k, 2),
            out.sigma.reshape(-1, k, 2),
            torch.cat([e.labels for e in encoded]),
            torch.cat(boxes),
            torch.cat([e.centerness for e in encoded]),
            torch.cat([e.keypoints for e in encoded]),
            torch.cat([e.keypoint_weight for e in encoded]),
            self.keypoint_loss,
            self.keypoint_loss_weight,
        )

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(
        self,
        images: Tensor,
        score_threshold: float = 0.05,
        pre_nms_top_k: int = 1000,
        nms: Literal["box", "oks"] = "box",
        nms_threshold: float | None = None,
        max_people: int = 100,
        flip_test: bool = False,
    ) -> list[PoseResult]:
        """Images (B, 3, H, W) in [0, 1] -> B :class:`posereg.predict.PoseResult` in image pixels.

        See :func:`decode_people`; ``flip_test`` averages with the mirror image
        (:meth:`flip_forward`).
        """
        out = self.flip_forward(images) if flip_test else self(images)
        return decode_people(
            out,
            self.skeleton,
            score_threshold=score_threshold,
            pre_nms_top_k=pre_nms_top_k,
            nms=nms,
            nms_threshold=nms_threshold,
            max_people=max_people,
        )


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """(..., H, W) -> (..., ceil(H / m) m, ceil(W / m) m), zeros at the bottom and right (no
    coordinate moves).

    A fixed pad of m - 1 then a crop to the size computed from the input's shape: exported to
    ONNX, the graph pads every input size correctly (``F.pad`` by a size computed in Python
    would be fixed at the traced example's padding).
    """
    h, w = x.shape[-2:]
    padded = F.pad(x, (0, multiple - 1, 0, multiple - 1))
    return padded[
        ...,
        : (h + multiple - 1) // multiple * multiple,
        : (w + multiple - 1) // multiple * multiple,
    ]


def _stage_channels(trunk: ResNetTrunk, name: str) -> int:
    """Output channels of a ResNet stage (its last block's last BN)."""
    last = getattr(trunk, name)[-1]
    bn = last.bn3 if hasattr(last, "bn3") else last.bn2
    return int(bn.num_features)


#: The default NMS threshold per rule: box IoU 0.6 (FCOS), OKS 0.7.
NMS_THRESHOLDS = {"box": 0.6, "oks": 0.7}


class DensePeople(NamedTuple):
    """The people of one image, decoded (image pixels), best score first.

    Attributes:
        boxes: (N, 4) x1, y1, x2, y2.
        scores: (N,) ``sqrt(sigmoid(objectness) x sigmoid(centerness))`` (FCOS).
        keypoints: (N, K, 2) x, y.
        keypoint_scores: (N, K) ``1 - mean_d sigma_d`` with sigma in person-scale units (Eq. 9).
        sigma: (N, K, 2) per-axis sigma in pixels (``sigma S``).
    """

    boxes: Tensor
    scores: Tensor
    keypoints: Tensor
    keypoint_scores: Tensor
    sigma: Tensor

    def select(self, index: Tensor) -> DensePeople:
        """The people at ``index`` (a long tensor), in that order."""
        return DensePeople(*(t[index] for t in self))


def decode_image(
    out: DenseOutput,
    index: int = 0,
    score_threshold: float = 0.05,
    pre_nms_top_k: int = 1000,
    nms_threshold: float | None = NMS_THRESHOLDS["box"],
    max_people: int = 100,
) -> DensePeople:
    """One image's dense outputs -> its people, in torch only (no NumPy, no Python sizes), so
    that :mod:`posereg.export_multiperson` traces this same function into the ONNX graph.

    The score ``sqrt(sigmoid(logit) x sigmoid(centerness))`` (torchvision's FCOS); the
    ``pre_nms_top_k`` best locations above ``score_threshold`` (``torch.topk``, with
    torchvision's ``_topk_min`` so that k follows the candidates' count in a trace); their boxes,
    keypoints and sigma decoded (:class:`posereg.dense_codec.DenseCodec`); NMS by box IoU
    (``torchvision.ops.batched_nms``) at ``nms_threshold`` and at most ``max_people`` kept.

    Arguments:
        out: :class:`DenseOutput` of a batch.
        index: the image in the batch.
        nms_threshold: box IoU above which a lower-scored person is dropped; None: no NMS and no
            ``max_people`` cut (every candidate, for :func:`oks_nms_people`).

    Returns:
        :class:`DensePeople`, best score first.
    """
    scores = torch.sqrt(torch.sigmoid(out.logits[index]) * torch.sigmoid(out.centerness[index]))
    candidates = torch.where(scores > score_threshold)[0]
    score, order = scores[candidates].topk(_topk_min(candidates, pre_nms_top_k, 0))
    candidates = candidates[order]
    grid = out.grid
    boxes = DenseCodec.decode_boxes(
        out.box_distances[index, candidates],
        DenseGrid(
            grid.points[candidates], grid.strides[candidates], grid.size_ranges[candidates], ()
        ),
    )
    sigma_units = out.sigma[index, candidates]
    keypoints, sigma = DenseCodec.decode_keypoints(
        out.mu[index, candidates], sigma_units, boxes, grid.points[candidates]
    )
    people = DensePeople(boxes, score, keypoints, sigma_confidence(sigma_units), sigma)  # type: ignore[arg-type]
    if nms_threshold is None:
        return people
    keep = batched_nms(boxes, score, torch.zeros_like(candidates), nms_threshold)
    return people.select(keep[:max_people])


def oks_nms_people(
    people: DensePeople, threshold: float, max_people: int, skeleton: Skeleton = COCO17
) -> DensePeople:
    """OKS-NMS (:func:`posereg.metrics.coco.oks_nms`, area = box area) of the candidates of
    :func:`decode_image` (``nms_threshold=None``), at most ``max_people`` kept: where the
    keypoints, not the boxes, decide which locations are the same person. NumPy, outside any
    ONNX graph: an OKS export's runner applies it to the graph's candidates."""
    boxes = people.boxes
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).cpu().numpy()
    kp = torch.cat([people.keypoints, torch.ones_like(people.keypoints[..., :1])], -1)
    keep = oks_nms(kp.cpu().numpy(), people.scores.cpu().numpy(), area, threshold, skeleton.sigmas)
    return people.select(torch.as_tensor(keep, dtype=torch.long, device=boxes.device)[:max_people])


def to_pose_result(people: DensePeople) -> PoseResult:
    """:class:`DensePeople` -> :class:`posereg.predict.PoseResult` (boxes to x, y, w, h; the
    scores as they are; confidence = the keypoint scores)."""
    boxes = people.boxes
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
    return PoseResult(
        keypoints=_numpy(people.keypoints),
        sigma=_numpy(people.sigma),
        confidence=_numpy(people.keypoint_scores),
        boxes=_numpy(xywh),
        scores=_numpy(people.scores),
    )


def decode_people(
    out: DenseOutput,
    skeleton: Skeleton = COCO17,
    score_threshold: float = 0.05,
    pre_nms_top_k: int = 1000,
    nms: Literal["box", "oks"] = "box",
    nms_threshold: float | None = None,
    max_people: int = 100,
) -> list[PoseResult]:
    """Dense outputs -> people per image: :func:`decode_image` per image, with box NMS or, with
    ``nms="oks"``, :func:`oks_nms_people` on its candidates.

    Arguments:
        out: :class:`DenseOutput`.
        skeleton: its OKS sigmas for OKS-NMS.
        nms_threshold: IoU or OKS above which a lower-scored person is dropped; default
            ``NMS_THRESHOLDS[nms]``.

    Returns:
        B :class:`posereg.predict.PoseResult`: boxes (N, 4) x, y, w, h; scores (N,) that
        score; keypoints (N, K, 2) and sigma (N, K, 2) px; confidence (N, K)
        ``1 - mean_d sigma_hat_d`` (Eq. 9).
    """
    if nms not in NMS_THRESHOLDS:
        raise ValueError(f"unknown nms {nms!r}; valid: {', '.join(NMS_THRESHOLDS)}")
    threshold = NMS_THRESHOLDS[nms] if nms_threshold is None else float(nms_threshold)
    results = []
    for b in range(out.logits.shape[0]):
        if nms == "box":
            people = decode_image(out, b, score_threshold, pre_nms_top_k, threshold, max_people)
        else:
            candidates = decode_image(out, b, score_threshold, pre_nms_top_k, None)
            people = oks_nms_people(candidates, threshold, max_people, skeleton)
        results.append(to_pose_result(people))
    return results


def _numpy(x: Tensor) -> np.ndarray:
    return x.detach().double().cpu().numpy()


def build_dense_model(
    keypoint_loss: DenseKeypointLoss = "rle",
    backbone: str = "resnet18",
    width: float = 0.5,
    pretrained: bool | str = False,
    skeleton: Skeleton = COCO17,
    fpn_channels: int = 64,
    head_convs: int = 2,
    center_radius: float = 1.5,
    keypoint_loss_weight: float | None = None,
    **rle_options,
) -> DensePoseModel:
    """The one-stage dense model: a ResNet trunk + FPN + dense head, with its keypoint loss.

    Arguments:
        keypoint_loss: ``"rle"`` (:class:`posereg.losses.RLELoss`, official convention),
            ``"l1"`` on the offsets, or ``"oks"`` (1 - OKS, YOLO-pose).
        backbone: a ResNet name of :data:`posereg.models.backbones.BACKBONES` (``resnet18``,
            ``resnet34``, ``resnet50``, ...); half-width ResNet-18 is the CPU default.
        width: the trunk's channel multiplier.
        pretrained: the trunk's ImageNet weights (``create_backbone``'s argument).
        skeleton: keypoint spec (K, flip pairs, OKS sigmas).
        fpn_channels, head_convs, center_radius: :class:`DensePoseModel`.
        keypoint_loss_weight: the keypoint term's factor; None: ``1 / K`` for ``rle`` and ``l1``
            (their terms sum over the K keypoints), 1 for ``oks`` (already a mean over the
            keypoints), so that every arm's keypoint term is on a per-keypoint scale.
        rle_options: :class:`posereg.losses.RLELoss` options (``convention``, ``q``, ...).

    Example:
        >>> model = build_dense_model("rle", width=0.25, fpn_channels=32)
        >>> out = model(torch.rand(1, 3, 64, 96))
        >>> out.logits.shape, out.mu.shape  # 8x12 + 4x6 + 2x3 locations
        (torch.Size([1, 126]), torch.Size([1, 126, 17, 2]))
    """
    if not backbone.startswith("resnet"):
        raise ValueError(
            f"the dense model needs a ResNet backbone (resnet18, resnet50, ...), got {backbone!r}"
        )
    trunk, _ = create_backbone(backbone, pretrained=pretrained, width=width)
    loss = build_dense_keypoint_loss(keypoint_loss, skeleton.sigmas, **rle_options)
    if keypoint_loss_weight is None:
        keypoint_loss_weight = 1.0 if keypoint_loss == "oks" else 1.0 / skeleton.num_keypoints
    return DensePoseModel(
        trunk,  # type: ignore[arg-type]
        loss,
        skeleton,
        fpn_channels=fpn_channels,
        head_convs=head_convs,
        center_radius=center_radius,
        keypoint_loss_weight=keypoint_loss_weight,
    )
