"""One typed entry point for a complete model: backbone + a head by name (with its loss)."""

from __future__ import annotations

import os
from typing import Any

from posereg.models.backbones import create_backbone
from posereg.models.heads import HEADS, create_head
from posereg.models.pose import TopDownModel

__all__ = ["create_pose_model", "pose_head_options"]


def pose_head_options(
    head_options: dict[str, Any] | None = None,
    loss: str | None = None,
    loss_options: dict[str, Any] | None = None,
    dim: int = 2,
    norm_mu: bool = True,
) -> dict[str, Any]:
    """The options :func:`posereg.models.heads.create_head` gets from a model description.

    ``head_options`` go as they are; the model-level ``loss``, ``loss_options``, ``dim`` and
    ``norm_mu`` are added when set (not None / empty / their default), so a head that does not
    take one of them says so (``ValueError`` listing its options) instead of ignoring it.
    """
    options = dict(head_options or {})
    for key in ("stride", "backbone", "feature_stride"):
        if key in options:
            raise ValueError(
                f"head_options {key!r}: set by the backbone (its name and output stride), not "
                "a head option"
            )
    for key, value, unset in (
        ("loss", loss, None),
        ("loss_options", loss_options, {}),
        ("dim", dim, 2),
        ("norm_mu", norm_mu, True),
    ):
        if value is not None and value != unset:
            if key in options and options[key] != value:
                raise ValueError(
                    f"{key} is given twice, {value!r} and head_options {key}={options[key]!r}"
                )
            options[key] = value
    return options


def create_pose_model(
    backbone: str = "resnet50",
    num_keypoints: int = 17,
    dim: int = 2,
    loss: str | None = None,
    loss_options: dict[str, Any] | None = None,
    pretrained: bool | str | os.PathLike = False,
    width: float = 1.0,
    norm_mu: bool = True,
    backbone_options: dict[str, Any] | None = None,
    head: str = "regression",
    head_options: dict[str, Any] | None = None,
    input_size: tuple[int, int] = (256, 192),
) -> TopDownModel:
    """Create a top-down model: a backbone and a head from :data:`posereg.models.heads.HEADS`.

    Arguments:
        backbone: a name from ``posereg.models.backbones.BACKBONES``.
        num_keypoints: K.
        dim: D of the regression head (2 for image keypoints, 3 for 3D joints).
        loss: a name from ``posereg.losses.LOSSES`` for the heads that take one; None: the head's
            default (RLE for regression). A flow (RLE, DLE) lives in ``model.head.criterion.flow``
            and is trained and checkpointed with the model.
        loss_options: the loss's own options, e.g. ``{"convention": "paper", "q": "gaussian"}``.
        pretrained: backbone weights: False, True (ImageNet; online) or a local file path
            (see ``create_backbone``).
        width: backbone channel multiplier (ResNets; any other backbone refuses width != 1).
        norm_mu: the official normalized linear layer for mu (regression head).
        backbone_options: extra options of the backbone factory.
        head: the head's name (``regression``, ``heatmap``, ...).
        head_options: the head factory's own options (e.g. ``{"sigma": 2.0}`` for heatmaps).
        input_size: (H, W) of the input crops (the head's codec and flip test need it).

    Returns:
        A :class:`TopDownModel`: ``model(images (B, 3, H, W))`` -> the head's output,
        ``model.predict(images)`` -> decoded keypoints.

    Raises:
        ValueError: an unknown head or backbone (listing the valid ones), an option it does not
            take, or an input size a map head cannot take at the backbone's stride.

    Example:
        >>> import torch
        >>> model = create_pose_model("resnet18", num_keypoints=17, width=0.25, input_size=(64, 48))
        >>> out = model(torch.randn(2, 3, 64, 48))
        >>> out.mu.shape, out.confidence.shape
        (torch.Size([2, 17, 2]), torch.Size([2, 17]))
    """
    if num_keypoints < 1:
        raise ValueError(f"num_keypoints must be >= 1, got {num_keypoints}")
    if head not in HEADS:  # before building (or downloading) the backbone
        raise ValueError(f"unknown head {head!r}; valid: {', '.join(HEADS)}")
    options = pose_head_options(head_options, loss, loss_options, dim, norm_mu)
    module, channels = create_backbone(
        backbone, pretrained=pretrained, width=width, **(backbone_options or {})
    )
    pose_head = create_head(
        head, channels, num_keypoints, tuple(input_size), stride=module.stride, backbone=backbone,
        **options,
    )  # fmt: skip
    return TopDownModel(module, pose_head)
