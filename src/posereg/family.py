"""Model families: the one seam between the commands and a kind of pose model (docs/families.md).

A *family* is a kind of model with its own config, data, training loss, inference and
evaluation: top-down (person crops to 2D keypoints, :mod:`posereg.families.topdown`) and 2D-to-3D
lifting (:mod:`posereg.families.lift`). A config's ``task`` key names its family, and the run's
checkpoints carry the same ``task`` (a top-down config and checkpoint have none, as every run
before families had). The commands (:mod:`posereg.cli`) ask :func:`family_of_config` (or
:func:`family_of_checkpoint`) and call the :class:`Family` protocol; they never test a task.

This module is light (no torch): the families are imported when :func:`family_for` makes one,
and they import :mod:`posereg.engine` only inside their training and evaluation methods, so
inference (predict, export, serve, video, lift) stays free of the engine (tests/test_layering.py).

Adding a family: a module ``posereg/families/NAME.py`` with a class that implements
:class:`Family` (and :class:`ImageFamily` when its inference takes images), its name in
:data:`Task` and one ``case`` in :func:`family_for`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args, runtime_checkable

from posereg.config import ConfigError, read_task
from posereg.errors import CheckpointError

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor, nn

    from posereg.result import PoseResult

__all__ = [
    "Task",
    "TASKS",
    "Split",
    "Family",
    "ImageFamily",
    "family_for",
    "family_of_config",
    "family_of_checkpoint",
    "check_family",
    "detector_free_family",
    "task_of_checkpoint",
]

#: The families, by the ``task`` their configs and checkpoints carry.
Task = Literal["topdown", "lift", "keypoint_rcnn", "dense"]
TASKS: tuple[Task, ...] = get_args(Task)
#: The task of a config or checkpoint without a ``task`` key (every top-down run).
DEFAULT_TASK: Task = "topdown"
Split = Literal["train", "val"]


@runtime_checkable
class Family(Protocol):
    """What the commands need of a kind of model; ``cfg`` is the family's config dataclass.

    Attributes:
        name: the ``task`` of its configs and checkpoints.
        title: its name in messages (``"top-down"``, ``"lifting"``).
        maps: what its model maps, for messages (``"person crops -> 2D keypoints"``).
        command: the ``posereg`` command that runs its inference (``"predict"``, ``"lift"``).
    """

    name: Task
    title: str
    maps: str
    command: str

    def load_config(self, path: str | Path, overrides: Sequence[str] = ()) -> Any:
        """The family's config from a YAML file with ``--set`` overrides (ConfigError if bad)."""
        ...

    def build_model(self, cfg: Any) -> nn.Module:
        """The untrained model ``cfg`` describes (with its loss)."""
        ...

    def build_data(self, cfg: Any, split: Split) -> Any:
        """The ``split`` set of ``cfg`` (what :meth:`train_step_loss` and :meth:`evaluate` read)."""
        ...

    def train_step_loss(self, model: nn.Module, batch: Any) -> Tensor:
        """One training step's loss (a scalar to back-propagate) on a batch of the training set."""
        ...

    def evaluate(self, model: nn.Module, cfg: Any) -> dict[str, float]:
        """The model's metrics on ``cfg``'s validation set (the summary ``posereg eval`` reports)."""
        ...

    def model_from_checkpoint(self, path: str | Path) -> tuple[nn.Module, Any, dict[str, Any]]:
        """(model with its weights, its config, the checkpoint dict) of one of its checkpoints.

        Raises:
            CheckpointError: a checkpoint of another family (:func:`check_family`) or model.
        """
        ...

    def train(self, cfg: Any, *, device: str | None, exist_ok: bool) -> str:
        """``posereg train CONFIG``: train a run into ``out_dir/name``; the summary to print."""
        ...

    def resume(self, run_dir: str | Path, *, device: str | None, overrides: Sequence[str]) -> str:
        """``posereg train --resume RUN_DIR``: continue the run; the summary to print.

        Raises:
            ConfigError: the family's runs are not resumable (saying what to do instead).
        """
        ...

    def run_evaluation(
        self, cfg: Any, checkpoint: str | Path, *, device: str | None, out: str | None
    ) -> str:
        """``posereg eval CONFIG --checkpoint CK``: the lines to print (``out``: predictions)."""
        ...


@runtime_checkable
class ImageFamily(Family, Protocol):
    """A family whose inference takes images: ``posereg predict``, ``serve`` and ``video``
    (``isinstance(family, ImageFamily)`` tells)."""

    def predict(
        self,
        model: nn.Module,
        cfg: Any,
        images: Sequence[np.ndarray],
        boxes: Sequence[np.ndarray | None] | None = None,
    ) -> list[PoseResult]:
        """The people in each image, in its pixels (:class:`posereg.result.PoseResult`).

        Arguments:
            images: (H, W, 3) uint8 BGR arrays.
            boxes: per image, (N, 4) person boxes (x, y, w, h) for families that take them
                (None: the whole image is one person); detector-free families find the people.
        """
        ...


def family_for(task: Task) -> Family:
    """The family of ``task``.

    Raises:
        ValueError: an unknown task (listing the known ones).
    """
    match task:
        case "topdown":
            from posereg.families.topdown import TopDownFamily

            return TopDownFamily()
        case "lift":
            from posereg.families.lift import LiftFamily

            return LiftFamily()
        case "keypoint_rcnn":
            from posereg.families.keypoint_rcnn import KeypointRCNNFamily

            return KeypointRCNNFamily()
        case "dense":
            from posereg.families.dense import DenseFamily

            return DenseFamily()
    raise ValueError(f"task {task!r}: expected one of {', '.join(TASKS)}")


def family_of_config(path: str | Path) -> Family:
    """The family of a YAML config by its ``task`` key (none: top-down).

    A file that cannot be read is top-down here: its loader then names the problem.

    Raises:
        ConfigError: a ``task`` that names no family (the file and the valid tasks named).
    """
    task = read_task(path)
    if task is None:
        return family_for(DEFAULT_TASK)
    if task == DEFAULT_TASK or task not in TASKS:  # a top-down config has no task key
        others = [t for t in TASKS if t != DEFAULT_TASK]
        raise ConfigError(
            f"{path}: task: {task!r}: expected {' or '.join(others)}, or no task key for a "
            "top-down run"
        )
    return family_for(task)


def task_of_checkpoint(state: dict[str, Any], path: str | Path) -> Task:
    """The ``task`` of a checkpoint dict read from ``path`` (none: top-down).

    Raises:
        CheckpointError: a task this posereg does not know.
    """
    task = state.get("task", DEFAULT_TASK)
    if task not in TASKS:
        raise CheckpointError(
            f"{path}: a checkpoint of task {task!r}, which this posereg does not know "
            f"(it knows {', '.join(TASKS)})"
        )
    return task


def family_of_checkpoint(path: str | Path) -> Family:
    """The family of a posereg checkpoint by its ``task`` (none: top-down).

    An ONNX export (``.onnx``) by the ``family`` of its metadata (``top_down``, or the task of
    a multi-person family, :mod:`posereg.export_multiperson`).

    Raises:
        CheckpointError: not a posereg checkpoint or export, or one of a task (family) this
            posereg does not know.
    """
    from posereg.runtime import is_onnx

    if is_onnx(path):
        from posereg.runtime import FAMILY_KEY, TOP_DOWN, open_export

        family = open_export(path)[1].get(FAMILY_KEY, TOP_DOWN)
        if family == TOP_DOWN:
            return family_for(DEFAULT_TASK)
        if family not in TASKS:
            raise CheckpointError(
                f"{path}: an export of family {family!r}, which this posereg does not know "
                f"(it knows {', '.join(TASKS)})"
            )
        return family_for(family)
    from posereg.checkpoint import load_checkpoint

    return family_for(task_of_checkpoint(load_checkpoint(path), path))


def detector_free_family(path: str | Path) -> ImageFamily | None:
    """The family of the checkpoint or export ``path`` when its model finds the people of a
    whole image itself (``finds_people``: no boxes, no detector), else None (top-down, lifting,
    or a file that the top-down loader then names the problem of)."""
    try:
        family = family_of_checkpoint(path)
    except CheckpointError:
        return None
    return family if getattr(family, "finds_people", False) else None  # type: ignore[return-value]


def check_family(state: dict[str, Any], path: str | Path, wanted: Task) -> None:
    """Check that the checkpoint dict ``state`` read from ``path`` is of the family ``wanted``.

    Raises:
        CheckpointError: one line naming the file, the family it holds (and the command that
            takes it) and the family that was needed.
    """
    found = task_of_checkpoint(state, path)
    if found == wanted:
        return
    have, need = family_for(found), family_for(wanted)
    raise CheckpointError(
        f"{path}: not a {need.title} checkpoint (it holds a {have.title} model: {have.maps}, "
        f"for `posereg {have.command}`); give a checkpoint of a {need.title} run ({need.maps})"
    )
