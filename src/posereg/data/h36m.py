"""Human3.6M in the formats people have: MMPose ``*_body3d.npz`` frames and the VideoPose3D archives.

MMPose ``*_body3d.npz`` fields: ``imgname`` (N,), ``center`` (N, 2) px, ``scale`` (N,) = box
side / 200, ``part`` (N, 17, 3) = (u, v, visible) in pixels, ``S`` (N, 17, 4) = (x, y, z,
visible) in the camera frame (metres in the MMPose fixtures). Joint order is
:data:`posereg.skeletons.H36M17`.

VideoPose3D archives (Pavllo et al. 2019, ``data/prepare_data_h36m.py``):

* ``data_3d_h36m.npz``: ``positions_3d``, a pickled dict subject -> action -> (T, 32, 3) world
  coordinates in metres (the 32 joints of the Human3.6M motion capture skeleton);
  :data:`H36M32_TO_17` selects the 17 joints everybody evaluates on.
* ``data_2d_h36m_gt.npz`` and detection files (``data_2d_h36m_cpn_ft_h36m_dbb.npz``, ...):
  ``positions_2d``, subject -> action -> a list of 4 arrays (T, 17, 2) in pixels, one per camera
  in :data:`H36M_CAMERA_IDS` order, and ``metadata`` (``layout_name``, ``num_joints``,
  ``keypoints_symmetry``).

The pickled dicts are read with a restricted unpickler that builds only NumPy arrays, dicts and
lists, so a file cannot run code (``np.load(allow_pickle=True)`` would).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from posereg.data.badinput import BadInputError, LoadReport
from posereg.data.instances import InstanceTable, resolve_image_path
from posereg.skeletons import H36M17

__all__ = [
    "H36MFrames",
    "load_h36m_body3d",
    "load_h36m_instances",
    "H36M32_TO_17",
    "H36M_CAMERA_IDS",
    "TRAIN_SUBJECTS",
    "TEST_SUBJECTS",
    "load_videopose3d_3d",
    "load_videopose3d_2d",
]

#: The 17 of the 32 motion-capture joints in :data:`posereg.skeletons.H36M17` order (pelvis,
#: r hip, r knee, r ankle, l hip, l knee, l ankle, spine, thorax, neck/nose, head, l shoulder,
#: l elbow, l wrist, r shoulder, r elbow, r wrist): VideoPose3D's ``remove_joints`` keeps exactly
#: these (it drops 4, 5, 9, 10, 11, 16, 20-24, 28-31: duplicated or static joints, feet tips,
#: hand and thumb markers).
H36M32_TO_17 = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)
#: Camera order of the VideoPose3D 2D archives (and of the Human3.6M release).
H36M_CAMERA_IDS = ("54138969", "55011271", "58860488", "60457274")
#: The protocol splits (Protocols #1 and #2): train on five subjects, test on two.
TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
TEST_SUBJECTS = ("S9", "S11")

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


# --------------------------------------------------------------------------- VideoPose3D archives
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.dtypes", "Float64DType"),
    ("numpy.dtypes", "Float32DType"),
    ("collections", "OrderedDict"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and NumPy arrays; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only NumPy arrays)")


def _read_pickled_field(path: str | Path, field_name: str) -> Any:
    """The object stored under ``field_name`` of an npz written with an object array (a dict)."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "", "file not found")
    try:
        with zipfile.ZipFile(path) as z:
            names = [n.removesuffix(".npy") for n in z.namelist()]
            if field_name not in names:
                raise BadInputError(path, f"field {field_name}", f"missing; found {names}")
            f = io.BytesIO(z.read(field_name + ".npy"))
    except (zipfile.BadZipFile, OSError) as e:
        raise BadInputError(path, "", f"not a readable .npz ({e})") from None
    try:
        version = np.lib.format.read_magic(f)
        header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        _, _, dtype = header(f)
        if not dtype.hasobject:
            raise BadInputError(
                path, f"field {field_name}", f"a {dtype} array, expected a pickled dict"
            )
        obj = _ArrayUnpickler(f).load()
    except (pickle.UnpicklingError, ValueError, EOFError, TypeError) as e:
        raise BadInputError(path, f"field {field_name}", f"cannot be read ({e})") from None
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    return obj


def _checked_array(
    value: Any, path: str | Path, field: str, trailing: tuple[int, ...], unit_scale: float = 1.0
) -> np.ndarray:
    """value as a float array (T, *trailing), finite; BadInputError naming ``field`` otherwise."""
    a = np.asarray(value, dtype=np.float64) if isinstance(value, np.ndarray) else None
    if a is None or a.ndim != 1 + len(trailing) or a.shape[1:] != trailing:
        got = getattr(value, "shape", type(value).__name__)
        raise BadInputError(
            path, field, f"shape {got}, expected (T, {', '.join(map(str, trailing))})"
        )
    if not np.isfinite(a).all():
        frame = int(np.argwhere(~np.isfinite(a))[0][0])
        raise BadInputError(path, field, f"non-finite value (NaN or inf) at frame {frame}")
    return a * unit_scale


def load_videopose3d_3d(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """World joints from a VideoPose3D ``data_3d_h36m.npz``: subject -> action -> (T, 17, 3) in mm.

    The 32 motion-capture joints are reduced to Human3.6M-17 with :data:`H36M32_TO_17` (files
    that already hold 17 joints are taken as they are); metres become mm.

    Raises:
        BadInputError: no ``positions_3d`` field, not a dict of dicts, an array of another shape,
            or a NaN; the message names the file and ``positions_3d[subject][action]``.
    """
    data = _read_pickled_field(path, "positions_3d")
    if not isinstance(data, dict):
        raise BadInputError(path, "field positions_3d", f"a {type(data).__name__}, expected a dict")
    out: dict[str, dict[str, np.ndarray]] = {}
    for subject, actions in data.items():
        if not isinstance(actions, dict):
            raise BadInputError(
                path, f"positions_3d[{subject!r}]", "expected a dict action -> array"
            )
        out[str(subject)] = {}
        for action, arr in actions.items():
            field = f"positions_3d[{subject!r}][{action!r}]"
            # 32 mocap joints (the archive) or 17 (already reduced); anything else is an error
            is17 = isinstance(arr, np.ndarray) and arr.ndim == 3 and arr.shape[1] == 17
            a = _checked_array(arr, path, field, (17 if is17 else 32, 3))
            if not is17:
                a = a[:, H36M32_TO_17]
            out[str(subject)][str(action)] = a * 1000.0
    return out


def load_videopose3d_2d(
    path: str | Path,
) -> tuple[dict[str, dict[str, list[np.ndarray]]], dict[str, Any]]:
    """2D keypoints from a VideoPose3D 2D archive (ground truth or detections, e.g. CPN).

    Returns:
        (positions, metadata): subject -> action -> 4 arrays (T, 17, 2) in pixels, one per camera
        in :data:`H36M_CAMERA_IDS` order; the ``metadata`` dict (empty if the file has none).

    Raises:
        BadInputError: a missing ``positions_2d``, a layout other than 17 joints, a camera list
            that is not 4 long, a wrong shape or NaN; the message names the file and field.
    """
    data = _read_pickled_field(path, "positions_2d")
    try:
        metadata = _read_pickled_field(path, "metadata")
    except BadInputError:
        metadata = {}
    if not isinstance(data, dict):
        raise BadInputError(path, "field positions_2d", f"a {type(data).__name__}, expected a dict")
    if isinstance(metadata, dict) and metadata.get("num_joints", 17) != 17:
        raise BadInputError(
            path,
            "field metadata",
            f"num_joints {metadata['num_joints']}, expected 17 (Human3.6M-17)",
        )
    out: dict[str, dict[str, list[np.ndarray]]] = {}
    for subject, actions in data.items():
        if not isinstance(actions, dict):
            raise BadInputError(
                path, f"positions_2d[{subject!r}]", "expected a dict action -> list"
            )
        out[str(subject)] = {}
        for action, cams in actions.items():
            field = f"positions_2d[{subject!r}][{action!r}]"
            if not isinstance(cams, list | tuple) or len(cams) != len(H36M_CAMERA_IDS):
                n = len(cams) if isinstance(cams, list | tuple) else type(cams).__name__
                raise BadInputError(path, field, f"{n} cameras, expected a list of 4 arrays")
            out[str(subject)][str(action)] = [
                _checked_array(c, path, f"{field}[{i}]", (17, 2)) for i, c in enumerate(cams)
            ]
    return out, dict(metadata) if isinstance(metadata, dict) else {}
