"""End-to-end multi-person pose: Keypoint R-CNN with a regression + RLE keypoint head (RLE paper,
Li et al. ICCV 2021, Tab. 2c), on torchvision's detection framework.

torchvision's :class:`~torchvision.models.detection.KeypointRCNN` (Mask R-CNN's keypoint branch)
predicts a 56x56 heatmap per keypoint and trains it with a cross-entropy over the map
(``roi_heads.keypointrcnn_loss``). The paper replaces that branch with regression: the
keypoint RoI features (14x14, ``keypoint_roi_pool``) go through the same stack of 3x3
convolutions (:class:`~torchvision.models.detection.keypoint_rcnn.KeypointRCNNHeads`), then global
average pooling and an FC that predicts mu (K, 2) and sigma (K, 2) per keypoint
(:class:`posereg.models.heads.RegressionHead`, sigma = sigmoid(.), the official head), trained
with :class:`posereg.losses.RLELoss` (official convention; its flow lives in the head's
criterion and is used only in training).

Box-relative coordinates (the one place here that maps between image pixels and boxes): a
keypoint (x, y) in a box (x1, y1, x2, y2) is

    u = (x - x1) / (x2 - x1) - 0.5,    v = (y - y1) / (y2 - y1) - 0.5

the official RLE crop convention ``x / W - 0.5`` with the box as the crop (METHOD.md), so the
box spans [-0.5, 0.5] and the head, loss and flow are the top-down ones unchanged. Training
encodes the ground truth in the matched *proposal* box; inference decodes mu through the
*detected* box, and sigma (box units) to pixels as sigma x (box width, box height). A keypoint
gets weight 1 when it is labelled (v > 0) and inside its proposal box, as the top-down codec
(:class:`posereg.codecs.RegressionCodec`) and torchvision's heatmap target both do.

Example:
    >>> model = build_keypoint_rcnn("rle", "resnet18_fpn_w0.5", min_size=128, max_size=128)
    >>> _ = model.eval()
    >>> out = model([torch.rand(3, 128, 128)])[0]
    >>> sorted(out)  # doctest: +NORMALIZE_WHITESPACE
    ['boxes', 'keypoints', 'keypoints_scores', 'keypoints_sigma', 'labels', 'scores']
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models.detection import KeypointRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import (
    BackboneWithFPN,
    mobilenet_backbone,
    resnet_fpn_backbone,
)
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from posereg.codecs import sigma_confidence
from posereg.losses import build_loss
from posereg.metrics.coco import instance_score
from posereg.models.backbones import resnet18
from posereg.models.heads import RegressionHead, RegressionOutput
from posereg.result import PoseResult
from posereg.torchfile import read_torch_file

__all__ = [
    "BACKBONES",
    "HEADS",
    "KeypointHeadName",
    "KeypointRCNNBackbone",
    "RegressionRoIHeads",
    "box_normalize",
    "box_denormalize",
    "box_sigma_to_pixels",
    "encode_box_targets",
    "fpn_anchors",
    "fpn_backbone",
    "build_keypoint_rcnn",
    "init_from_heatmap",
    "to_pose_results",
]

KeypointHeadName = Literal["rle", "heatmap"]
KeypointRCNNBackbone = Literal["resnet50_fpn", "resnet18_fpn_w0.5", "mobilenet_v3_fpn"]
HEADS: tuple[KeypointHeadName, ...] = get_args(KeypointHeadName)
BACKBONES: tuple[KeypointRCNNBackbone, ...] = get_args(KeypointRCNNBackbone)

#: The state-dict prefix of the keypoint predictor: the only part that differs between the
#: heatmap and the regression head (:func:`init_from_heatmap` skips it).
PREDICTOR_PREFIX = "roi_heads.keypoint_predictor."


# ----------------------------------------------------------------------------- box coordinates


def _box_origin_size(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """boxes (N, 4) x1y1x2y2 -> origin (N, 1, 2) and size (N, 1, 2), the size at least 1e-6 px."""
    origin = boxes[:, None, :2]
    size = (boxes[:, None, 2:] - boxes[:, None, :2]).clamp_min(1e-6)
    return origin, size


def box_normalize(xy: Tensor, boxes: Tensor) -> Tensor:
    """Image pixels -> box-relative coordinates, ``(x - x1) / w - 0.5`` per axis.

    Arguments:
        xy: (N, K, 2) image pixels.
        boxes: (N, 4) x1, y1, x2, y2 image pixels.

    Returns:
        (N, K, 2), the box spanning [-0.5, 0.5].
    """
    origin, size = _box_origin_size(boxes)
    return (xy - origin) / size - 0.5


def box_denormalize(uv: Tensor, boxes: Tensor) -> Tensor:
    """Box-relative coordinates (N, K, 2) -> image pixels (N, K, 2): x1 + (u + 0.5) w."""
    origin, size = _box_origin_size(boxes)
    return origin + (uv + 0.5) * size


def box_sigma_to_pixels(sigma: Tensor, boxes: Tensor) -> Tensor:
    """Sigma in box units (N, K, 2) -> image pixels (N, K, 2): sigma_d x box size_d."""
    return sigma * _box_origin_size(boxes)[1]


def encode_box_targets(keypoints: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Ground-truth keypoints in their proposal boxes -> regression target and weight.

    Arguments:
        keypoints: (N, K, 3) x, y image pixels and visibility (0: unlabelled).
        boxes: (N, 4) the proposals x1, y1, x2, y2.

    Returns:
        ``(target, weight)``, both (N, K, 2): the box-relative coordinates
        (:func:`box_normalize`) and 1 where the keypoint is labelled and inside the box
        (both coordinates in [-0.5, 0.5]), else 0.
    """
    target = box_normalize(keypoints[..., :2], boxes)
    inside = ((target >= -0.5) & (target <= 0.5)).all(dim=-1)
    weight = ((keypoints[..., 2] > 0) & inside).to(target.dtype)
    return target, weight[..., None].expand_as(target)


# ----------------------------------------------------------------------------- the RoI heads


class RegressionRoIHeads(RoIHeads):
    """torchvision's :class:`RoIHeads` with the keypoint branch replaced by regression + RLE.

    The box branch is torchvision's (``select_training_samples``, ``fastrcnn_loss``,
    ``postprocess_detections``); only the keypoint branch differs: ``keypoint_predictor`` is a
    :class:`posereg.models.heads.RegressionHead` (with its RLE criterion) instead of the
    heatmap predictor, the loss is that criterion on box-relative targets
    (:func:`encode_box_targets`), and inference decodes through the detected boxes.

    Build one from a torchvision ``RoIHeads`` with :meth:`from_roi_heads` (the box modules and
    settings are taken over, so state-dict keys are torchvision's).

    Result dicts at inference (per image, N detections): ``boxes`` (N, 4), ``labels`` (N,),
    ``scores`` (N,) as torchvision; ``keypoints`` (N, K, 3) x, y image pixels and 1 (torchvision's
    layout); ``keypoints_scores`` (N, K) = 1 - mean_d sigma_d (Eq. 9, sigma in box units);
    ``keypoints_sigma`` (N, K, 2) sigma in image pixels, sigma_d x box size_d.
    Training returns ``loss_keypoint``: the RLE loss summed over the positive proposals'
    labelled keypoints and divided by the number of positive proposals (the official
    reduction, per instance), times ``keypoint_loss_weight``.
    """

    keypoint_predictor: RegressionHead
    keypoint_loss_weight: float = 1.0

    @classmethod
    def from_roi_heads(
        cls, heads: RoIHeads, keypoint_predictor: RegressionHead, keypoint_loss_weight: float = 1.0
    ) -> RegressionRoIHeads:
        """The regression version of ``heads`` (a torchvision ``RoIHeads`` with a keypoint
        branch): its box modules, matcher, sampler and thresholds, its keypoint RoI pool and
        conv stack, and ``keypoint_predictor`` in place of the heatmap predictor."""
        new = cls(
            heads.box_roi_pool,
            heads.box_head,
            heads.box_predictor,
            heads.proposal_matcher.high_threshold,
            heads.proposal_matcher.low_threshold,
            heads.fg_bg_sampler.batch_size_per_image,
            heads.fg_bg_sampler.positive_fraction,
            heads.box_coder.weights,
            heads.score_thresh,
            heads.nms_thresh,
            heads.detections_per_img,
            keypoint_roi_pool=heads.keypoint_roi_pool,
            keypoint_head=heads.keypoint_head,
            keypoint_predictor=keypoint_predictor,
        )
        new.keypoint_loss_weight = float(keypoint_loss_weight)
        return new

    def forward(  # type: ignore[override]
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """features: FPN maps; proposals: per image (P_i, 4); targets: torchvision detection
        dicts with ``keypoints`` (N_i, K, 3) in training. Returns (results, losses)."""
        if self.training:
            if targets is None or any("keypoints" not in t for t in targets):
                raise ValueError("training needs targets with 'boxes', 'labels' and 'keypoints'")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(
                proposals, targets
            )
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)

        result: list[dict[str, Tensor]] = []
        losses: dict[str, Tensor] = {}
        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(
                class_logits, box_regression, labels, regression_targets
            )
            losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
            # the keypoint branch sees the positive proposals and their matched people
            positive = [torch.where(lab > 0)[0] for lab in labels]
            keypoint_boxes = [p[i] for p, i in zip(proposals, positive, strict=True)]
            gt_keypoints = [
                t["keypoints"][m[i]]
                for t, m, i in zip(targets, matched_idxs, positive, strict=True)  # type: ignore[arg-type]
            ]
        else:
            boxes, scores, classes = self.postprocess_detections(
                class_logits, box_regression, proposals, image_shapes
            )
            result = [
                {"boxes": b, "labels": c, "scores": s}
                for b, s, c in zip(boxes, scores, classes, strict=True)
            ]
            keypoint_boxes = boxes

        x = self.keypoint_roi_pool(features, keypoint_boxes, image_shapes)  # (P, C, 14, 14)
        x = self.keypoint_head(x)  # (P, C', 14, 14)
        output: RegressionOutput = self.keypoint_predictor(x)  # mu, sigma (P, K, 2), box units
        all_boxes = torch.cat(keypoint_boxes)  # (P, 4)
        if self.training:
            losses["loss_keypoint"] = self.keypoint_loss_weight * self._keypoint_loss(
                output, torch.cat(gt_keypoints), all_boxes
            )
            return result, losses
        keypoints = box_denormalize(output.mu, all_boxes)  # (P, K, 2) image px
        sigma = box_sigma_to_pixels(output.sigma, all_boxes)  # (P, K, 2) px
        confidence = sigma_confidence(output.sigma)  # (P, K), Eq. 9
        ones = torch.ones_like(keypoints[..., :1])
        counts = [b.size(0) for b in keypoint_boxes]  # size(0), not len(): traced by ONNX
        for r, kp, sg, c in zip(
            result,
            torch.cat([keypoints, ones], dim=-1).split(counts),
            sigma.split(counts),
            confidence.split(counts),
            strict=True,
        ):
            r["keypoints"], r["keypoints_sigma"], r["keypoints_scores"] = kp, sg, c
        return result, losses

    def _keypoint_loss(self, output: RegressionOutput, keypoints: Tensor, boxes: Tensor) -> Tensor:
        """The head's RLE criterion on the box-relative targets; 0 (in the graph) without a
        positive proposal."""
        if len(boxes) == 0:
            return output.mu.sum() * 0 + output.sigma.sum() * 0
        target, weight = encode_box_targets(keypoints, boxes)
        return self.keypoint_predictor.loss(output, target, weight)


class _SigmaResizeTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform that also rescales ``keypoints_sigma`` from the
    network's input size back to the original image (as it does boxes and keypoints)."""

    def postprocess(  # type: ignore[override]
        self,
        result: list[dict[str, Tensor]],
        image_shapes: list[tuple[int, int]],
        original_image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Results in the network's input pixels -> the original image's pixels."""
        result = super().postprocess(result, image_shapes, original_image_sizes)
        if self.training:
            return result
        for r, (h, w), (oh, ow) in zip(result, image_shapes, original_image_sizes, strict=True):
            if "keypoints_sigma" in r:
                # ratios of the sizes as tensors, as torchvision's resize_keypoints: the sizes are
                # traced in an ONNX export (a tensor of Python floats would be a constant there)
                sigma = r["keypoints_sigma"]
                ratio_w, ratio_h = (
                    torch.as_tensor(o, dtype=torch.float32, device=sigma.device)
                    / torch.as_tensor(n, dtype=torch.float32, device=sigma.device)
                    for o, n in ((ow, w), (oh, h))
                )
                r["keypoints_sigma"] = sigma * torch.stack([ratio_w, ratio_h])
        return result


# ----------------------------------------------------------------------------- the builder


def fpn_backbone(
    name: KeypointRCNNBackbone, fpn_channels: int, norm_layer: type[nn.Module]
) -> BackboneWithFPN:
    """The FPN backbone ``name`` of :data:`BACKBONES`, random weights (nothing downloaded); also
    the backbone of posereg's small person detector (:mod:`posereg.models.detector`)."""
    if name == "resnet50_fpn":  # torchvision's keypointrcnn_resnet50_fpn backbone, all trainable
        trainable = 3 if norm_layer is FrozenBatchNorm2d else 5  # torchvision's choice
        return resnet_fpn_backbone(
            backbone_name="resnet50",
            weights=None,
            norm_layer=norm_layer,
            trainable_layers=trainable,
        )
    if name == "resnet18_fpn_w0.5":  # posereg's half-width ResNet-18 (256 channels at C5)
        trunk = resnet18(width=0.5, norm_layer=norm_layer)
        c5 = trunk.out_channels
        return BackboneWithFPN(
            trunk,
            return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
            in_channels_list=[c5 // 8, c5 // 4, c5 // 2, c5],
            out_channels=fpn_channels,
            extra_blocks=LastLevelMaxPool(),
        )
    if name == "mobilenet_v3_fpn":  # torchvision's fasterrcnn_mobilenet_v3_large_fpn backbone
        return mobilenet_backbone(
            backbone_name="mobilenet_v3_large",
            weights=None,
            fpn=True,
            norm_layer=norm_layer,
            trainable_layers=6,
        )
    raise ValueError(f"unknown Keypoint R-CNN backbone {name!r}; valid: {', '.join(BACKBONES)}")


def fpn_anchors(
    backbone: KeypointRCNNBackbone, anchor_sizes: Sequence[int] | None
) -> AnchorGenerator:
    """One anchor size per FPN level (ResNet FPNs: 5 levels) or all sizes on each of the 3
    MobileNet levels, as torchvision's builders; aspect ratios 0.5, 1, 2."""
    sizes = tuple(anchor_sizes or (32, 64, 128, 256, 512))
    if backbone == "mobilenet_v3_fpn":
        return AnchorGenerator((sizes,) * 3, ((0.5, 1.0, 2.0),) * 3)
    if len(sizes) != 5:
        raise ValueError(f"anchor_sizes: one size per FPN level (5), got {list(sizes)}")
    return AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * 5)


def _torchvision_coco_weights() -> Path:
    """Where torchvision keeps keypointrcnn_resnet50_fpn's COCO weights once downloaded."""
    from torchvision.models.detection import KeypointRCNN_ResNet50_FPN_Weights

    url = KeypointRCNN_ResNet50_FPN_Weights.DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no Keypoint R-CNN weights at {path}")
    state = read_torch_file(path, "Keypoint R-CNN weights (a state dict)")
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a Keypoint R-CNN state dict (names -> tensors)")
    return state


def build_keypoint_rcnn(
    head: KeypointHeadName = "rle",
    backbone: KeypointRCNNBackbone = "resnet50_fpn",
    num_keypoints: int = 17,
    *,
    fpn_channels: int | None = None,
    keypoint_layers: Sequence[int] | None = None,
    box_representation: int | None = None,
    anchor_sizes: Sequence[int] | None = None,
    min_size: int | Sequence[int] = (640, 672, 704, 736, 768, 800),
    max_size: int = 1333,
    loss_options: Mapping[str, Any] | None = None,
    keypoint_loss_weight: float = 1.0,
    pretrained: bool | str | os.PathLike = False,
    **detector_options: Any,
) -> KeypointRCNN:
    """A Keypoint R-CNN (one class: person) with the regression + RLE or the heatmap head.

    Both heads share everything else (backbone, RPN, box head, keypoint RoI pool and its 3x3
    conv stack); they differ in the keypoint predictor only: ``"heatmap"`` is torchvision's
    :class:`KeypointRCNNPredictor` (56x56 maps, cross-entropy), ``"rle"`` is
    :class:`posereg.models.heads.RegressionHead` (GAP + FC, mu and sigma) in
    :class:`RegressionRoIHeads`.

    Arguments:
        head: ``"rle"`` or ``"heatmap"``.
        backbone: ``"resnet50_fpn"`` (torchvision's recipe: ResNet-50 + FPN, 256 channels),
            ``"resnet18_fpn_w0.5"`` (posereg's half-width ResNet-18 + FPN, for the CPU) or
            ``"mobilenet_v3_fpn"`` (torchvision's MobileNetV3-Large FPN, 3 levels).
        num_keypoints: K.
        fpn_channels: FPN output channels (default 256; 64 for ``resnet18_fpn_w0.5``; fixed at
            256 for ``mobilenet_v3_fpn``).
        keypoint_layers: channels of the keypoint conv stack (default eight 512-channel convs
            as torchvision; four 64-channel ones for ``resnet18_fpn_w0.5``).
        box_representation: the box head's MLP width (default 1024; 256 for
            ``resnet18_fpn_w0.5``).
        anchor_sizes: RPN anchor sizes in input pixels (default 32..512).
        min_size, max_size: torchvision's resize of the input (``GeneralizedRCNNTransform``);
            outputs are in the original image's pixels.
        loss_options: options of the RLE loss (:func:`posereg.losses.build_loss`; official
            convention by default).
        keypoint_loss_weight: factor on the RLE keypoint loss.
        pretrained: False (random init, nothing downloaded); True: torchvision's COCO
            ``keypointrcnn_resnet50_fpn`` weights from torchvision's cache (never downloaded;
            ``resnet50_fpn`` only); or the path of a saved Keypoint R-CNN state dict of this
            architecture. With pretrained weights the BatchNorms are frozen as torchvision does;
            the ``"heatmap"`` head loads every weight, the ``"rle"`` head the shared ones
            (:func:`init_from_heatmap`: the paper's initialisation from a heatmap-trained model).
        detector_options: further :class:`KeypointRCNN` options (``box_score_thresh``,
            ``rpn_post_nms_top_n_test``, ``box_detections_per_img``, ...).

    Returns:
        The model in train mode. ``model(images, targets)`` gives a dict of losses in training,
        a list of result dicts (see :class:`RegressionRoIHeads`) in eval mode.

    Raises:
        ValueError: an unknown head or backbone, or weights that do not fit.
        FileNotFoundError: ``pretrained`` names a missing file or torchvision's cache lacks
            the COCO weights.
    """
    if head not in HEADS:
        raise ValueError(f"unknown Keypoint R-CNN head {head!r}; valid: {', '.join(HEADS)}")
    if backbone not in BACKBONES:
        raise ValueError(
            f"unknown Keypoint R-CNN backbone {backbone!r}; valid: {', '.join(BACKBONES)}"
        )
    small = backbone == "resnet18_fpn_w0.5"
    state: dict[str, Tensor] | None = None
    if pretrained is True:
        if backbone != "resnet50_fpn":
            raise ValueError(
                f"pretrained=True: torchvision has COCO keypoint weights for resnet50_fpn only, "
                f"not {backbone!r}; pass a state dict file instead"
            )
        path = _torchvision_coco_weights()
        if not path.is_file():
            raise FileNotFoundError(
                f"no keypointrcnn_resnet50_fpn COCO weights at {path} (torchvision's cache). "
                "posereg never downloads: on a machine with internet access run `python -c "
                '"import torchvision; torchvision.models.detection.keypointrcnn_resnet50_fpn('
                "weights='DEFAULT')\"` and copy the file there, or pass its path"
            )
        state = _read_state_dict(path)
    elif pretrained is not False:
        state = _read_state_dict(pretrained)
    norm_layer = FrozenBatchNorm2d if state is not None else nn.BatchNorm2d

    fpn = fpn_backbone(backbone, fpn_channels or (64 if small else 256), norm_layer)
    layers = tuple(keypoint_layers or ((64,) * 4 if small else (512,) * 8))
    representation = box_representation or (256 if small else 1024)
    box_head = TwoMLPHead(fpn.out_channels * 7 * 7, representation)
    model = KeypointRCNN(
        fpn,
        num_classes=None,  # the box predictor's 2 classes: background, person
        min_size=min_size,
        max_size=max_size,
        rpn_anchor_generator=fpn_anchors(backbone, anchor_sizes),
        box_head=box_head,
        box_predictor=FastRCNNPredictor(representation, 2),
        keypoint_head=KeypointRCNNHeads(fpn.out_channels, layers),
        keypoint_predictor=KeypointRCNNPredictor(layers[-1], num_keypoints),
        **detector_options,
    )
    if head == "rle":
        criterion = build_loss("rle", dim=2, **dict(loss_options or {}))
        predictor = RegressionHead(layers[-1], num_keypoints, dim=2, criterion=criterion)
        model.roi_heads = RegressionRoIHeads.from_roi_heads(
            model.roi_heads, predictor, keypoint_loss_weight
        )
        t = model.transform
        model.transform = _SigmaResizeTransform(
            t.min_size, t.max_size, t.image_mean, t.image_std, t.size_divisible, t.fixed_size
        )
    if state is not None:
        if head == "heatmap":
            missing, unexpected = model.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ValueError(
                    f"{pretrained}: not a {backbone} Keypoint R-CNN state dict with the heatmap "
                    f"head ({len(missing)} missing keys, e.g. {missing[:2]}; {len(unexpected)} "
                    f"unexpected, e.g. {unexpected[:2]})"
                )
        else:
            init_from_heatmap(model, state)
    return model


# ----------------------------------------------------------------------------- initialisation


def init_from_heatmap(
    model: KeypointRCNN, heatmap_state: Mapping[str, Tensor] | str | os.PathLike
) -> list[str]:
    """Initialise an RLE Keypoint R-CNN from a heatmap-trained one (the paper's variant, and
    the authors' advice in the official repository's issue #12).

    Copies every weight the two share (backbone + FPN, RPN, box head, the keypoint conv stack)
    and leaves the keypoint predictor (``roi_heads.keypoint_predictor.*``: the heatmap deconv
    there, mu/sigma FCs and the RLE flow here) as initialised.

    Arguments:
        model: the model to initialise (any head).
        heatmap_state: a Keypoint R-CNN state dict, or the path of a file holding one (also
            torchvision's COCO ``keypointrcnn_resnet50_fpn`` weights).

    Returns:
        The names copied, sorted.

    Raises:
        ValueError: a shared weight is missing from ``heatmap_state`` or has another shape
            (another backbone or width), naming a few of them.
    """
    source = str(heatmap_state) if isinstance(heatmap_state, str | os.PathLike) else "state dict"
    state = (
        _read_state_dict(heatmap_state)
        if isinstance(heatmap_state, str | os.PathLike)
        else dict(heatmap_state)
    )
    own = model.state_dict()
    shared = [k for k in own if not k.startswith(PREDICTOR_PREFIX)]
    # a frozen BatchNorm has no step counter; a BatchNorm's counter may be absent from a file
    missing = [k for k in shared if k not in state and not k.endswith("num_batches_tracked")]
    mismatched = [k for k in shared if k in state and state[k].shape != own[k].shape]
    if missing or mismatched:
        raise ValueError(
            f"{source}: not a Keypoint R-CNN of this architecture ({len(missing)} shared "
            f"weights missing, e.g. {missing[:2]}; {len(mismatched)} of another shape, e.g. "
            f"{mismatched[:2]})"
        )
    copied = sorted(k for k in shared if k in state)
    model.load_state_dict({k: state[k] for k in copied}, strict=False)
    return copied


# ----------------------------------------------------------------------------- results


def to_pose_results(
    outputs: Sequence[Mapping[str, Tensor]], score_rule: str = "official"
) -> list[PoseResult]:
    """A Keypoint R-CNN's result dicts (eval mode) -> one :class:`PoseResult` per image.

    Arguments:
        outputs: per image ``boxes`` (N, 4) x1y1x2y2, ``scores`` (N,), ``keypoints`` (N, K, 3),
            ``keypoints_scores`` (N, K) and, from the RLE head, ``keypoints_sigma`` (N, K, 2).
        score_rule: the instance score rule (:func:`posereg.metrics.instance_score`) on the
            detection score and the keypoint confidences; ``"box"`` keeps the detection score.
            (The heatmap head's keypoint scores are torchvision's heatmap logits, not in
            [0, 1]: use ``"box"`` for it.)

    Returns:
        PoseResults with keypoints (N, K, 2), sigma (N, K, 2) px (None for the heatmap head),
        confidence (N, K), boxes (N, 4) x, y, w, h and scores (N,), detection order.
    """

    def numpy(x: Tensor) -> np.ndarray:
        return x.detach().cpu().double().numpy()

    results = []
    for out in outputs:
        xyxy = numpy(out["boxes"]).reshape(-1, 4)
        confidence = numpy(out["keypoints_scores"])
        sigma = out.get("keypoints_sigma")
        results.append(
            PoseResult(
                keypoints=numpy(out["keypoints"][..., :2]),
                sigma=None if sigma is None else numpy(sigma),
                confidence=confidence,
                boxes=np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1),
                scores=instance_score(confidence, numpy(out["scores"]), score_rule),
            )
        )
    return results
