"""Checkpoints: written atomically, loaded with ``weights_only=True`` so a file cannot run code.

A checkpoint is a dict of tensors and plain Python values:
``{"format", "model", "optimizer", "scheduler", "scaler", "rng", "epoch", "step",
"step_in_epoch", "best", "metrics", "config"}``. ``model`` is the TopDownModel state_dict
(the flow under ``head.criterion.flow.*``; older checkpoints' ``criterion.flow.*`` keys are
renamed when loaded); ``config`` is the resolved run config as a dict.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from posereg.errors import CheckpointError
from posereg.family import family_for, task_of_checkpoint
from posereg.models.pose import upgrade_state_dict
from posereg.outputs import new_file_mode
from posereg.torchfile import CHECKPOINT_WHAT, TorchFileError, check_finite, read_torch_file

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
    "load_model_state",
    "config_mismatch",
    "describe_mismatch",
    "describe_checkpoint",
]

CHECKPOINT_FORMAT = "posereg-checkpoint-v1"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then rename.

    A run killed while saving leaves the previous checkpoint intact (and a ``.NAME.XXXX.tmp``
    file, which :func:`posereg.engine.rundir.clean_partial_writes` removes on the next start).

    Raises:
        OSError: the write failed (no space left on device, file too large, ...); the message
            names the file and says that the previous checkpoint is unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": CHECKPOINT_FORMAT, **state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, new_file_mode())  # mkstemp makes 0600; the run's other files follow the umask
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        # torch.save wraps the file's OSError in "[enforce fail at inline_container.cc] ...";
        # the OSError with its errno is the exception's context
        cause = e if isinstance(e, OSError) else e.__context__
        if isinstance(e, OSError | RuntimeError) and isinstance(cause, OSError) and cause.errno:
            kept = "is unchanged" if path.exists() else "was not written"
            raise OSError(
                cause.errno,
                f"{os.strerror(cause.errno).lower()} while writing {path} ({path.name} {kept})",
            ) from e
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a posereg checkpoint with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: missing file, not a torch file (the message says what it is: empty,
            text, an image, a plain pickle, damaged, ...), not a posereg checkpoint, or model
            weights that are not finite (NaN or inf; the message names the first such tensor).
    """
    path = Path(path)
    if not path.is_file() and not path.is_dir():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = read_torch_file(path, CHECKPOINT_WHAT, map_location=map_location)
    except TorchFileError as e:
        raise CheckpointError(str(e)) from None
    if (
        not isinstance(state, dict)
        or state.get("format") != CHECKPOINT_FORMAT
        or "model" not in state
    ):
        raise CheckpointError(
            f"{path}: not a posereg checkpoint (expected a dict with format={CHECKPOINT_FORMAT!r}); "
            "official RLE checkpoints are imported with `posereg convert --from official`"
        )
    try:
        check_finite(state["model"], str(path))
    except TorchFileError as e:
        raise CheckpointError(str(e)) from None
    return state


def load_model_state(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load a state_dict strictly, with a message naming what differs.

    Raises:
        CheckpointError: missing or unexpected keys, or tensors of other shapes (a checkpoint of
            another backbone, keypoint count or loss).
    """
    state_dict = upgrade_state_dict(state_dict)  # key names of older checkpoints
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:3])})")
        raise CheckpointError(
            f"{source} was saved from another model/config: {'; '.join(parts)}. "
            "Use the config the checkpoint was trained with (`posereg info CK` prints it)."
        )
    model.load_state_dict(state_dict)


def _dotted(config: dict[str, Any], key: str) -> Any:
    """``config["a"]["b"]`` for ``key`` ``"a.b"``; None where a level is missing."""
    value: Any = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def config_mismatch(
    saved: dict[str, Any], given: dict[str, Any], keys: Iterable[str]
) -> dict[str, tuple[Any, Any]]:
    """The ``keys`` (dotted, e.g. ``model.hidden``) whose values differ between two configs.

    Arguments:
        saved: the checkpoint's config, as a plain dict (``to_dict``).
        given: the config the user gave, as a plain dict.
        keys: the settings that define the model; the others (paths, batch size) are not compared.

    Returns:
        ``{key: (checkpoint value, given value)}`` for each differing key, in the order of
        ``keys``; empty when they all agree. :func:`describe_mismatch` makes it one line.
    """
    pairs = {key: (_dotted(saved, key), _dotted(given, key)) for key in keys}
    return {key: (a, b) for key, (a, b) in pairs.items() if a != b}


def describe_mismatch(differ: dict[str, tuple[Any, Any]]) -> str:
    """``"model.hidden: checkpoint 64, given 1024; ..."`` for a :func:`config_mismatch` result."""
    return "; ".join(f"{k}: checkpoint {a!r}, given {b!r}" for k, (a, b) in differ.items())


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors and plain values (weights_only-safe)."""
    np_state = np.random.get_state()  # noqa: NPY002  (the legacy global state other code may use)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            "MT19937",
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def describe_checkpoint(path: str | Path) -> str:
    """A human-readable summary of a checkpoint: run, progress, metrics, model and its size."""
    import yaml

    state = load_checkpoint(path)
    model = state["model"]
    n_total = sum(t.numel() for t in model.values() if t.is_floating_point())
    n_flow = sum(
        t.numel() for k, t in model.items() if "criterion" in k.split(".") and t.is_floating_point()
    )
    cfg = state.get("config", {})
    family = family_for(task_of_checkpoint(state, path))
    lines = [
        f"checkpoint: {path}",
        f"run: {cfg.get('name', '?')}  epoch {state.get('epoch')}  step {state.get('step')}",
        f"family: {family.title} ({family.maps}; `posereg {family.command}`)",
        f"parameters: {n_total:,} ({n_total - n_flow:,} used at inference; {n_flow:,} in the training-only flow)",
    ]
    if state.get("converted_from"):
        lines.append(f"converted from: {state['converted_from']}")
    metrics = state.get("metrics") or {}
    if metrics:
        lines.append(
            "metrics: "
            + ", ".join(
                f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
            )
        )
    calibration = state.get("sigma_calibration")
    if isinstance(calibration, dict) and calibration.get("scale"):
        scale = np.asarray(calibration["scale"], dtype=np.float64)
        lines.append(
            f"sigma_calibration: c from {scale.min():.4g} to {scale.max():.4g} ({scale.shape[0]} "
            f"keypoints x {scale.shape[1]} axes; {calibration.get('estimator')} on the "
            f"{calibration.get('data')} set; sigma_calibrated = c x sigma)"
        )
    lines.append("model config:")
    lines.append(
        yaml.safe_dump(
            {
                "model": cfg.get("model", {}),
                "data": {
                    k: v
                    for k, v in cfg.get("data", {}).items()
                    if k in ("skeleton", "input_skeleton", "input_size")
                },
            },
            sort_keys=False,
        ).rstrip()
    )
    return "\n".join(lines)
