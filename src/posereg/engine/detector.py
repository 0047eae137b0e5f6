"""Training a person detector on posereg's multi-person images: the detector of the top-down
pipeline (issue 17 section 5: "the torchvision person detector trained on the same images").

A torchvision detector of :data:`posereg.detect.DETECTORS` (by default posereg's small Faster
R-CNN on the half-width ResNet-18 FPN), built from scratch with 2 classes (0 background,
1 person: the target format of :mod:`posereg.data.multiperson`), trained with AdamW for a fixed
number of steps on torchvision's own detection losses (RPN objectness + box, Fast R-CNN
classifier + box), and saved as a posereg checkpoint (:func:`posereg.checkpoint.save_checkpoint`)
whose ``detector`` entry (:func:`posereg.detect.detector_record`) lets
``posereg predict --detector NAME --detector-weights FILE`` and
:class:`posereg.detect.PersonDetector` load it.

Crowd regions (``target["crowd_boxes"]``) are not used: every candidate is positive or negative
by torchvision's IoU matching alone (the synthetic ``multi`` sets have no crowd regions).

Example:
    >>> from posereg.synth.sticks import draw_sticks, stick_people
    >>> target = stick_people([(40.0, 60.0, 70.0)])
    >>> batches = [([draw_sticks((128, 128), target)], [target])]
    >>> config = DetectorTrainConfig(steps=2, options=SMALL_DETECTOR_OPTIONS)
    >>> result = train_detector(batches, config)
    >>> len(result.losses)
    2
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from posereg.checkpoint import save_checkpoint
from posereg.detect import DetectorName, build_detector, check_detector_name, detector_record
from posereg.metrics.coco import COCOBoxResult, evaluate_coco_boxes

__all__ = [
    "SMALL_DETECTOR_OPTIONS",
    "DetectorTrainConfig",
    "DetectorTrainResult",
    "train_detector",
    "save_detector_checkpoint",
    "detect_people",
    "evaluate_detector",
]

Batch = tuple[Sequence[Tensor], Sequence[dict[str, Any]]]

#: Builder options of ``fasterrcnn_resnet18_fpn_w0.5`` for 256 x 256 images with people 20-200 px
#: tall on the CPU: no resize, anchors 16..256 px (one size per FPN level), 64 FPN channels, a
#: 256-wide box head, fewer proposals and sampled RoIs than torchvision's 800-pixel defaults.
SMALL_DETECTOR_OPTIONS: dict[str, Any] = {
    "min_size": 256,
    "max_size": 256,
    "anchor_sizes": (16, 32, 64, 128, 256),
    "fpn_channels": 64,
    "box_representation": 256,
    "box_batch_size_per_image": 128,
    "rpn_pre_nms_top_n_train": 600,
    "rpn_post_nms_top_n_train": 300,
    "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_test": 100,
}


@dataclass
class DetectorTrainConfig:
    """How a person detector is trained.

    Attributes:
        name: the architecture, one of :data:`posereg.detect.DETECTORS`.
        options: its builder options (:func:`posereg.detect.build_detector`), saved with the
            checkpoint so that it is rebuilt the same; plain values only. None:
            :data:`SMALL_DETECTOR_OPTIONS` for ``fasterrcnn_resnet18_fpn_w0.5``, torchvision's
            defaults (``{}``) for the others.
        steps: optimizer steps (one batch each; the batches are cycled).
        lr: AdamW's peak learning rate, after a linear warm-up, then a cosine decay to 0.
        warmup_steps: steps of the linear warm-up from 0.
        weight_decay: AdamW's decoupled weight decay.
        grad_clip: the gradient norm is clipped to this (0: no clipping).
        seed: seeds torch before the model is built (its initial weights).
    """

    name: DetectorName = "fasterrcnn_resnet18_fpn_w0.5"
    options: dict[str, Any] | None = None
    steps: int = 1000
    lr: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 1e-4
    grad_clip: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_detector_name(self.name)
        if self.options is None:
            small = self.name == "fasterrcnn_resnet18_fpn_w0.5"
            self.options = dict(SMALL_DETECTOR_OPTIONS) if small else {}
        if self.steps < 1 or self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError(
                f"detector training: steps >= 1, lr > 0, warmup_steps >= 0; got steps "
                f"{self.steps}, lr {self.lr}, warmup_steps {self.warmup_steps}"
            )


@dataclass
class DetectorTrainResult:
    """What :func:`train_detector` gives back.

    Attributes:
        model: the trained detector, in eval mode.
        losses: (steps,) the summed torchvision losses per step.
        checkpoint: the saved checkpoint, or None.
        seconds: wall time of the training loop.
    """

    model: nn.Module
    losses: list[float]
    checkpoint: Path | None
    seconds: float


def _cycle(batches: Iterable[Batch]) -> Iterator[Batch]:
    """``batches`` over and over (a DataLoader is iterated anew each pass, reshuffled)."""
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("detector training got no batches")


def _lr_factor(step: int, config: DetectorTrainConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then a cosine from 1 to 0 at ``steps``."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def train_detector(
    batches: Iterable[Batch],
    config: DetectorTrainConfig,
    out: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
    log_every: int = 100,
) -> DetectorTrainResult:
    """Train a 2-class person detector from scratch.

    Arguments:
        batches: ``(images, targets)`` batches, iterated again when exhausted (e.g.
            :func:`posereg.data.multiperson.build_multiperson_loader` or a list): images (3, H, W)
            in [0, 1]; targets with ``boxes`` (N, 4) x1y1x2y2 pixels and ``labels`` (N,) = 1
            (other keys are ignored). An image without people trains background only.
        config: the architecture and schedule.
        out: where to save the checkpoint (:func:`save_detector_checkpoint`); None: not saved.
        device: where to train.
        log: called with a progress line every ``log_every`` steps and at the end.
        log_every: steps between progress lines.

    Returns:
        The model (eval mode), the loss per step, the checkpoint path.

    Raises:
        FloatingPointError: a non-finite loss (the message says the step and each loss term).
    """
    torch.manual_seed(config.seed)
    model = build_detector(config.name, num_classes=2, **(config.options or {})).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, config))
    losses: list[float] = []
    t0 = time.perf_counter()
    for step, (images, targets) in zip(range(config.steps), _cycle(batches), strict=False):
        images = [image.to(device) for image in images]
        targets = [
            {"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets
        ]
        terms = model(images, targets)  # torchvision's dict of loss terms
        loss = sum(terms.values())
        if not torch.isfinite(loss):
            detail = ", ".join(f"{k} {v.item():.4g}" for k, v in terms.items())
            raise FloatingPointError(
                f"detector training: non-finite loss at step {step} ({detail})"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if log is not None and ((step + 1) % log_every == 0 or step + 1 == config.steps):
            recent = losses[-log_every:]
            log(
                f"step {step + 1}/{config.steps}: loss {sum(recent) / len(recent):.4f} "
                f"({time.perf_counter() - t0:.0f} s)"
            )
    seconds = time.perf_counter() - t0
    model.eval()
    path = None if out is None else save_detector_checkpoint(model, out, config, len(losses))
    return DetectorTrainResult(model, losses, path, seconds)


def save_detector_checkpoint(
    model: nn.Module,
    path: str | Path,
    config: DetectorTrainConfig,
    step: int,
    metrics: dict[str, float] | None = None,
) -> Path:
    """Save a trained detector as a posereg checkpoint (atomic, ``weights_only``-readable):
    ``{"format", "model" (the state dict), "detector" (:func:`posereg.detect.detector_record`:
    name, 2 classes, options), "step", "metrics", "config" ({"detector": the training config})}``.
    """
    state = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "detector": detector_record(config.name, 2, config.options or {}),
        "step": int(step),
        "metrics": dict(metrics or {}),
        "config": {"name": f"detector-{config.name}", "detector": asdict(config)},
    }
    return save_checkpoint(state, path)


@torch.no_grad()
def detect_people(
    model: nn.Module, images: Sequence[Tensor], batch_size: int = 8
) -> list[dict[str, Tensor]]:
    """A detector's people in ``images`` (3, H, W) in [0, 1]: per image ``boxes`` (N, 4)
    x1y1x2y2 pixels and ``scores`` (N,), label 1 only, best first (the model in eval mode)."""
    model.eval()
    device = next(model.parameters()).device
    found = []
    for i in range(0, len(images), batch_size):
        for out in model([image.to(device) for image in images[i : i + batch_size]]):
            person = out["labels"] == 1
            order = out["scores"][person].argsort(descending=True)
            found.append(
                {
                    "boxes": out["boxes"][person][order].cpu(),
                    "scores": out["scores"][person][order].cpu(),
                }
            )
    return found


def evaluate_detector(
    model: nn.Module, dataset: Any, annotation_file: str | Path, batch_size: int = 8
) -> COCOBoxResult:
    """COCO box AP of a detector on a multi-person dataset.

    Arguments:
        model: a detector (its person class 1).
        dataset: a :class:`posereg.data.multiperson.MultiPersonDataset` over
            ``annotation_file`` without augmentation (``dataset[i]`` is ``(image, target)`` with
            ``target["image_id"]``; the images at the json's size).
        annotation_file: the COCO json the dataset was read from: the ground truth.
        batch_size: images per forward pass.

    Returns:
        :func:`posereg.metrics.coco.evaluate_coco_boxes` on every image of the dataset.
    """
    detections: list[dict[str, Any]] = []
    image_ids: list[int] = []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        found = detect_people(model, [image for image, _ in items], batch_size)
        for (_, target), people in zip(items, found, strict=True):
            image_id = int(target["image_id"])
            image_ids.append(image_id)
            xyxy = people["boxes"].double()
            for (x1, y1, x2, y2), score in zip(
                xyxy.tolist(), people["scores"].tolist(), strict=True
            ):
                detections.append(
                    {"image_id": image_id, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
                )
    return evaluate_coco_boxes(annotation_file, detections, image_ids=image_ids)
