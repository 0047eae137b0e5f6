"""The top-down family: a person box is cropped, the model regresses its 2D keypoints (and sigma).

Every method delegates to the code that does the work: :mod:`posereg.models.build` (model,
checkpoint), :class:`posereg.predict.Predictor` (inference), and, imported where they are used so
that inference never imports it, :mod:`posereg.engine` (data, training loss, loop, evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from posereg.config import Config, load_config
from posereg.family import Split, Task
from posereg.models.build import build_model, model_from_checkpoint
from posereg.result import PoseResult
from posereg.runtime import is_onnx, load_onnx_model

if TYPE_CHECKING:
    from posereg.data.dataset import Batch, TopDownDataset

__all__ = ["TopDownFamily"]


def _device_of(model: nn.Module) -> torch.device:
    """Where the model's weights are (CPU for a model without any, an ONNX export's)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


class TopDownFamily:
    """Top-down 2D (and single-stage 3D) pose: :class:`posereg.models.TopDownModel`, configs
    without ``task`` (:class:`posereg.config.Config`)."""

    name: Task = "topdown"
    title = "top-down"
    maps = "person crops -> 2D keypoints"
    command = "predict"

    def load_config(self, path: str | Path, overrides: Sequence[str] = ()) -> Config:
        return load_config(path, list(overrides))

    def build_model(self, cfg: Config) -> nn.Module:
        return build_model(cfg)

    def build_data(self, cfg: Config, split: Split) -> TopDownDataset:
        """The crops of ``split`` (training makes a missing synthetic set; evaluation never)."""
        from posereg.engine.builders import build_datasets

        train, val = build_datasets(cfg, train_split=split == "train")
        return train if split == "train" else val  # type: ignore[return-value]

    def train_step_loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """The head's loss on a collated :class:`posereg.data.dataset.Batch` of crops."""
        from posereg.engine.train import step_loss

        dev = _device_of(model)
        loss, _ = step_loss(
            model, batch.image.to(dev), batch.target.to(dev), batch.target_weight.to(dev)
        )
        return loss

    def evaluate(self, model: nn.Module, cfg: Config) -> dict[str, float]:
        from posereg.engine.evaluate import evaluate

        result = evaluate(model, self.build_data(cfg, "val"), cfg, _device_of(model))
        return result.summary()

    def predict(
        self,
        model: nn.Module,
        cfg: Config,
        images: Sequence[np.ndarray],
        boxes: Sequence[np.ndarray | None] | None = None,
    ) -> list[PoseResult]:
        """Each image's people in its boxes (default: the whole image is one person), through
        :class:`posereg.predict.Predictor` (crop, flip test, decoding to image pixels)."""
        from posereg.predict import Predictor

        predictor = Predictor.from_config(model, cfg, _device_of(model))
        per_image = [None] * len(images) if boxes is None else boxes
        return [predictor(image, b) for image, b in zip(images, per_image, strict=True)]

    def model_from_checkpoint(self, path: str | Path) -> tuple[nn.Module, Config, dict[str, Any]]:
        """A posereg checkpoint, or its ONNX export run by ONNX Runtime (:mod:`posereg.runtime`)."""
        if is_onnx(path):
            return load_onnx_model(path)
        return model_from_checkpoint(path)

    def train(self, cfg: Config, *, device: str | None, exist_ok: bool) -> str:
        from posereg.engine.report import format_summary
        from posereg.engine.train import train

        return format_summary(train(cfg, device=device, exist_ok=exist_ok))

    def resume(self, run_dir: str | Path, *, device: str | None, overrides: Sequence[str]) -> str:
        from posereg.engine.report import format_summary
        from posereg.engine.train import train

        return format_summary(train(None, resume=run_dir, device=device, overrides=overrides))

    def run_evaluation(
        self, cfg: Config, checkpoint: str | Path, *, device: str | None, out: str | None
    ) -> str:
        from posereg.engine.evaluate import run_evaluation

        result = run_evaluation(cfg, str(checkpoint), device=device, out=out)
        lines = [
            f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}"
            for k, v in result.summary().items()
        ]
        b = result.benchmark
        lines.append(f"primary ({b.name} benchmark): {b.primary.name} {result.primary:.4f}")
        return "\n".join(lines)
