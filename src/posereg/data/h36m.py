"""Human3.6M frames in the MMPose ``*_body3d.npz`` layout: 2D keypoints and 3D joints.

Fields: ``imgname`` (N,), ``center`` (N, 2) px, ``scale`` (N,) = box side / 200, ``part``
(N, 17, 3) = (u, v, visible) in pixels, ``S`` (N, 17, 4) = (x, y, z, visible) in the camera frame.
Joint order is :data:`posereg.skeletons.H36M17`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posereg.data.badinput import BadInputError, LoadReport
from posereg.data.instances import InstanceTable, resolve_image_path
from posereg.skeletons import H36M17

__all__ = ["H36MFrames", "load_h36m_body3d", "load_h36m_instances"]

H36M_PIXEL_STD = 200.0


@dataclass(frozen=True)
class H36MFrames:
    """Human3.6M frames.

    Attributes:
        image_names: (N,) paths relative to the image root.
        center: (N, 2) box centres in pixels.
        scale: (N,) box side / 200.
        keypoints: (N, 17, 3) image keypoints (u, v, v_flag), v_flag 1 = labelled.
        joints_3d: (N, 17, 4) camera-frame joints (x, y, z, visible).
    """

    image_names: list[str]
    center: np.ndarray
    scale: np.ndarray
    keypoints: np.ndarray
    joints_3d: np.ndarray

    def __len__(self) -> int:
        return len(self.image_names)


def load_h36m_body3d(path: str | Path) -> H36MFrames:
    """Load a ``*_body3d.npz`` file, checking field presence and shapes.

    Raises:
        BadInputError: a missing field or a shape other than documented.
    """
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise BadInputError(path, "", "file not found") from None
    except (OSError, ValueError) as e:
        raise BadInputError(path, "", f"not a readable .npz ({e})") from None
    with data:
        missing = [f for f in ("imgname", "center", "scale", "part", "S") if f not in data.files]
        if missing:
            raise BadInputError(path, "", f"missing fields {missing}; found {data.files}")
        names = [str(n) for n in data["imgname"]]
        n, k = len(names), H36M17.num_keypoints
        shapes = {"center": (n, 2), "scale": (n,), "part": (n, k, 3), "S": (n, k, 4)}
        arrays = {f: np.asarray(data[f], dtype=np.float64) for f in shapes}
    for field_name, shape in shapes.items():
        if arrays[field_name].shape != shape:
            raise BadInputError(
                path, f"field {field_name}", f"shape {arrays[field_name].shape}, expected {shape}"
            )
    return H36MFrames(names, arrays["center"], arrays["scale"], arrays["part"], arrays["S"])


def load_h36m_instances(
    path: str | Path, image_root: str | Path, *, check_files: bool = True, strict: bool = False
) -> tuple[InstanceTable, LoadReport]:
    """Human3.6M frames as top-down instances (square box of side 200 x scale, padded like COCO)."""
    frames = load_h36m_body3d(path)
    image_root = Path(image_root)
    report = LoadReport(str(path), num_records=len(frames))
    keep = []
    for i, name in enumerate(frames.image_names):
        record = f"frame #{i} ({name})"
        full = resolve_image_path(image_root, name, str(path), record)
        kpts = frames.keypoints[i]
        if not np.all(np.isfinite(kpts)) or not np.isfinite(frames.scale[i]):
            report.skip(path, record, "non-finite keypoint", strict=strict)
        elif frames.scale[i] <= 0:
            report.skip(path, record, "non-positive box size", strict=strict)
        elif check_files and not full.is_file():
            report.skip(full, record, "image file not found", strict=strict)
        else:
            keep.append(i)
    report.num_instances = len(keep)
    if not keep:
        raise BadInputError(path, "", "no usable instance (empty dataset).\n" + report.summary())
    idx = np.asarray(keep)
    side = H36M_PIXEL_STD * frames.scale[idx]
    boxes = np.stack(
        [frames.center[idx, 0] - side / 2, frames.center[idx, 1] - side / 2, side, side], axis=1
    )
    kpts = frames.keypoints[idx].copy()
    kpts[..., 2] = np.where(kpts[..., 2] > 0, 2.0, 0.0)
    table = InstanceTable(
        source=str(path),
        image_root=image_root,
        image_files=[frames.image_names[i] for i in keep],
        image_ids=idx.astype(np.int64),
        image_sizes=np.zeros((len(keep), 2), dtype=np.int64),
        image_index=np.arange(len(keep), dtype=np.int64),
        ann_ids=idx.astype(np.int64),
        boxes=boxes,
        keypoints=kpts,
        keypoints_clean=None,
        bbox_scores=np.ones(len(keep)),
        areas=side * side,
    )
    return table, report
