"""COCO person_keypoints json (COCO, the synthetic sets, OCHuman-style sets) -> person instances.

Instances come from the ground-truth boxes, or from a detection results file (COCO results
format: ``image_id``, ``bbox``, ``score``, ``category_id``) filtered by a score threshold, as
top-down methods evaluate. Per-annotation extra fields ``keypoints_clean`` (the synthetic sets'
noise-free truth) are passed through.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from posereg.data.badinput import BadInputError, LoadReport
from posereg.data.instances import (
    InstanceTable,
    check_box,
    check_keypoint_values,
    clip_box,
    resolve_image_path,
)
from posereg.skeletons import Skeleton

__all__ = ["read_json", "load_coco_instances"]


def read_json(path: str | Path) -> object:
    """Parse a json file; BadInputError naming the file for a missing or unparsable one."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise BadInputError(path, "", "annotation file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInputError(path, "", f"not valid JSON ({e})") from None


def _int_id(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)


def _person_category(data: dict) -> int:
    for cat in data.get("categories") or []:
        if isinstance(cat, dict) and cat.get("keypoints"):
            return int(cat["id"])
    return 1


def _read_images(data: dict, source: str, image_root: Path) -> tuple[dict, list, list, list]:
    images = data.get("images")
    if not isinstance(images, list):
        raise BadInputError(source, "", "no 'images' list; is this a COCO-format annotation file?")
    by_id: dict[int, int] = {}
    files, ids, sizes = [], [], []
    for i, img in enumerate(images):
        record = f"image entry #{i}"
        if not isinstance(img, dict) or _int_id(img.get("id")) is None:
            raise BadInputError(source, record, "image entries need an integer 'id'")
        iid = _int_id(img["id"])
        record = f"image id {iid}"
        if iid in by_id:
            raise BadInputError(
                source,
                record,
                f"duplicate image id (entries #{by_id[iid]} and #{i}); ids must be unique",
            )
        resolve_image_path(image_root, img.get("file_name"), source, record)
        by_id[iid] = len(files)
        files.append(img["file_name"])
        ids.append(iid)
        h, w = img.get("height", 0), img.get("width", 0)
        sizes.append(
            (
                int(h) if isinstance(h, int | float) else 0,
                int(w) if isinstance(w, int | float) else 0,
            )
        )
    return by_id, files, ids, sizes


def load_coco_instances(
    ann_file: str | Path,
    image_root: str | Path,
    skeleton: Skeleton,
    *,
    detections: str | Path | Sequence[dict] | None = None,
    det_score_threshold: float = 0.0,
    skip_unlabelled: bool = True,
    check_files: bool = True,
    strict: bool = False,
) -> tuple[InstanceTable, LoadReport]:
    """Read a COCO person_keypoints json (and optionally detections) into an InstanceTable.

    Arguments:
        ann_file: the annotation json.
        image_root: directory that ``file_name`` entries are relative to.
        skeleton: the keypoint layout; every annotation must carry 3 x K keypoint values.
        detections: a COCO results file or list; when given, instances are the detections (of the
            person category, with ``score >= det_score_threshold``) instead of the annotations.
        det_score_threshold: minimum detection score kept.
        skip_unlabelled: leave out annotations with no labelled keypoint (v > 0) (counted).
        check_files: check that every image file exists (missing ones are counted skips).
        strict: raise :class:`BadInputError` on the first bad record instead of skipping it.

    Returns:
        The instances and the load report (kept / skipped per reason).

    Raises:
        BadInputError: unreadable json, no images list, duplicate image or annotation ids, an
            image path outside ``image_root``, or no usable instance at all.
    """
    source = str(ann_file)
    image_root = Path(image_root)
    data = read_json(ann_file)
    if not isinstance(data, dict):
        raise BadInputError(
            source, "", "top level must be a JSON object with 'images' and 'annotations'"
        )
    by_id, files, ids, sizes = _read_images(data, source, image_root)
    person = _person_category(data)
    k = skeleton.num_keypoints
    report = LoadReport(source)

    rows: dict[str, list] = {
        "image_index": [],
        "ann_ids": [],
        "boxes": [],
        "keypoints": [],
        "keypoints_clean": [],
        "bbox_scores": [],
        "areas": [],
    }
    any_clean = False

    if detections is None:
        anns = data.get("annotations")
        if not isinstance(anns, list):
            raise BadInputError(source, "", "no 'annotations' list")
        seen: dict[int, int] = {}
        report.num_records = len(anns)
        for i, ann in enumerate(anns):
            if not isinstance(ann, dict):
                report.skip(source, f"annotation #{i}", "not an object", strict=strict)
                continue
            aid = _int_id(ann.get("id"))
            iid = _int_id(ann.get("image_id"))
            record = (
                f"annotation id {aid} (image id {iid})" if aid is not None else f"annotation #{i}"
            )
            if aid is None:
                report.skip(source, record, "missing annotation id", strict=strict)
                continue
            if aid in seen:
                raise BadInputError(
                    source,
                    record,
                    f"duplicate annotation id (entries #{seen[aid]} and #{i}); ids must be unique",
                )
            seen[aid] = i
            if iid not in by_id:
                report.skip(
                    source, record, "unknown image_id", f"no image with id {iid}", strict=strict
                )
                continue
            if ann.get("category_id", person) != person:
                report.skip(source, record, "not the person category", strict=False)
                continue
            if ann.get("iscrowd", 0):
                report.skip(source, record, "crowd annotation", strict=False)
                continue
            kpts, reason, detail = check_keypoint_values(ann.get("keypoints"), k)
            if kpts is None:
                report.skip(source, record, reason, detail, strict=strict)
                continue
            clean = None
            if "keypoints_clean" in ann:
                clean, reason, detail = check_keypoint_values(ann["keypoints_clean"], k)
                if clean is None:
                    report.skip(
                        source, record, "invalid keypoints_clean: " + reason, detail, strict=strict
                    )
                    continue
                any_clean = True
            box, reason, detail = check_box(ann.get("bbox"))
            if box is None:
                report.skip(source, record, reason, detail, strict=strict)
                continue
            img = by_id[iid]
            box = clip_box(box, *sizes[img])
            if box[2] <= 0 or box[3] <= 0:
                report.skip(
                    source, record, "box outside the image", f"bbox {ann['bbox']}", strict=strict
                )
                continue
            if skip_unlabelled and not np.any(kpts[:, 2] > 0):
                report.skip(source, record, "no labelled keypoints", strict=False)
                continue
            area = ann.get("area")
            ok_area = isinstance(area, int | float) and np.isfinite(area) and area > 0
            rows["image_index"].append(img)
            rows["ann_ids"].append(aid)
            rows["boxes"].append(box)
            rows["keypoints"].append(kpts)
            rows["keypoints_clean"].append(clean)
            rows["bbox_scores"].append(1.0)
            rows["areas"].append(float(area) if ok_area else float(box[2] * box[3]))
    else:
        det_source = str(detections) if isinstance(detections, str | Path) else "<detections>"
        source = f"{source} + {det_source}"
        report.source = source
        dets = read_json(detections) if isinstance(detections, str | Path) else detections
        if not isinstance(dets, list):
            raise BadInputError(det_source, "", "detections must be a JSON list of COCO results")
        report.num_records = len(dets)
        for i, det in enumerate(dets):
            record = f"detection #{i}"
            if not isinstance(det, dict):
                report.skip(det_source, record, "not an object", strict=strict)
                continue
            iid = _int_id(det.get("image_id"))
            record = f"detection #{i} (image id {iid})"
            if iid not in by_id:
                report.skip(
                    det_source, record, "unknown image_id", f"no image with id {iid}", strict=strict
                )
                continue
            if det.get("category_id", person) != person:
                report.skip(det_source, record, "not the person category", strict=False)
                continue
            score = det.get("score")
            if not isinstance(score, int | float) or not np.isfinite(score):
                report.skip(
                    det_source, record, "invalid detection score", f"score {score!r}", strict=strict
                )
                continue
            if score < det_score_threshold:
                report.skip(det_source, record, "below detection score threshold", strict=False)
                continue
            box, reason, detail = check_box(det.get("bbox"))
            if box is None:
                report.skip(det_source, record, reason, detail, strict=strict)
                continue
            img = by_id[iid]
            box = clip_box(box, *sizes[img])
            if box[2] <= 0 or box[3] <= 0:
                report.skip(
                    det_source,
                    record,
                    "box outside the image",
                    f"bbox {det['bbox']}",
                    strict=strict,
                )
                continue
            rows["image_index"].append(img)
            rows["ann_ids"].append(-1)
            rows["boxes"].append(box)
            rows["keypoints"].append(np.zeros((k, 3)))
            rows["keypoints_clean"].append(None)
            rows["bbox_scores"].append(float(score))
            rows["areas"].append(float(box[2] * box[3]))

    if check_files:
        keep = _drop_missing_images(rows, files, ids, image_root, source, report, strict)
        rows = {
            name: [v for v, ok in zip(values, keep, strict=True) if ok]
            for name, values in rows.items()
        }

    clean_array = None
    if any_clean:
        clean_array = (
            np.stack(
                [c if c is not None else np.full((k, 3), np.nan) for c in rows["keypoints_clean"]]
            )
            if rows["keypoints_clean"]
            else np.zeros((0, k, 3))
        )
    report.num_instances = len(rows["image_index"])
    if report.num_instances == 0:
        raise BadInputError(source, "", "no usable instance (empty dataset).\n" + report.summary())
    table = InstanceTable(
        source=source,
        image_root=image_root,
        image_files=files,
        image_ids=np.asarray(ids, dtype=np.int64),
        image_sizes=np.asarray(sizes, dtype=np.int64).reshape(-1, 2),
        image_index=np.asarray(rows["image_index"], dtype=np.int64),
        ann_ids=np.asarray(rows["ann_ids"], dtype=np.int64),
        boxes=np.asarray(rows["boxes"], dtype=np.float64).reshape(-1, 4),
        keypoints=np.asarray(rows["keypoints"], dtype=np.float64).reshape(-1, k, 3),
        keypoints_clean=clean_array,
        bbox_scores=np.asarray(rows["bbox_scores"], dtype=np.float64),
        areas=np.asarray(rows["areas"], dtype=np.float64),
    )
    return table, report


def _drop_missing_images(
    rows: dict[str, list],
    files: list[str],
    ids: list[int],
    image_root: Path,
    source: str,
    report: LoadReport,
    strict: bool,
) -> list[bool]:
    exists: dict[int, bool] = {}
    keep = []
    for n, img in enumerate(rows["image_index"]):
        if img not in exists:
            exists[img] = os.path.isfile(image_root / files[img])
        if not exists[img]:
            aid = rows["ann_ids"][n]
            record = (
                f"annotation id {aid} (image id {ids[img]})"
                if aid >= 0
                else f"detection (image id {ids[img]})"
            )
            report.skip(image_root / files[img], record, "image file not found", strict=strict)
        keep.append(exists[img])
    return keep
