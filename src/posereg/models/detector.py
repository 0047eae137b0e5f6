"""A small Faster R-CNN person detector for the CPU: torchvision's ``FasterRCNN`` on posereg's
half-width ResNet-18 FPN (the backbone of the small Keypoint R-CNN, :mod:`posereg.models.keypoint_rcnn`).

It is the detector of the top-down pipeline trained on posereg's own multi-person images
(:mod:`posereg.engine.detector`; issue 17 section 5), listed in :data:`posereg.detect.DETECTORS` as
``fasterrcnn_resnet18_fpn_w0.5``. torchvision has no COCO weights for it: it is trained from
scratch, class 1 = person.

Example:
    >>> model = fasterrcnn_resnet18_fpn_w05(num_classes=2, min_size=128, max_size=128)
    >>> _ = model.eval()
    >>> sorted(model([torch.rand(3, 128, 128)])[0])
    ['boxes', 'labels', 'scores']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

from posereg.models.keypoint_rcnn import fpn_anchors, fpn_backbone

__all__ = ["fasterrcnn_resnet18_fpn_w05"]


def fasterrcnn_resnet18_fpn_w05(
    num_classes: int = 2,
    *,
    fpn_channels: int = 64,
    box_representation: int = 256,
    anchor_sizes: Sequence[int] | None = None,
    **detector_options: Any,
) -> FasterRCNN:
    """Faster R-CNN on the half-width ResNet-18 FPN, random weights, BatchNorm trainable.

    Arguments:
        num_classes: classes including the background (2: background, person; 91 for COCO's
            layout, as :func:`posereg.detect.build_detector` builds every detector).
        fpn_channels: FPN output channels.
        box_representation: the box head's MLP width (torchvision's ``TwoMLPHead``).
        anchor_sizes: one RPN anchor size per FPN level (5), input pixels; default 32..512.
        detector_options: further :class:`FasterRCNN` options (``min_size``, ``max_size``,
            ``box_score_thresh``, ``rpn_post_nms_top_n_train``, ...).

    Returns:
        The model in train mode: ``model(images, targets)`` gives torchvision's loss dict,
        ``model.eval()(images)`` a list of ``{"boxes" (N, 4) x1y1x2y2, "labels" (N,),
        "scores" (N,)}`` in the input image's pixels.
    """
    fpn = fpn_backbone("resnet18_fpn_w0.5", fpn_channels, torch.nn.BatchNorm2d)
    return FasterRCNN(
        fpn,
        num_classes=None,  # the predictor below has them
        rpn_anchor_generator=fpn_anchors("resnet18_fpn_w0.5", anchor_sizes),
        box_head=TwoMLPHead(fpn.out_channels * 7 * 7, box_representation),
        box_predictor=FastRCNNPredictor(box_representation, num_classes),
        **detector_options,
    )
