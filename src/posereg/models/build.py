"""The models a config or a checkpoint describes: the skeleton, the top-down model and its codec,
the 2D-to-3D lifter, and the model a posereg checkpoint holds, with its weights loaded.

Nothing here trains or reads a dataset: ``posereg eval``, :class:`posereg.predict.Predictor`, the
exporter and :class:`posereg.lift.Lifter` build their models here without importing
:mod:`posereg.engine`.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from posereg.checkpoint import config_mismatch, describe_mismatch, load_checkpoint, load_model_state
from posereg.codecs import Codec
from posereg.config import Config, ConfigError, LiftConfig, from_saved, to_dict
from posereg.errors import CheckpointError
from posereg.family import check_family
from posereg.models.backbones import WIDTH_BACKBONES, backbone_stride
from posereg.models.factory import create_pose_model, pose_head_options
from posereg.models.heads import create_head
from posereg.models.lifter import FCLifter
from posereg.models.pose import TopDownModel
from posereg.skeletons import Skeleton, resolve_skeleton

__all__ = [
    "data_skeleton",
    "backbone_stride_of",
    "build_model",
    "codec_for",
    "check_depth",
    "MODEL_KEYS",
    "model_from_checkpoint",
    "LIFTER_KEYS",
    "build_lift_model",
    "lifter_from_checkpoint",
]

logger = logging.getLogger("posereg.models")


def data_skeleton(cfg: Config) -> Skeleton:
    """``cfg.data.skeleton`` resolved (``auto`` reads ``data.train_ann``, or ``data.val_ann``
    when there is no training file); see :func:`posereg.skeletons.resolve_skeleton`."""
    ann = cfg.data.train_ann if Path(cfg.data.train_ann).is_file() else cfg.data.val_ann
    return resolve_skeleton(cfg.data.skeleton, ann, cfg.data.keypoints_field)


def backbone_stride_of(cfg: Config) -> int:
    """The stride of ``model.backbone``, checking that ``model.width`` applies to it.

    Raises:
        ConfigError: an unknown backbone (listing the valid ones), or a width other than 1 for a
            backbone without a width multiplier.
    """
    m = cfg.model
    try:
        stride = backbone_stride(m.backbone)
    except ValueError as e:
        raise ConfigError(f"model.backbone: {e}") from None
    if m.width != 1.0 and m.backbone not in WIDTH_BACKBONES:
        raise ConfigError(
            f"model.width: {m.width:g}, but backbone {m.backbone!r} has no width multiplier "
            f"(model.width applies to {', '.join(WIDTH_BACKBONES)}); remove model.width or set 1.0"
        )
    return stride


def build_model(cfg: Config) -> TopDownModel:
    """The TopDownModel a config describes (backbone + ``model.head`` with its loss and flow)."""
    backbone_stride_of(cfg)
    skeleton = data_skeleton(cfg)
    return create_pose_model(
        backbone=cfg.model.backbone,
        num_keypoints=skeleton.num_keypoints,
        dim=2,
        loss=cfg.model.loss,
        loss_options=dict(cfg.model.loss_options),
        pretrained=cfg.model.pretrained,
        width=cfg.model.width,
        norm_mu=cfg.model.norm_mu,
        head=cfg.model.head,
        head_options=dict(cfg.model.head_options),
        input_size=tuple(cfg.data.input_size),
    )


def codec_for(cfg: Config) -> Codec:
    """The codec of the head ``cfg.model`` describes: the targets its datasets must encode.

    Built from the head alone, on the meta device (no weights, no backbone): a head's codec
    depends on the input size, the backbone's stride and the head's options only.
    """
    return _meta_head(cfg).codec


def _meta_head(cfg: Config) -> nn.Module:
    m = cfg.model
    options = pose_head_options(dict(m.head_options), m.loss, dict(m.loss_options), 2, m.norm_mu)
    stride = backbone_stride_of(cfg)
    with torch.device("meta"):
        return create_head(
            m.head, 1, 1, tuple(cfg.data.input_size), stride=stride, backbone=m.backbone, **options
        )


def check_depth(cfg: Config) -> None:
    """``data.depth`` and the head agree: 3D targets need a head that predicts 3 coordinates.

    Raises:
        ConfigError: naming the keys to change.
    """
    dim = _meta_head(cfg).dim
    if cfg.data.depth and cfg.data.format != "coco":
        raise ConfigError(
            "data.depth: true needs data.format: coco (annotations with joints_3d and camera)"
        )
    if cfg.data.depth and dim != 3:
        raise ConfigError(
            f"data.depth: true, but model.head {cfg.model.head!r} predicts {dim} coordinates; "
            "set model.head_options {dim: 3} (regression) or {depth: D} (integral volumes)"
        )
    if not cfg.data.depth and dim == 3:
        raise ConfigError(
            f"model.head {cfg.model.head!r} predicts 3 coordinates but data.depth is false; set "
            "data.depth: true (annotations with joints_3d and camera) for a 3D model"
        )


#: The config keys that define a top-down model's weights (the others, ``pretrained`` and
#: ``init_from``, only say how training started); named when a checkpoint does not load.
MODEL_KEYS = (
    "model.backbone", "model.head", "model.head_options", "model.width", "model.norm_mu",
    "model.loss", "model.loss_options",
)  # fmt: skip


def model_from_checkpoint(
    checkpoint: str | Path, cfg: Config | None = None
) -> tuple[nn.Module, Config, dict[str, Any]]:
    """The model a posereg checkpoint holds, with its weights loaded.

    Arguments:
        checkpoint: a posereg checkpoint.
        cfg: the config to build the model from; default the checkpoint's own. Either way the
            weights come from the checkpoint, so pretrained weights are never downloaded.

    Returns:
        (model, the config used, the checkpoint dict).

    Raises:
        CheckpointError: not a posereg checkpoint, one of another family (a lifter's), or one
            that does not fit the model ``cfg`` describes.
    """
    state = load_checkpoint(checkpoint)
    check_family(state, checkpoint, "topdown")
    saved = from_saved(Config, state["config"])
    if cfg is None:
        cfg = saved
    elif isinstance(saved.data.skeleton, dict):  # the model was trained with this skeleton
        if cfg.data.skeleton not in (saved.data.skeleton, saved.data.skeleton.get("name")):
            logger.warning(
                "%s: using the skeleton saved in the checkpoint (%s), not data.skeleton %r",
                checkpoint,
                saved.data.skeleton.get("name"),
                cfg.data.skeleton if isinstance(cfg.data.skeleton, str) else "(a dict)",
            )
        cfg = replace(cfg, data=replace(cfg.data, skeleton=saved.data.skeleton))
    cfg = replace(cfg, model=replace(cfg.model, pretrained=False, init_from=None))
    model = build_model(cfg)
    try:
        load_model_state(model, state["model"], str(checkpoint))
    except CheckpointError as e:
        differ = config_mismatch(to_dict(saved), to_dict(cfg), MODEL_KEYS)
        if not differ:
            raise
        raise CheckpointError(f"{e} The config differs in {describe_mismatch(differ)}") from None
    return model, cfg, state


#: The config keys that define a trained lifter: its input (the 2D skeleton, whose hips centre
#: the input) and its network and loss. ``posereg eval`` refuses a config that differs from the
#: checkpoint's in one of them; the others (paths, sizes of the sets, batch size, epochs, dropout,
#: which is off at evaluation) may differ. The normalisation statistics are buffers of the
#: checkpoint, so no config key can change them.
LIFTER_KEYS = (
    "data.input_skeleton", "model.hidden", "model.num_blocks", "model.loss", "model.loss_options",
)  # fmt: skip


def build_lift_model(cfg: LiftConfig) -> FCLifter:
    """The FC lifter the config describes (statistics still at their defaults)."""
    m = cfg.model
    return FCLifter(
        input_skeleton=cfg.data.input_skeleton, hidden=m.hidden, num_blocks=m.num_blocks,
        dropout=m.dropout, loss=m.loss, loss_options=dict(m.loss_options),
    )  # fmt: skip


def lifter_from_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[FCLifter, LiftConfig, dict[str, Any]]:
    """The lifter, its config and the checkpoint dict from a ``posereg train`` lifting checkpoint.

    Raises:
        CheckpointError: not a lifting checkpoint (e.g. a top-down model's, named by
            :func:`posereg.family.check_family`), or another model.
    """
    state = load_checkpoint(path, map_location="cpu")
    check_family(state, path, "lift")
    cfg = from_saved(LiftConfig, state["config"])
    model = build_lift_model(cfg)
    try:  # load_model_state would rename the keys of older top-down checkpoints
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{path}: does not fit the lifter its config describes ({e})"
        ) from None
    return model.to(device).eval(), cfg, state
