"""What the multi-person families share: their config sections and a base family class.

A multi-person family (Keypoint R-CNN, the dense one-stage model) finds the people of a whole
image itself: no detector, no boxes. Its config is :class:`MultiPersonRunConfig`'s sections with
the family's own ``model`` section; its data the image-level :mod:`posereg.data.multiperson`
sets; its loop and evaluation :mod:`posereg.engine.multiperson` (imported lazily, so that
inference stays free of the engine, tests/test_layering.py). A family subclasses
:class:`MultiPersonFamily` and gives four hooks: :meth:`~MultiPersonFamily.build_model`,
:meth:`~MultiPersonFamily.loss_terms`, :meth:`~MultiPersonFamily.infer` and
:meth:`~MultiPersonFamily.export_onnx` (docs/multiperson.md, "Train, evaluate, predict, export").
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from posereg.config import (
    AT_LEAST_1,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    ConfigError,
    MultiPersonDataConfig,
    Range,
    SynthDataConfig,
    from_saved,
    load_yaml,
    to_dict,
)
from posereg.errors import CheckpointError
from posereg.family import Split, Task, check_family
from posereg.result import PoseResult

__all__ = [
    "MultiPersonRunData",
    "PeopleOptimConfig",
    "PeopleTrainConfig",
    "PeopleEvalConfig",
    "MultiPersonFamily",
    "images_to_tensors",
]


@dataclasses.dataclass
class MultiPersonRunData(MultiPersonDataConfig):
    """:class:`posereg.config.MultiPersonDataConfig` plus ``synth``: the synthetic set to make
    when it is missing (``posereg.engine.synthdata``, as top-down runs do; preset ``multi``)."""

    synth: SynthDataConfig | None = None


@dataclasses.dataclass
class PeopleOptimConfig:
    """The optimiser and the per-step learning-rate schedule (linear warm-up from 0).

    ``milestones`` (``schedule: multistep``) count in the run's length unit: epochs with
    ``train.epochs``, steps with ``train.steps``; the rate is multiplied by ``gamma`` at each.
    """

    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 2e-3
    momentum: float = 0.9  # sgd only
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    schedule: str = "cosine"  # cosine (to 0) | multistep | constant
    milestones: list[int] = dataclasses.field(default_factory=list)
    gamma: float = 0.1
    grad_clip: float | None = 10.0  # max global gradient norm

    ranges: ClassVar[dict[str, Range]] = {
        "lr": NON_NEGATIVE, "momentum": FRACTION, "weight_decay": NON_NEGATIVE,
        "warmup_steps": NON_NEGATIVE, "milestones": NON_NEGATIVE, "gamma": POSITIVE,
        "grad_clip": POSITIVE,
    }  # fmt: skip

    def __post_init__(self) -> None:
        if self.optimizer not in ("adamw", "sgd"):
            raise ConfigError(f"optim.optimizer: {self.optimizer!r}: expected adamw or sgd")
        if self.schedule not in ("cosine", "multistep", "constant"):
            raise ConfigError(
                f"optim.schedule: {self.schedule!r}: expected cosine, multistep or constant"
            )


@dataclasses.dataclass
class PeopleTrainConfig:
    """The loop's length (``steps`` or ``epochs``, one of them), batch and bookkeeping."""

    steps: int | None = 200
    epochs: int | None = None
    batch_size: int = 4
    seed: int = 0
    threads: int | None = None  # torch CPU threads (None: PyTorch's default)
    log_every: int = 20  # steps
    eval_every: int = 0  # steps between evaluations (0: at the end only)

    ranges: ClassVar[dict[str, Range]] = {
        "steps": AT_LEAST_1, "epochs": AT_LEAST_1, "batch_size": AT_LEAST_1,
        "threads": AT_LEAST_1, "log_every": AT_LEAST_1, "eval_every": NON_NEGATIVE,
    }  # fmt: skip

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.epochs is None):
            raise ConfigError(
                f"train.steps ({self.steps}) and train.epochs ({self.epochs}): give exactly one "
                "(set the other to null, e.g. --set train.epochs=null train.steps=100)"
            )


@dataclasses.dataclass
class PeopleEvalConfig:
    """Evaluation: COCO keypoint AP on whole images (no ground-truth boxes).

    Arguments:
        score_threshold: people scored below this are not predicted (the detector's box score).
        use_clean: also report the AP against ``keypoints_clean`` where every annotation has it
            (the synthetic sets' noise-free truth); it then picks ``best.pt``.
        batch_size: images per forward pass.
    """

    score_threshold: float = 0.05
    use_clean: bool = True
    batch_size: int = 4

    ranges: ClassVar[dict[str, Range]] = {"score_threshold": FRACTION, "batch_size": AT_LEAST_1}


def images_to_tensors(images: Sequence[np.ndarray]) -> list[Tensor]:
    """(H, W, 3) uint8 BGR arrays -> (3, H, W) float32 RGB tensors in [0, 1]."""
    out = []
    for image in images:
        pixels = np.asarray(image)
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise ValueError(
                f"image must be an (H, W, 3) uint8 BGR array, got {pixels.shape} {pixels.dtype}"
            )
        rgb = np.ascontiguousarray(pixels[..., ::-1].transpose(2, 0, 1))
        out.append(torch.from_numpy(rgb).float().div_(255.0))
    return out


def _device_of(model: Any) -> torch.device:
    params = getattr(model, "parameters", None)
    return (
        next((p.device for p in params()), torch.device("cpu")) if params else torch.device("cpu")
    )


class MultiPersonFamily:
    """The :class:`posereg.family.ImageFamily` members every multi-person family shares.

    A subclass sets ``name``, ``title``, ``maps``, ``config_class`` (a dataclass with ``task``,
    ``name``, ``out_dir``, ``data`` (:class:`MultiPersonRunData`), its ``model`` section,
    ``optim``, ``train``, ``eval``) and implements the hooks :meth:`build_model`,
    :meth:`loss_terms`, :meth:`infer` and :meth:`export_onnx`.
    """

    name: Task
    title: str
    maps: str
    command = "predict"
    config_class: type
    #: it finds the people itself: ``posereg predict`` takes neither ``--boxes`` nor ``--detector``
    finds_people = True

    # ------------------------------------------------------------------ hooks
    def build_model(self, cfg: Any) -> nn.Module:
        """The untrained model (train mode) with its loss."""
        raise NotImplementedError

    def loss_terms(
        self, model: nn.Module, images: list[Tensor], targets: list[dict[str, Any]]
    ) -> dict[str, Tensor]:
        """The training loss terms of a batch (their sum is the loss)."""
        raise NotImplementedError

    def infer(self, model: nn.Module, cfg: Any, images: list[Tensor]) -> list[PoseResult]:
        """The people of each image (3, H, W) in [0, 1] (model in eval mode), its pixels."""
        raise NotImplementedError

    def export_onnx(self, model: nn.Module, cfg: Any, path: Path, opset: int) -> Path:
        """Write the ONNX export (:func:`posereg.export_multiperson.export_people`)."""
        raise NotImplementedError

    def people_module(self, model: nn.Module, cfg: Any) -> nn.Module:
        """The exported module (one image in, the people's tensors out; the config's decoding
        settings), for the parity check."""
        raise NotImplementedError

    def criterion(self, model: Any) -> nn.Module | None:
        """The model's trained keypoint loss, whose density gives the predictive regions
        (:func:`posereg.uncertainty.region_from_criterion`); None: no regions (the default, and
        for an ONNX export, which does not carry the flow)."""
        return None

    # ------------------------------------------------------------------ shared
    def load_config(self, path: str | Path, overrides: Sequence[str] = ()) -> Any:
        return load_yaml(self.config_class, path, list(overrides))

    def build_data(self, cfg: Any, split: Split) -> Any:
        """The :class:`posereg.data.multiperson.MultiPersonDataset` of ``split``."""
        from posereg.engine.multiperson import build_people_data

        return build_people_data(cfg, split)

    def train_step_loss(self, model: nn.Module, batch: Any) -> Tensor:
        """The summed loss terms on a ``(list of images, list of targets)`` batch."""
        images, targets = batch
        dev = _device_of(model)
        images = [image.to(dev) for image in images]
        targets = [
            {k: v.to(dev) if isinstance(v, Tensor) else v for k, v in t.items()} for t in targets
        ]
        return sum(self.loss_terms(model, images, targets).values())  # type: ignore[return-value]

    def evaluate(self, model: nn.Module, cfg: Any) -> dict[str, float]:
        from posereg.engine.multiperson import evaluate_people

        return evaluate_people(self, model, cfg)

    def predict(
        self,
        model: nn.Module,
        cfg: Any,
        images: Sequence[np.ndarray],
        boxes: Sequence[np.ndarray | None] | None = None,
    ) -> list[PoseResult]:
        """The people of each (H, W, 3) uint8 BGR image, found by the model (no boxes).

        Raises:
            ValueError: boxes were given (this family finds the people itself).
        """
        if boxes is not None and any(b is not None for b in boxes):
            raise ValueError(self.no_boxes_message())
        return self.infer(model, cfg, [t.to(_device_of(model)) for t in images_to_tensors(images)])

    def no_boxes_message(self, given: str = "boxes") -> str:
        """The one message for boxes given to this family (``given``: what was given, e.g.
        ``--boxes``, ``--detector``)."""
        return (
            f"a {self.title} model finds the people itself ({self.maps}); predict without {given}"
        )

    def model_from_checkpoint(self, path: str | Path) -> tuple[Any, Any, dict[str, Any]]:
        """A checkpoint of this family (model in eval mode), or its ONNX export
        (:class:`posereg.export_multiperson.OnnxPeopleModel`; the export's saved config)."""
        from posereg.runtime import is_onnx

        if is_onnx(path):
            from posereg.export_multiperson import load_people_onnx
            from posereg.runtime import FAMILY_KEY

            onnx_model = load_people_onnx(path)
            if onnx_model.family != self.name:
                raise CheckpointError(
                    f"{path}: an export of family {onnx_model.metadata[FAMILY_KEY]}, not "
                    f"{self.name}"
                )
            try:
                cfg = from_saved(self.config_class, json.loads(onnx_model.metadata["config"]))
            except (KeyError, ValueError) as e:
                raise CheckpointError(f"{path}: its saved config does not load: {e}") from None
            return onnx_model, cfg, {"task": self.name}
        from posereg.checkpoint import load_checkpoint, load_model_state

        state = load_checkpoint(path)
        check_family(state, path, self.name)
        try:
            cfg = from_saved(self.config_class, state.get("config") or {})
        except ConfigError as e:
            raise CheckpointError(f"{path}: its saved config does not load: {e}") from None
        model = self.build_model(cfg)
        load_model_state(model, state["model"], str(path))
        return model.eval(), cfg, state

    def save_state(self, model: nn.Module, cfg: Any, **extra: Any) -> dict[str, Any]:
        """The checkpoint dict (:func:`posereg.checkpoint.save_checkpoint` adds the format)."""
        return {
            "task": self.name,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "config": to_dict(cfg),
            **extra,
        }

    def train(self, cfg: Any, *, device: str | None, exist_ok: bool) -> str:
        from posereg.engine.multiperson import train_people

        return train_people(self, cfg, device=device, exist_ok=exist_ok)

    def resume(self, run_dir: str | Path, *, device: str | None, overrides: Sequence[str]) -> str:
        raise ConfigError(
            f"{run_dir} is a {self.title} run; {self.title} runs are not resumable yet: train "
            "its config again (--exist-ok reuses the folder)"
        )

    def run_evaluation(
        self, cfg: Any, checkpoint: str | Path, *, device: str | None, out: str | None
    ) -> str:
        from posereg.engine.multiperson import run_people_evaluation

        return run_people_evaluation(self, cfg, checkpoint, device=device, out=out)
