"""Lift 2D keypoints to 3D with a trained lifter: the Python API behind ``posereg lift``.

Example::

    lifter = Lifter.from_checkpoint("runs/lift_synth_rle/best.pt")
    result = lifter.lift(keypoints_2d)           # (N, K, 2) pixels -> LiftResult
    result.joints_3d                             # (N, 17, 3) mm, root-relative (pelvis at 0)
    result.sigma                                 # (N, 17, 3) mm, or None for an L1/L2 lifter
    result.sigma_calibrated                      # (N, 17, 3) mm: c x sigma, fitted on validation
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from posereg.data.badinput import BadInputError
from posereg.models.build import lifter_from_checkpoint
from posereg.models.lifter import MIN_SPREAD_PX, FCLifter, predict_lifter
from posereg.skeletons import H36M17
from posereg.uncertainty import SigmaCalibration

__all__ = ["LiftResult", "Lifter", "read_poses_2d", "draw_lift", "lift_file"]


@dataclass
class LiftResult:
    """3D poses lifted from 2D keypoints.

    Attributes:
        joints_3d: (N, 17, 3) Human3.6M-17 joints, mm, camera axes (x right, y down, z forward),
            relative to the pelvis.
        sigma: (N, 17, 3) per-joint, per-axis scale in mm (the lifter's sigma times the 3D std),
            or None when the lifter was trained with a loss that does not learn sigma. Trained RLE
            lifters put sigma at the sigmoid's cap for nearly every pose, so it is about the
            training set's std per joint and axis (docs/lifting.md), not a per-pose uncertainty.
        joint_names: the 17 names.
        image_ids: (N,) image ids from a COCO-results input, else None.
        degenerate: (N,) bool, the 2D poses with no spread (every joint within
            :data:`~posereg.models.lifter.MIN_SPREAD_PX` of the mid-hip point, e.g. all zeros):
            nothing can be lifted from them, so their joints and sigma are NaN.
        sigma_calibrated: (N, 17, 3) mm, c_jd x sigma: a Laplace scale per joint and axis fitted
            on the run's validation pairs (``Lifter.calibration``; c = 1 for a checkpoint without
            one), so the mean |error| per axis is about this; None with ``sigma``.
        calibration: the scales behind ``sigma_calibrated`` (None with ``sigma``).
    """

    joints_3d: np.ndarray
    sigma: np.ndarray | None
    joint_names: tuple[str, ...]
    image_ids: list[int] | None = None
    degenerate: np.ndarray | None = None
    sigma_calibrated: np.ndarray | None = None
    calibration: SigmaCalibration | None = None

    def to_json(self) -> list[dict]:
        """One record per pose: ``joints_3d`` (17 x 3, mm), ``sigma`` (17 x 3, mm or null, the
        lifter's raw output) and ``sigma_calibrated`` (17 x 3, mm or null); a degenerate pose has
        ``"degenerate": true`` and null joints and sigmas."""
        out = []
        for i in range(len(self.joints_3d)):
            rec: dict = {"index": i}
            if self.image_ids is not None:
                rec["image_id"] = self.image_ids[i]
            if self.degenerate is not None and self.degenerate[i]:
                out.append(
                    {**rec, "degenerate": True, "joints_3d": None, "sigma": None,
                     "sigma_calibrated": None}
                )  # fmt: skip
                continue
            rec["joints_3d"] = np.round(self.joints_3d[i], 2).tolist()
            rec["sigma"] = None if self.sigma is None else np.round(self.sigma[i], 2).tolist()
            rec["sigma_calibrated"] = (
                None
                if self.sigma_calibrated is None
                else np.round(self.sigma_calibrated[i], 2).tolist()
            )
            out.append(rec)
        return out

    def degenerate_line(self) -> str | None:
        """``"2 of 3 poses are degenerate ...: #0 (image 7), #2 (image 9)"``, or None."""
        if self.degenerate is None or not self.degenerate.any():
            return None
        bad = np.flatnonzero(self.degenerate).tolist()
        shown = ", ".join(
            f"#{i}" + (f" (image {self.image_ids[i]})" if self.image_ids is not None else "")
            for i in bad[:10]
        ) + (" ..." if len(bad) > 10 else "")
        return (
            f"{len(bad)} of {len(self.degenerate)} poses are degenerate (2D spread under "
            f"{MIN_SPREAD_PX:g} px around the mid-hip point, e.g. all zeros), lifted as null: "
            f"{shown}"
        )


class Lifter:
    """A trained lifter ready for inference.

    Arguments:
        model: an :class:`FCLifter` (its normaliser's statistics set by training).
        device: where it runs.
        calibration: the scales c (17, 3) of ``LiftResult.sigma_calibrated``; default c = 1
            (``fitted=False``); :meth:`from_checkpoint` reads the checkpoint's.
    """

    def __init__(
        self,
        model: FCLifter,
        device: str | torch.device = "cpu",
        calibration: SigmaCalibration | None = None,
    ) -> None:
        self.model = model.to(device).eval()
        self.num_inputs = model.normalizer.mean_2d.shape[0]
        joints = len(model.joint_names)
        self.calibration = calibration or SigmaCalibration.identity(joints, 3)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> Lifter:
        """Load a ``task: lift`` checkpoint (CheckpointError for any other)."""
        model, _, state = lifter_from_checkpoint(path, device)
        calibration = SigmaCalibration.from_state(state, len(model.joint_names), 3, str(path))
        return cls(model, device, calibration)

    def lift(self, keypoints_2d: np.ndarray, image_ids: list[int] | None = None) -> LiftResult:
        """Lift (N, K, 2) or (N, K, 3) keypoints in pixels (a third column, scores, is ignored).

        Poses with no 2D spread (:attr:`LiftResult.degenerate`) get NaN joints and sigma.

        Raises:
            ValueError: a keypoint count other than the lifter's input skeleton's.
        """
        kp = np.asarray(keypoints_2d, dtype=np.float64)
        if kp.ndim != 3 or kp.shape[2] not in (2, 3) or kp.shape[1] != self.num_inputs:
            raise ValueError(
                f"keypoints must be (N, {self.num_inputs}, 2 or 3) for this lifter "
                f"({self.model.normalizer.input_skeleton}), got {kp.shape}"
            )
        joints, sigma = predict_lifter(self.model, kp[..., :2])
        degenerate = self.model.normalizer.degenerate(torch.as_tensor(kp[..., :2])).numpy()
        joints[degenerate] = np.nan
        sigma[degenerate] = np.nan
        sigma_out = sigma if self.model.has_sigma else None
        return LiftResult(
            joints, sigma_out, self.model.joint_names, image_ids, degenerate,
            None if sigma_out is None else self.calibration.apply(sigma_out),
            None if sigma_out is None else self.calibration,
        )  # fmt: skip


def read_poses_2d(path: str | Path) -> tuple[np.ndarray, list[int] | None]:
    """2D poses from a COCO-results json (``posereg predict``), an ``.npy`` or an ``.npz`` file.

    Returns:
        keypoints (N, K, 2) pixels, and the image ids for a json (else None).

    Raises:
        BadInputError: unreadable file, wrong shape, keypoint lists of different lengths, NaN.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "", "file not found")
    ids: list[int] | None = None
    if path.suffix == ".json":
        try:
            records = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadInputError(path, "", f"not valid json ({e})") from None
        if not isinstance(records, list) or not records:
            raise BadInputError(path, "", "expected a non-empty list of COCO results")
        rows, ids = [], []
        for i, r in enumerate(records):
            kp = r.get("keypoints") if isinstance(r, dict) else None
            if not isinstance(kp, list) or len(kp) % 3 or len(kp) != len(records[0]["keypoints"]):
                raise BadInputError(
                    path, f"record #{i}", "'keypoints' must be a list of 3 K numbers like record #0"
                )
            if not all(isinstance(v, int | float | None) and not isinstance(v, bool) for v in kp):
                raise BadInputError(path, f"record #{i}", "'keypoints' must be numbers")
            rows.append(np.asarray(kp, dtype=np.float64).reshape(-1, 3)[:, :2])
            ids.append(int(r.get("image_id", -1)))
        arr = np.stack(rows)
    elif path.suffix in (".npy", ".npz"):
        arr = _read_pose_array(path)
    else:
        raise BadInputError(path, "", "expected a .json (COCO results), .npy or .npz file")
    if not np.isfinite(arr).all():
        raise BadInputError(
            path, f"pose #{int(np.argwhere(~np.isfinite(arr))[0][0])}", "NaN or inf"
        )
    return arr, ids


def _read_pose_array(path: Path) -> np.ndarray:
    """(N, K, 2) float64 poses from an .npy, or from an .npz's ``keypoints`` array (or its only
    array); (K, 2 or 3) is one pose.

    Raises:
        BadInputError: empty or unreadable file, an .npz with no array or several and none named
            ``keypoints``, no poses, non-numeric values, another shape.
    """
    if path.stat().st_size == 0:
        raise BadInputError(path, "", "the file is empty (0 bytes)")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise BadInputError(path, "", f"not a readable array file ({e})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            names = list(data.files)
            if "keypoints" in names:
                key = "keypoints"
            elif len(names) == 1:
                key = names[0]
            else:
                listed = ", ".join(names) if names else "none"
                raise BadInputError(
                    path, "", f"expected one array, or one named 'keypoints'; it holds: {listed}"
                )
            try:
                raw = np.asarray(data[key])
            except (OSError, ValueError, EOFError) as e:
                raise BadInputError(path, key, f"not a readable array ({e})") from None
        where = key
    else:
        raw, where = np.asarray(data), ""
    if raw.dtype.kind not in "iuf":
        held = "strings" if raw.dtype.kind in "US" else f"{raw.dtype.name} values"
        raise BadInputError(path, where, f"holds {held}, expected numbers (pixel coordinates)")
    arr = raw.astype(np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[2] not in (2, 3):
        raise BadInputError(path, where, f"array of shape {arr.shape}, expected (N, K, 2 or 3)")
    if arr.size == 0:
        raise BadInputError(path, where, f"no poses (array of shape {arr.shape})")
    return arr[..., :2]


def draw_lift(result: LiftResult, path: str | Path, max_poses: int = 6) -> Path:
    """Draw up to ``max_poses`` lifted skeletons (matplotlib 3D) with their uncertainty.

    Each joint gets a bar of +- sigma along each axis (the calibrated sigma,
    ``result.sigma_calibrated``, when there is one) and a marker whose size grows with its mean;
    the vertical axis is up (-y of the camera). Returns the PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn_sigma = result.sigma if result.sigma_calibrated is None else result.sigma_calibrated
    label = "sigma" if result.sigma_calibrated is None else "calibrated sigma"
    shown = [i for i in range(len(result.joints_3d)) if np.isfinite(result.joints_3d[i]).all()]
    shown = shown[:max_poses]  # degenerate poses (NaN) have nothing to draw
    n = max(len(shown), 1)
    fig = plt.figure(figsize=(4 * n, 4.4))
    for slot, i in enumerate(shown):
        ax = fig.add_subplot(1, n, slot + 1, projection="3d")
        j = result.joints_3d[i]
        x, y, z = j[:, 0], j[:, 2], -j[:, 1]  # camera x, depth, up
        for a, b in H36M17.limbs:
            ax.plot([x[a], x[b]], [y[a], y[b]], [z[a], z[b]], color="tab:blue", lw=2)
        if drawn_sigma is not None:
            s = drawn_sigma[i]
            for k in range(len(j)):
                for d, (dx, dy, dz) in enumerate(((1, 0, 0), (0, 1, 0), (0, 0, 1))):
                    e = s[k, (0, 2, 1)[d]]
                    ax.plot(
                        [x[k] - dx * e, x[k] + dx * e], [y[k] - dy * e, y[k] + dy * e],
                        [z[k] - dz * e, z[k] + dz * e], color="tab:red", lw=1, alpha=0.7,
                    )  # fmt: skip
            size = 10 + 3 * s.mean(1)
        else:
            size = 10
        ax.scatter(x, y, z, s=size, color="tab:red" if drawn_sigma is not None else "k")
        r = max(np.ptp(j, axis=0).max() / 2, 1.0)
        cx, cy, cz = (x.max() + x.min()) / 2, (y.max() + y.min()) / 2, (z.max() + z.min()) / 2
        ax.set(xlim=(cx - r, cx + r), ylim=(cy - r, cy + r), zlim=(cz - r, cz + r))
        ax.set(xlabel="x (mm)", ylabel="depth (mm)", zlabel="up (mm)")
        title = f"pose {i}" + (f" (image {result.image_ids[i]})" if result.image_ids else "")
        if drawn_sigma is not None:
            title += f"\nmean {label} {drawn_sigma[i].mean():.0f} mm"
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def lift_file(
    checkpoint: str | Path,
    poses: str | Path,
    out_dir: str | Path,
    draw: bool = True,
    device: str = "cpu",
) -> tuple[LiftResult, Path, Path | None]:
    """Lift the poses of a file; writes ``out_dir/poses_3d.json`` and ``out_dir/poses_3d.png``."""
    lifter = Lifter.from_checkpoint(checkpoint, device)
    keypoints, ids = read_poses_2d(poses)
    try:
        result = lifter.lift(keypoints, ids)
    except ValueError as e:
        raise BadInputError(poses, "", str(e)) from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "poses_3d.json"
    json_path.write_text(
        json.dumps(
            {"units": "mm, root-relative (pelvis at 0), camera axes x right, y down, z forward",
             "joint_names": list(result.joint_names),
             "sigma_calibration": None if result.calibration is None else {
                 "fitted": result.calibration.fitted,
                 "scale": np.round(result.calibration.scale, 4).tolist()},
             "poses": result.to_json()}
        )
    )  # fmt: skip
    usable = result.degenerate is None or not result.degenerate.all()
    png = draw_lift(result, out / "poses_3d.png") if draw and usable else None
    return result, json_path, png
