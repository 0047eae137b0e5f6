"""The dense one-stage family (``task: dense``): the FCOS-style model of
:mod:`posereg.models.dense` with the RLE keypoint loss (the RLE paper's Tab. 2d), or L1 / OKS
as its baselines (docs/dense.md).

Everything but the model is :class:`posereg.families.multiperson.MultiPersonFamily`'s: the
config sections, the loop and evaluation (:mod:`posereg.engine.multiperson`), checkpoints,
``posereg predict`` / ``serve`` / video and ONNX exports
(:func:`posereg.export_multiperson.export_dense`). The model takes images as they are (no resize): a
batch of different sizes is padded at the bottom and right, which moves no coordinate.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from posereg.config import AT_LEAST_1, FRACTION, POSITIVE, Range, check_run_name
from posereg.families.multiperson import (
    MultiPersonFamily,
    MultiPersonRunData,
    PeopleEvalConfig,
    PeopleOptimConfig,
    PeopleTrainConfig,
)
from posereg.family import Task
from posereg.result import PoseResult

__all__ = ["DenseConfig", "DenseFamily", "DenseModelConfig"]


@dataclasses.dataclass
class DenseModelConfig:
    """:func:`posereg.models.dense.build_dense_model`'s arguments and the decoding's.

    Arguments:
        keypoint_loss: ``rle`` (RLE, official convention), ``l1`` or ``oks`` (1 - OKS).
        backbone, width, pretrained: the ResNet trunk (``create_backbone``).
        fpn_channels, head_convs, center_radius: the FPN, head towers and centre sampling.
        keypoint_loss_weight: the keypoint term's factor (None: 1/K for rle and l1, 1 for oks).
        loss_options: the RLE loss's options (``q``, ``convention``, ...).
        nms: ``box`` (IoU, FCOS) or ``oks``; nms_threshold: None: 0.6 (box) / 0.7 (oks).
        pre_nms_top_k, max_people: locations kept before NMS, people kept after.
        flip_test: average with the mirror image's outputs at inference.
    """

    keypoint_loss: Literal["rle", "l1", "oks"] = "rle"
    backbone: str = "resnet18"
    width: float = 0.5
    pretrained: bool | str = False
    fpn_channels: int = 64
    head_convs: int = 2
    center_radius: float = 1.5
    keypoint_loss_weight: float | None = None
    loss_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    nms: Literal["box", "oks"] = "box"
    nms_threshold: float | None = None
    pre_nms_top_k: int = 1000
    max_people: int = 100
    flip_test: bool = False

    ranges: ClassVar[dict[str, Range]] = {
        "width": POSITIVE, "fpn_channels": AT_LEAST_1, "head_convs": AT_LEAST_1,
        "center_radius": POSITIVE, "keypoint_loss_weight": POSITIVE, "nms_threshold": FRACTION,
        "pre_nms_top_k": AT_LEAST_1, "max_people": AT_LEAST_1,
    }  # fmt: skip


@dataclasses.dataclass
class DenseConfig:
    """A dense one-stage run (``task: dense``; ``posereg train`` / ``eval``)."""

    task: Literal["dense"] = "dense"
    name: str = "dense"
    out_dir: str = "runs"
    data: MultiPersonRunData = dataclasses.field(default_factory=MultiPersonRunData)
    model: DenseModelConfig = dataclasses.field(default_factory=DenseModelConfig)
    optim: PeopleOptimConfig = dataclasses.field(default_factory=PeopleOptimConfig)
    train: PeopleTrainConfig = dataclasses.field(default_factory=PeopleTrainConfig)
    eval: PeopleEvalConfig = dataclasses.field(default_factory=PeopleEvalConfig)

    def __post_init__(self) -> None:
        check_run_name(self.name)


def _stack(images: list[Tensor]) -> Tensor:
    """(3, H_i, W_i) images -> (B, 3, H, W), each padded at the bottom and right to the largest."""
    h = max(int(i.shape[-2]) for i in images)
    w = max(int(i.shape[-1]) for i in images)
    return torch.stack([F.pad(i, (0, w - i.shape[-1], 0, h - i.shape[-2])) for i in images])


class DenseFamily(MultiPersonFamily):
    """The dense one-stage model: whole images -> people, in one network pass."""

    name: Task = "dense"
    title = "dense one-stage"
    maps = "whole images -> people (boxes + 2D keypoints), one pass"
    config_class = DenseConfig

    def build_model(self, cfg: DenseConfig) -> nn.Module:
        from posereg.models.dense import build_dense_model

        m = cfg.model
        return build_dense_model(
            m.keypoint_loss, m.backbone, m.width, m.pretrained, fpn_channels=m.fpn_channels,
            head_convs=m.head_convs, center_radius=m.center_radius,
            keypoint_loss_weight=m.keypoint_loss_weight, **m.loss_options,
        )  # fmt: skip

    def loss_terms(
        self, model: nn.Module, images: list[Tensor], targets: list[dict[str, Any]]
    ) -> dict[str, Tensor]:
        """objectness, box (GIoU), centerness and keypoint x ``keypoint_loss_weight``: their sum
        is the model's total (:func:`posereg.dense_losses.dense_loss`)."""
        t = model.loss(_stack(images), targets)
        weighted = model.keypoint_loss_weight * t.keypoint
        return {"objectness": t.objectness, "box": t.box, "centerness": t.centerness,
                "keypoint": weighted}  # fmt: skip

    def infer(self, model: Any, cfg: DenseConfig, images: list[Tensor]) -> list[PoseResult]:
        """:meth:`posereg.models.dense.DensePoseModel.predict` per image (each at its size)."""
        if hasattr(model, "session"):  # an ONNX export (OnnxPeopleModel): its decoding is baked
            return model.predict(images)
        m = cfg.model
        return [
            model.predict(
                image[None],
                cfg.eval.score_threshold,
                m.pre_nms_top_k,
                m.nms,
                m.nms_threshold,
                m.max_people,
                m.flip_test,
            )[0]  # fmt: skip
            for image in images
        ]

    def criterion(self, model: Any) -> nn.Module | None:
        """The RLE keypoint loss (with its flow); None for L1 and OKS, which learn no density."""
        from posereg.losses import RLELoss

        loss = getattr(model, "keypoint_loss", None)
        return loss if isinstance(loss, RLELoss) else None

    def people_module(self, model: nn.Module, cfg: DenseConfig) -> nn.Module:
        """:class:`posereg.export_multiperson.DensePeopleModule` with the config's decoding
        (flip test included)."""
        from posereg.export_multiperson import DensePeopleModule

        m = cfg.model
        return DensePeopleModule(
            model, cfg.eval.score_threshold, m.pre_nms_top_k, m.nms, m.nms_threshold,
            m.max_people, m.flip_test,
        )  # fmt: skip

    def export_onnx(self, model: nn.Module, cfg: DenseConfig, path: Path, opset: int) -> Path:
        """The people export (:func:`posereg.export_multiperson.export_dense`): box NMS in the
        graph, or (``model.nms: oks``) the candidates, with OKS-NMS after it in the runner."""
        from posereg.config import to_dict
        from posereg.export_multiperson import export_dense

        return export_dense(self.people_module(model, cfg), path, opset, config=to_dict(cfg))
