"""The lifting family: a 2D pose (pixels) is lifted to root-relative 3D joints (mm).

Its inference takes 2D keypoints, not images: :class:`posereg.lift.Lifter` (``posereg lift``),
so it is a :class:`posereg.family.Family` but not an ``ImageFamily``. Every method delegates:
:mod:`posereg.models.build` (model, checkpoint) and, imported where used, :mod:`posereg.engine.lift`
(pairs, loss, loop, evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from posereg.config import ConfigError, LiftConfig, load_lift_config
from posereg.family import Split, Task
from posereg.models.build import build_lift_model, lifter_from_checkpoint
from posereg.models.lifter import FCLifter

if TYPE_CHECKING:
    from posereg.data.lift import LiftSet

__all__ = ["LiftFamily"]


class LiftFamily:
    """2D-to-3D lifting: :class:`posereg.models.lifter.FCLifter`, ``task: lift`` configs
    (:class:`posereg.config.LiftConfig`)."""

    name: Task = "lift"
    title = "lifting"
    maps = "2D keypoints -> 3D joints"
    command = "lift"

    def load_config(self, path: str | Path, overrides: Sequence[str] = ()) -> LiftConfig:
        return load_lift_config(path, list(overrides))

    def build_model(self, cfg: LiftConfig) -> FCLifter:
        return build_lift_model(cfg)

    def build_data(self, cfg: LiftConfig, split: Split) -> LiftSet:
        """The 2D-3D pairs of ``split``."""
        from posereg.engine.lift import build_lift_data

        train, val = build_lift_data(cfg, train=split == "train")
        return train if split == "train" else val  # type: ignore[return-value]

    def train_step_loss(self, model: FCLifter, batch: tuple[Tensor, Tensor]) -> Tensor:
        """The lifter's loss on ``(keypoints_2d (B, K_in, 2) px, joints_3d (B, 17, 3) mm)``."""
        from posereg.engine.lift import lift_loss

        return lift_loss(model, *batch)

    def evaluate(self, model: FCLifter, cfg: LiftConfig) -> dict[str, float]:
        from posereg.engine.lift import evaluate_lifter

        return evaluate_lifter(model, self.build_data(cfg, "val")).summary()

    def model_from_checkpoint(
        self, path: str | Path
    ) -> tuple[FCLifter, LiftConfig, dict[str, Any]]:
        return lifter_from_checkpoint(path)

    def train(self, cfg: LiftConfig, *, device: str | None, exist_ok: bool) -> str:
        from posereg.engine.lift import train_lift

        try:
            result = train_lift(cfg, device=device, exist_ok=exist_ok)
        except KeyboardInterrupt as e:  # not "before the first step": it may be later
            raise KeyboardInterrupt("interrupted") from e
        m = result.metrics
        return (
            f"run: {result.run_dir}\nval MPJPE {m.mpjpe:.1f} mm, PA-MPJPE {m.pa_mpjpe:.1f} mm, "
            f"N-MPJPE {m.n_mpjpe:.1f} mm, PCK@150 {m.pck:.3f}, AUC {m.auc:.3f} "
            f"(best MPJPE {result.best_mpjpe:.1f} mm; training {result.train_seconds:.0f} s)"
        )

    def resume(self, run_dir: str | Path, *, device: str | None, overrides: Sequence[str]) -> str:
        raise ConfigError(
            f"{run_dir} is a lifting run; lifting runs are not resumable (they take "
            "minutes): train its config again"
        )

    def run_evaluation(
        self, cfg: LiftConfig, checkpoint: str | Path, *, device: str | None, out: str | None
    ) -> str:
        from posereg.engine.lift import run_lift_evaluation

        metrics = run_lift_evaluation(cfg, checkpoint, device, out)
        lines = [
            f"{k}: {v:.4f}" if k in ("PCK3D_150", "AUC3D") else f"{k}: {v:.2f}"
            for k, v in metrics.summary().items()
        ]
        lines += [
            f"  {action}: MPJPE {e1:.2f}, PA-MPJPE {e2:.2f}"
            for action, (e1, e2) in metrics.per_action.items()
        ]
        return "\n".join(lines)
