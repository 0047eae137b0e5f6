"""Error classes that the inference commands and the training engine share, in one leaf module.

Nothing here imports posereg (nor torch), so the CLI's error handler and the inference modules
(predict, export, serve, video, lift, convert) can name them without importing the engine.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "RunLockedError", "RunFinished"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used for what was asked (wrong file, other model)."""


class RunLockedError(RuntimeError):
    """Another live process is training in this run folder."""


class RunFinished(Exception):
    """``resume`` of a run that already reached its end; nothing was trained or written."""
