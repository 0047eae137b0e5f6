"""The table of person instances every loader produces and :class:`TopDownDataset` reads.

Instances are stored as NumPy arrays, not a list of Python objects, so data-loader workers
share them without copy-on-access growth and pickling them is fast.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posereg.data.badinput import BadInputError

__all__ = [
    "AREA_PER_BOX_AREA",
    "InstanceTable",
    "resolve_image_path",
    "check_keypoint_values",
    "keypoints_outside_image",
    "missing_image_detail",
]

#: A missing annotation ``area`` (OKS scale s^2) is this fraction of the box area ``w * h``: the
#: rule of xtcocotools / crowdposetools and MMPose's loaders for sets without segment areas
#: (CrowdPose, AI Challenger); it approximates COCO's segment area, which ``area`` stands for.
AREA_PER_BOX_AREA = 0.53


@dataclass
class InstanceTable:
    """Person instances (N) over images (M).

    Attributes:
        source: the annotation file(s), for messages.
        image_root: directory the image file names are relative to.
        image_files: (M,) file names as written in the annotation file.
        image_ids: (M,) int64.
        image_sizes: (M, 2) int64 (height, width) from the annotation file, 0 when unknown.
        image_index: (N,) int64 index into the image arrays.
        ann_ids: (N,) int64 annotation ids; -1 for detection boxes.
        boxes: (N, 4) float64 person boxes (x, y, w, h) in image pixels, before padding.
        keypoints: (N, K, 3) float64 labels (x, y, v) in image pixels; zeros for detections.
        keypoints_clean: (N, K, 3) float64 noise-free truth where the file carries it (NaN rows
            for instances without it), else None.
        bbox_scores: (N,) float64 detection scores; 1 for ground-truth boxes.
        areas: (N,) float64 annotation area (segment area for COCO), or box area for detections.
        joints_3d: (N, K, 3) float64 camera-frame joints in mm, for 3D data (``data.depth``);
            else None.
        intrinsics: (N, 3, 3) float64 camera matrices K of each instance's image, with
            ``joints_3d``; else None.
        crowd_image_index: (C,) int64 image index of each crowd region (``iscrowd: 1``
            annotations, never instances), when the loader kept them (``keep_crowd``); else None.
        crowd_boxes: (C, 4) float64 crowd region boxes (x, y, w, h) in image pixels, clipped to
            the image; with ``crowd_image_index``.
    """

    source: str
    image_root: Path
    image_files: list[str]
    image_ids: np.ndarray
    image_sizes: np.ndarray
    image_index: np.ndarray
    ann_ids: np.ndarray
    boxes: np.ndarray
    keypoints: np.ndarray
    keypoints_clean: np.ndarray | None
    bbox_scores: np.ndarray
    areas: np.ndarray
    joints_3d: np.ndarray | None = None
    intrinsics: np.ndarray | None = None
    crowd_image_index: np.ndarray | None = None
    crowd_boxes: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.image_index.shape[0])

    def describe(self, i: int) -> str:
        """The record name used in messages: ``annotation id A (image id I)``."""
        img = self.image_index[i]
        kind = "annotation id" if self.ann_ids[i] >= 0 else "detection #"
        what = self.ann_ids[i] if self.ann_ids[i] >= 0 else i
        return f"{kind} {what} (image id {self.image_ids[img]}, {self.image_files[img]})"

    def image_path(self, i: int) -> Path:
        """Full path of instance i's image."""
        return self.image_root / self.image_files[self.image_index[i]]


def resolve_image_path(image_root: Path, file_name: object, source: str, record: str) -> Path:
    """Join an image file name to the dataset root, refusing names that escape it.

    Absolute names and names whose normalised form leaves the root (``../``) raise
    :class:`BadInputError`. The check is lexical: symbolic links inside the root are followed as
    usual, so a root of symlinked image folders works.
    """
    if not isinstance(file_name, str) or not file_name:
        raise BadInputError(
            source, record, f"file_name must be a non-empty string, got {file_name!r}"
        )
    if os.path.isabs(file_name) or file_name.startswith(("/", "\\")) or ":" in file_name[:3]:
        raise BadInputError(
            source,
            record,
            f"image path {file_name!r} is absolute; file names must be relative to the image root "
            f"{image_root}",
        )
    root = os.path.normpath(os.path.abspath(image_root))
    full = os.path.normpath(os.path.join(root, file_name))
    if os.path.commonpath([root, full]) != root:
        raise BadInputError(
            source,
            record,
            f"image path {file_name!r} points outside the image root {image_root}; "
            "move the image under the root or fix the file name",
        )
    return Path(full)


def check_keypoint_values(
    values: object, num_keypoints: int, *, reject_negative: bool = True
) -> tuple[np.ndarray | None, str, str]:
    """Validate a flat COCO keypoint list (x1, y1, v1, ...).

    Arguments:
        values: the list.
        num_keypoints: K.
        reject_negative: a labelled keypoint with a negative coordinate makes the record invalid
            (the MPII loader); the COCO loader passes False and drops only that keypoint
            (:func:`keypoints_outside_image`).

    Returns:
        (array (K, 3), "", "") when valid, else (None, reason, detail) with reason one of
        ``wrong keypoint length``, ``non-numeric keypoints``, ``non-finite keypoint``,
        ``invalid visibility code``, ``negative keypoint coordinate``.
    """
    expected = 3 * num_keypoints
    if not isinstance(values, list | tuple):
        return (
            None,
            "wrong keypoint length",
            f"expected a list of {expected} numbers, got {type(values).__name__}",
        )
    if len(values) != expected:
        return (
            None,
            "wrong keypoint length",
            f"got {len(values)} values, expected {expected} ({num_keypoints} x 3)",
        )
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return None, "non-numeric keypoints", "every value must be a number"
    kpts = np.asarray(values, dtype=np.float64).reshape(num_keypoints, 3)
    bad = ~np.isfinite(kpts)
    if bad.any():
        j = int(np.argwhere(bad)[0, 0])
        return None, "non-finite keypoint", f"keypoint {j} is {kpts[j].tolist()}"
    vis = kpts[:, 2]
    bad_v = ~np.isin(vis, (0.0, 1.0, 2.0))
    if bad_v.any():
        j = int(np.argmax(bad_v))
        return None, "invalid visibility code", f"keypoint {j} has v={vis[j]:g}, expected 0, 1 or 2"
    neg = (vis > 0) & np.any(kpts[:, :2] < 0, axis=1)
    if reject_negative and neg.any():
        j = int(np.argmax(neg))
        return (
            None,
            "negative keypoint coordinate",
            f"labelled keypoint {j} at {kpts[j, :2].tolist()}",
        )
    return kpts, "", ""


def keypoints_outside_image(keypoints: np.ndarray, height: int, width: int) -> np.ndarray:
    """Indices of labelled keypoints (v > 0) outside the image.

    Outside means x < 0 or y < 0, or, when the image size is known (> 0), x > width or
    y > height (COCO's keypoint coordinates run over [0, width] x [0, height]).

    Arguments:
        keypoints: (K, 3) labels (x, y, v) in image pixels.
        height, width: image size from the annotation file; 0 when unknown.
    """
    x, y, v = keypoints[:, 0], keypoints[:, 1], keypoints[:, 2]
    out = (x < 0) | (y < 0)
    if height > 0 and width > 0:
        out |= (x > width) | (y > height)
    return np.flatnonzero(out & (v > 0))


def missing_image_detail(image_root: Path, file_name: str) -> str:
    """The detail of an "image file not found" skip: the path, the root searched, and a hint
    when the file exists one folder up or without the json's folder part."""
    path = Path(image_root) / file_name
    hint = ""
    for alt_root, alt_name in (
        (Path(image_root).parent, file_name),
        (Path(image_root), Path(file_name).name),
    ):
        if (alt_root / alt_name).is_file() and (alt_root, alt_name) != (
            Path(image_root),
            file_name,
        ):
            hint = f"; {alt_root / alt_name} exists: is the image root {alt_root}?"
            if alt_name != file_name:
                hint = f"; {alt_root / alt_name} exists: the json's file_name has folder parts the image root already holds"
            break
    return (
        f"{path} (searched under image root {image_root}; set data.train_images / "
        f"data.val_images to the folder the json's file_name entries are relative to{hint})"
    )


def check_box(values: object) -> tuple[np.ndarray | None, str, str]:
    """Validate a COCO box (x, y, w, h): four finite numbers with w > 0 and h > 0."""
    if not isinstance(values, list | tuple) or len(values) != 4:
        return None, "invalid bbox", f"expected [x, y, w, h], got {values!r}"
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return None, "invalid bbox", f"non-numeric bbox {values!r}"
    if not all(math.isfinite(v) for v in values):
        return None, "invalid bbox", f"non-finite bbox {list(values)}"
    box = np.asarray(values, dtype=np.float64)
    if box[2] <= 0 or box[3] <= 0:
        return None, "non-positive box size", f"w={box[2]:g}, h={box[3]:g}"
    return box, "", ""


def clip_box(box: np.ndarray, height: int, width: int) -> np.ndarray:
    """Clip a box (x, y, w, h) to an image of known size (no-op when the size is 0)."""
    if height <= 0 or width <= 0:
        return box
    x1, y1 = max(box[0], 0.0), max(box[1], 0.0)
    x2, y2 = min(box[0] + box[2], float(width)), min(box[1] + box[3], float(height))
    return np.array([x1, y1, x2 - x1, y2 - y1])
