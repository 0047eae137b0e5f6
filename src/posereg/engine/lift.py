"""Training and evaluation of 2D-to-3D lifters (``task: lift`` configs), top to bottom.

A lifting run is small: the pairs fit in memory as two tensors, an epoch is a shuffled pass over
them, and the whole validation set is evaluated after every epoch. The run folder is the 2D
engine's (:func:`posereg.engine.rundir.new_run_dir`: ``config.yaml``, ``log.csv``,
``metrics.json``, ``best.pt`` by the lowest validation MPJPE, ``last.pt``), written with the
same atomic checkpoint writer. Lifting runs are not resumable (they take minutes); rerun them.
"""

from __future__ import annotations

import csv
import json
import math
import shlex
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posereg.checkpoint import (
    CheckpointError,
    config_mismatch,
    describe_mismatch,
    save_checkpoint,
)
from posereg.config import (
    ConfigError,
    LiftConfig,
    save_yaml,
    to_dict,
    validate,
)
from posereg.data.lift import LiftSet, h36m_body3d_pairs, h36m_videopose3d_pairs, synthetic_pairs
from posereg.engine.rundir import clean_partial_writes, new_run_dir
from posereg.metrics.mpjpe import Pose3DMetrics, evaluate_3d
from posereg.models.build import LIFTER_KEYS, build_lift_model, lifter_from_checkpoint
from posereg.models.lifter import FCLifter, predict_lifter
from posereg.uncertainty import SigmaCalibration

__all__ = [
    "LiftTrainResult",
    "build_lift_data",
    "fit_lifter",
    "evaluate_lifter",
    "train_lift",
    "run_lift_evaluation",
    "fit_lift_calibration",
    "lift_loss",
]


@dataclass
class LiftTrainResult:
    """What a lifting run produced.

    Attributes:
        run_dir: the run folder (None when trained in memory by :func:`fit_lifter`).
        metrics: validation metrics of the final model.
        best_mpjpe: the lowest validation MPJPE over the epochs (``best.pt``).
        train_seconds: wall time of the optimisation (without data preparation).
        history: per-epoch dicts (epoch, loss, MPJPE, PA-MPJPE).
    """

    run_dir: Path | None
    metrics: Pose3DMetrics
    best_mpjpe: float
    train_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def build_lift_data(cfg: LiftConfig, train: bool = True) -> tuple[LiftSet | None, LiftSet]:
    """(train, val) pairs for the config; ``train=False`` builds only the validation set."""
    d = cfg.data
    if d.source == "synth":
        kw = {"noise": d.noise, "input_skeleton": d.input_skeleton, "camera_file": d.camera_file,
              "prior": d.prior}  # fmt: skip
        val = synthetic_pairs(d.num_val, d.seed, "val", **kw)
        return (synthetic_pairs(d.num_train, d.seed, "train", **kw) if train else None), val
    if d.prior != "classes":
        raise ConfigError(
            f"data.prior: {d.source} data has its own poses; {d.prior!r} is for synth"
        )
    if d.input_skeleton != "h36m17":
        raise ConfigError(f"data.input_skeleton: {d.source} data is h36m17, not {d.input_skeleton}")
    if d.source == "h36m":
        if d.positions_3d is None:
            raise ConfigError("data.positions_3d: set the path of data_3d_h36m.npz")
        kw2 = {"positions_2d": d.positions_2d, "camera_file": d.camera_file, "stride": d.stride}
        val = h36m_videopose3d_pairs(d.positions_3d, subjects=tuple(d.test_subjects), **kw2)
        tr = h36m_videopose3d_pairs(d.positions_3d, subjects=tuple(d.train_subjects), **kw2)
        return (tr if train else None), val
    if d.val_file is None or (train and d.train_file is None):
        raise ConfigError("data.train_file / data.val_file: set the *_body3d.npz paths")
    return (h36m_body3d_pairs(d.train_file) if train else None), h36m_body3d_pairs(d.val_file)


def _tensors(pairs: LiftSet, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(pairs.keypoints_2d, dtype=torch.float32, device=device)
    y = torch.as_tensor(pairs.joints_3d, dtype=torch.float32, device=device)
    return x, y


def lift_loss(model: FCLifter, keypoints_2d: torch.Tensor, joints_3d: torch.Tensor) -> torch.Tensor:
    """One training step's loss of a lifter (the family's ``train_step_loss``).

    Arguments:
        keypoints_2d: (B, K_in, 2) pixels; joints_3d: (B, 17, 3) mm, pelvis at 0 (the lifter
            normalises both itself).
    """
    return model.loss(model(keypoints_2d), joints_3d)


def evaluate_lifter(model: FCLifter, pairs: LiftSet) -> Pose3DMetrics:
    """MPJPE, PA-MPJPE, ... of the lifter on ``pairs`` (per action when the pairs have actions)."""
    joints, _ = predict_lifter(model, pairs.keypoints_2d)
    return evaluate_3d(joints, pairs.joints_3d, model.joint_names, pairs.actions)


def fit_lift_calibration(model: FCLifter, pairs: LiftSet) -> SigmaCalibration | None:
    """c (17, 3) of the lifter's calibrated sigma, c x sigma in mm, fitted on ``pairs`` (the
    validation pairs): the Laplace MLE per joint and axis (:func:`posereg.uncertainty.fit_sigma_scale`).

    Per axis because the lifter's errors are not isotropic: depth (z) is what a 2D pose leaves
    ambiguous, and its sigma mostly sits at the sigmoid's cap (a constant per joint and axis), so
    one c per joint would trade the z error against x and y. The pelvis is 0 by definition in
    both prediction and truth, so its c is 0. None for a lifter without sigma (L1, L2).
    """
    if not model.has_sigma:
        return None
    joints, sigma = predict_lifter(model, pairs.keypoints_2d)
    labelled = np.ones(joints.shape[:2], dtype=bool)
    return SigmaCalibration.fit(pairs.joints_3d - joints, sigma, labelled, per_axis=True)


def fit_lifter(
    cfg: LiftConfig,
    train_set: LiftSet,
    val_set: LiftSet,
    device: str | torch.device = "cpu",
    log: Any = None,
    on_epoch: Any = None,
) -> tuple[FCLifter, LiftTrainResult]:
    """Train a lifter in memory: Adam, exponential decay per epoch, gradient clipping.

    Arguments:
        log: called with a dict per ``train.log_every`` steps (epoch, step, loss, lr), or None.
        on_epoch: called as ``on_epoch(epoch, model, metrics)`` after each epoch's evaluation.

    Raises:
        FloatingPointError: a non-finite loss (names the step).
    """
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    dev = torch.device(device)
    model = build_lift_model(cfg).to(dev)
    x, y = _tensors(train_set, dev)
    model.normalizer.fit(x, y)
    opt = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=t.lr_decay)
    gen = torch.Generator().manual_seed(t.seed)
    history: list[dict[str, float]] = []
    best = math.inf
    step, seconds = 0, 0.0
    metrics = None
    for epoch in range(1, t.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(len(x), generator=gen).to(dev)
        total, count = 0.0, 0
        for i in range(0, len(x) - t.batch_size + 1, t.batch_size):  # drop the last (BatchNorm)
            idx = order[i : i + t.batch_size]
            loss = lift_loss(model, x[idx], y[idx])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite lifting loss at step {step + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            opt.step()
            step += 1
            total, count = total + loss.item(), count + 1
            if log is not None and step % t.log_every == 0:
                log(
                    {
                        "epoch": epoch,
                        "step": step,
                        "loss": float(loss),
                        "lr": sched.get_last_lr()[0],
                    }
                )
        sched.step()
        seconds += time.perf_counter() - t0
        metrics = evaluate_lifter(model, val_set)
        best = min(best, metrics.mpjpe)
        history.append(
            {"epoch": epoch, "loss": total / max(count, 1), "MPJPE": metrics.mpjpe,
             "PA-MPJPE": metrics.pa_mpjpe}
        )  # fmt: skip
        if on_epoch is not None:
            on_epoch(epoch, model, metrics)
    assert metrics is not None
    return model, LiftTrainResult(None, metrics, best, seconds, history)


def _checkpoint_state(
    model: FCLifter, cfg: LiftConfig, epoch: int, metrics: Pose3DMetrics, val_set: LiftSet
) -> dict:
    """The checkpoint dict, with the calibration of sigma fitted on ``val_set`` now."""
    fit = fit_lift_calibration(model, val_set)
    return {
        "task": "lift",
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": to_dict(cfg),
        "epoch": epoch,
        "metrics": {"val": metrics.summary()},
        **({} if fit is None else {"sigma_calibration": fit.to_state()}),
    }


def train_lift(
    cfg: LiftConfig, device: str | None = None, exist_ok: bool = False
) -> LiftTrainResult:
    """Train a lifting run into ``out_dir/name`` (see the module docstring)."""
    validate(cfg)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    train_set, val_set = build_lift_data(cfg)
    assert train_set is not None
    build_lift_model(cfg)  # an unknown loss or skeleton fails here, before the run folder is made
    run_dir, lock, note = new_run_dir(cfg.out_dir, cfg.name, exist_ok)
    try:
        if note:
            print(f"posereg: {note}", flush=True)
        clean_partial_writes(run_dir)
        cfg = replace(cfg, name=run_dir.relative_to(cfg.out_dir).as_posix())
        save_yaml(cfg, run_dir / "config.yaml")
        print(
            f"posereg lift: {len(train_set)} train / {len(val_set)} val pairs "
            f"({cfg.data.source}), loss {cfg.model.loss}, {cfg.train.epochs} epochs -> {run_dir}",
            flush=True,
        )
        log_path = run_dir / "log.csv"
        with log_path.open("w", newline="") as f:
            csv.writer(f).writerow(["epoch", "step", "loss", "lr", "MPJPE", "PA-MPJPE"])

        def log(row: dict[str, Any]) -> None:
            with log_path.open("a", newline="") as f:
                csv.writer(f).writerow([row.get(c, "") for c in ("epoch", "step", "loss", "lr")])

        best = [math.inf]

        def on_epoch(epoch: int, model: FCLifter, metrics: Pose3DMetrics) -> None:
            with log_path.open("a", newline="") as f:
                csv.writer(f).writerow([epoch, "", "", "", metrics.mpjpe, metrics.pa_mpjpe])
            print(
                f"epoch {epoch}/{cfg.train.epochs}: val MPJPE {metrics.mpjpe:.1f} mm, "
                f"PA-MPJPE {metrics.pa_mpjpe:.1f} mm",
                flush=True,
            )
            if metrics.mpjpe < best[0]:
                best[0] = metrics.mpjpe
                save_checkpoint(
                    _checkpoint_state(model, cfg, epoch, metrics, val_set), run_dir / "best.pt"
                )

        model, result = fit_lifter(cfg, train_set, val_set, dev, log=log, on_epoch=on_epoch)
        save_checkpoint(
            _checkpoint_state(model, cfg, cfg.train.epochs, result.metrics, val_set),
            run_dir / "last.pt",
        )
        (run_dir / "metrics.json").write_text(
            json.dumps(
                {"val": result.metrics.summary(), "best_MPJPE": result.best_mpjpe,
                 "train_seconds": result.train_seconds, "history": result.history,
                 "per_joint": result.metrics.per_joint,
                 "per_action": {k: list(v) for k, v in result.metrics.per_action.items()}},
                indent=1,
            )
        )  # fmt: skip
        return replace(result, run_dir=run_dir)
    finally:
        lock.release()


def run_lift_evaluation(
    cfg: LiftConfig, checkpoint: str | Path, device: str | None = None, out: str | None = None
) -> Pose3DMetrics:
    """``posereg eval`` of a lifting config: the checkpoint on the config's validation pairs.

    With ``out``, writes ``{"joints_3d": ..., "sigma": ..., "metrics": ...}`` there (mm).

    Raises:
        CheckpointError: ``cfg`` differs from the checkpoint's config in a :data:`LIFTER_KEYS`
            setting (the validation pairs would be made for another lifter); the message lists
            each key with both values and the ``--set`` that evaluates with the checkpoint's.
    """
    model, saved, _ = lifter_from_checkpoint(checkpoint, device or "cpu")
    differ = config_mismatch(to_dict(saved), to_dict(cfg), LIFTER_KEYS)
    if differ:
        fix = " ".join(  # JSON is YAML: a dict (loss_options) stays one --set value
            shlex.quote(f"{k}={json.dumps(a) if isinstance(a, dict) else a}")
            for k, (a, _) in differ.items()
        )
        raise CheckpointError(
            f"{checkpoint} was trained with other lifter settings than the config gives: "
            f"{describe_mismatch(differ)}. Evaluate with the checkpoint's own: --set {fix}"
        )
    _, val = build_lift_data(cfg, train=False)
    joints, sigma = predict_lifter(model, val.keypoints_2d)
    metrics = evaluate_3d(joints, val.joints_3d, model.joint_names, val.actions)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(
            json.dumps(
                {"metrics": metrics.summary(), "joint_names": list(model.joint_names),
                 "joints_3d": np.round(joints, 2).tolist(),
                 "sigma": np.round(sigma, 2).tolist() if model.has_sigma else None}
            )
        )  # fmt: skip
    return metrics
