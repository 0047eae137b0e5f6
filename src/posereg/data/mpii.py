"""MPII Human Pose json (the format most PyTorch code uses) -> person instances.

Each entry holds ``image``, ``joints`` (16 x 2 px), ``joints_vis`` (16), ``center`` (2) and
``scale`` (person height / 200). Coordinates are 1-based (MATLAB). As the official SimpleBaseline
/ RLE loaders do, posereg moves the centre 15 x scale px down, converts centre and joints to
0-based pixels (minus 1) and uses a square box of side 200 x scale, padded by 1.25 like COCO
boxes. Predictions are compared with the official ground truth .mat after adding 1 back
(:mod:`posereg.metrics.pck`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from posereg.data.badinput import BadInputError, LoadReport
from posereg.data.coco import read_json
from posereg.data.instances import InstanceTable, check_keypoint_values, resolve_image_path
from posereg.skeletons import MPII16, Skeleton

__all__ = ["load_mpii_instances", "MPII_PIXEL_STD", "MPII_CENTER_SHIFT"]

MPII_PIXEL_STD = 200.0  # MPII "scale" is the person height in units of 200 px
MPII_CENTER_SHIFT = 15.0  # px x scale: the official loaders move the centre down by this


def load_mpii_instances(
    ann_file: str | Path,
    image_root: str | Path,
    skeleton: Skeleton = MPII16,
    *,
    skip_unlabelled: bool = True,
    check_files: bool = True,
    strict: bool = False,
) -> tuple[InstanceTable, LoadReport]:
    """Read an MPII json into an InstanceTable (0-based pixel coordinates).

    Arguments:
        ann_file: the json list of entries.
        image_root: directory of the images.
        skeleton: must have 16 keypoints in MPII order (default MPII16).
        skip_unlabelled: leave out entries whose joints are all unlabelled (counted).
        check_files: count entries whose image is missing as skipped.
        strict: raise on the first bad entry instead of skipping it.

    Returns:
        The instances (image ids are positions of the distinct image names; annotation ids are
        entry indices) and the load report.
    """
    source = str(ann_file)
    image_root = Path(image_root)
    entries = read_json(ann_file)
    if not isinstance(entries, list):
        raise BadInputError(source, "", "an MPII json is a list of entries")
    k = skeleton.num_keypoints
    report = LoadReport(source, num_records=len(entries))
    image_pos: dict[str, int] = {}
    index, ann_ids, boxes, keypoints = [], [], [], []
    for i, entry in enumerate(entries):
        name = entry.get("image") if isinstance(entry, dict) else None
        record = f"entry #{i} ({name})"
        if not isinstance(entry, dict):
            report.skip(source, record, "not an object", strict=strict)
            continue
        path = resolve_image_path(image_root, name, source, record)
        joints, vis = entry.get("joints"), entry.get("joints_vis")
        try:
            flat = [c for (x, y), v in zip(joints, vis, strict=True) for c in (x, y, v)]
        except (TypeError, ValueError):
            report.skip(
                source,
                record,
                "wrong keypoint length",
                f"expected joints {k} x 2 and joints_vis {k}",
                strict=strict,
            )
            continue
        kpts, reason, detail = check_keypoint_values(flat, k)
        if kpts is None:
            report.skip(source, record, reason, detail, strict=strict)
            continue
        center, scale = entry.get("center"), entry.get("scale")
        if (
            not isinstance(center, list | tuple)
            or len(center) != 2
            or not all(isinstance(c, int | float) and math.isfinite(c) for c in center)
        ):
            report.skip(source, record, "invalid center", f"center {center!r}", strict=strict)
            continue
        if not isinstance(scale, int | float) or not math.isfinite(scale) or scale <= 0:
            report.skip(source, record, "non-positive box size", f"scale {scale!r}", strict=strict)
            continue
        if skip_unlabelled and not np.any(kpts[:, 2] > 0):
            report.skip(source, record, "no labelled keypoints", strict=False)
            continue
        if check_files and not path.is_file():
            report.skip(path, record, "image file not found", strict=strict)
            continue
        cx, cy = float(center[0]) - 1.0, float(center[1]) + MPII_CENTER_SHIFT * scale - 1.0
        side = MPII_PIXEL_STD * scale
        kpts[:, :2] -= 1.0  # 1-based -> 0-based
        kpts[kpts[:, 2] == 0, :2] = 0.0
        index.append(image_pos.setdefault(name, len(image_pos)))
        ann_ids.append(i)
        boxes.append([cx - side / 2, cy - side / 2, side, side])
        keypoints.append(kpts)
    report.num_instances = len(index)
    if not index:
        raise BadInputError(source, "", "no usable instance (empty dataset).\n" + report.summary())
    files = list(image_pos)
    boxes_arr = np.asarray(boxes, dtype=np.float64)
    table = InstanceTable(
        source=source,
        image_root=image_root,
        image_files=files,
        image_ids=np.arange(len(files), dtype=np.int64),
        image_sizes=np.zeros((len(files), 2), dtype=np.int64),
        image_index=np.asarray(index, dtype=np.int64),
        ann_ids=np.asarray(ann_ids, dtype=np.int64),
        boxes=boxes_arr,
        keypoints=np.asarray(keypoints, dtype=np.float64),
        keypoints_clean=None,
        bbox_scores=np.ones(len(index)),
        areas=boxes_arr[:, 2] * boxes_arr[:, 3],
    )
    return table, report
