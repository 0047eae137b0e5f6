"""The Keypoint R-CNN family (``task: keypoint_rcnn``): torchvision's detector with the
regression + RLE keypoint head (the RLE paper's Tab. 2c) or its heatmap head as the baseline
(:mod:`posereg.models.keypoint_rcnn`, docs/keypoint_rcnn.md).

Everything but the model is :class:`posereg.families.multiperson.MultiPersonFamily`'s: the
config sections, the loop and evaluation (:mod:`posereg.engine.multiperson`), checkpoints and
ONNX exports (:func:`posereg.export_multiperson.export_keypoint_rcnn`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Literal

from torch import Tensor, nn

from posereg.config import POSITIVE, Range, check_run_name
from posereg.families.multiperson import (
    MultiPersonFamily,
    MultiPersonRunData,
    PeopleEvalConfig,
    PeopleOptimConfig,
    PeopleTrainConfig,
)
from posereg.family import Task
from posereg.result import PoseResult

__all__ = ["KeypointRCNNConfig", "KeypointRCNNFamily", "KeypointRCNNModelConfig"]


@dataclasses.dataclass
class KeypointRCNNModelConfig:
    """:func:`posereg.models.keypoint_rcnn.build_keypoint_rcnn`'s arguments.

    Arguments:
        head: ``rle`` (regression + RLE) or ``heatmap`` (torchvision's, the baseline).
        backbone: ``resnet50_fpn``, ``resnet18_fpn_w0.5`` (CPU) or ``mobilenet_v3_fpn``.
        pretrained: False, True (torchvision's COCO heatmap weights from its cache; the RLE head
            starts from them, :func:`~posereg.models.keypoint_rcnn.init_from_heatmap`) or a file.
        loss_options: the RLE loss's options (official convention by default).
        keypoint_loss_weight: factor on the keypoint loss.
        options: further builder keywords (``min_size``, ``max_size``, ``anchor_sizes``,
            ``fpn_channels``, ``keypoint_layers``, ``box_representation``, ``KeypointRCNN``
            options such as ``box_detections_per_img``).
    """

    head: Literal["rle", "heatmap"] = "rle"
    backbone: Literal["resnet50_fpn", "resnet18_fpn_w0.5", "mobilenet_v3_fpn"] = "resnet18_fpn_w0.5"
    pretrained: bool | str = False
    loss_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    keypoint_loss_weight: float = 1.0
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    ranges: ClassVar[dict[str, Range]] = {"keypoint_loss_weight": POSITIVE}


@dataclasses.dataclass
class KeypointRCNNConfig:
    """A Keypoint R-CNN run (``task: keypoint_rcnn``; ``posereg train`` / ``eval``)."""

    task: Literal["keypoint_rcnn"] = "keypoint_rcnn"
    name: str = "kprcnn"
    out_dir: str = "runs"
    data: MultiPersonRunData = dataclasses.field(default_factory=MultiPersonRunData)
    model: KeypointRCNNModelConfig = dataclasses.field(default_factory=KeypointRCNNModelConfig)
    optim: PeopleOptimConfig = dataclasses.field(default_factory=PeopleOptimConfig)
    train: PeopleTrainConfig = dataclasses.field(default_factory=PeopleTrainConfig)
    eval: PeopleEvalConfig = dataclasses.field(default_factory=PeopleEvalConfig)

    def __post_init__(self) -> None:
        check_run_name(self.name)


class KeypointRCNNFamily(MultiPersonFamily):
    """Keypoint R-CNN (RLE or heatmap head): whole images -> people."""

    name: Task = "keypoint_rcnn"
    title = "Keypoint R-CNN"
    maps = "whole images -> people (boxes + 2D keypoints)"
    config_class = KeypointRCNNConfig

    def build_model(self, cfg: KeypointRCNNConfig) -> nn.Module:
        """The model; ``eval.score_threshold`` is its box score threshold.

        Raises:
            ConfigError-like ValueError: an unknown builder option (named).
        """
        from posereg.models.keypoint_rcnn import build_keypoint_rcnn

        m = cfg.model
        options = {"box_score_thresh": cfg.eval.score_threshold, **m.options}
        try:
            return build_keypoint_rcnn(
                m.head, m.backbone, loss_options=m.loss_options,
                keypoint_loss_weight=m.keypoint_loss_weight, pretrained=m.pretrained, **options,
            )  # fmt: skip
        except TypeError as e:  # an option neither the builder nor KeypointRCNN takes
            raise ValueError(f"model.options: {e}") from None

    def loss_terms(
        self, model: nn.Module, images: list[Tensor], targets: list[dict[str, Any]]
    ) -> dict[str, Tensor]:
        """torchvision's four detector losses and the keypoint loss (RLE or cross-entropy)."""
        return model(images, [{k: t[k] for k in ("boxes", "labels", "keypoints")} for t in targets])

    def infer(self, model: Any, cfg: KeypointRCNNConfig, images: list[Tensor]) -> list[PoseResult]:
        """:func:`posereg.models.keypoint_rcnn.to_pose_results` of the model's detections (the
        heatmap head's scores by the box score alone: its keypoint scores are logits)."""
        if hasattr(model, "session"):  # an ONNX export (OnnxPeopleModel): its threshold is baked
            return model.predict(images)
        from posereg.models.keypoint_rcnn import to_pose_results

        model.roi_heads.score_thresh = cfg.eval.score_threshold  # the config's, as at build
        rule = "official" if cfg.model.head == "rle" else "box"
        return to_pose_results(model(images), rule)

    def criterion(self, model: Any) -> nn.Module | None:
        """The RLE head's loss (with its flow); None for the heatmap head and ONNX exports."""
        predictor = getattr(getattr(model, "roi_heads", None), "keypoint_predictor", None)
        return getattr(predictor, "criterion", None)

    def people_module(self, model: nn.Module, cfg: KeypointRCNNConfig) -> nn.Module:
        from posereg.export_multiperson import KeypointRCNNPeople

        return KeypointRCNNPeople(model)

    def export_onnx(
        self, model: nn.Module, cfg: KeypointRCNNConfig, path: Path, opset: int
    ) -> Path:
        from posereg.config import to_dict
        from posereg.export_multiperson import export_keypoint_rcnn

        return export_keypoint_rcnn(model, path, opset, config=to_dict(cfg))
