"""COCO person_keypoints json (COCO, the synthetic sets, OCHuman-style sets) -> person instances.

Instances come from the ground-truth boxes, or from a detection results file (COCO results
format: ``image_id``, ``bbox``, ``score``, ``category_id``) filtered by a score threshold, as
top-down methods evaluate. Per-annotation extra fields ``keypoints_clean`` (the synthetic sets'
noise-free truth) are passed through, and with ``with_3d`` the per-annotation ``joints_3d``
(K x 3, camera frame, mm) and ``camera`` (``{"K": 3 x 3, ...}``) that single-stage 3D needs.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from posereg.data.badinput import BadInputError, LoadReport
from posereg.data.instances import (
    AREA_PER_BOX_AREA,
    InstanceTable,
    check_box,
    check_keypoint_values,
    clip_box,
    keypoints_outside_image,
    missing_image_detail,
    resolve_image_path,
)
from posereg.skeletons import Skeleton, field_keypoint_count, keypoint_field_holding

__all__ = ["read_json", "load_coco_instances", "read_3d_fields", "person_category"]

logger = logging.getLogger("posereg.data")
_WARNED: set[str] = set()  # a notice is given once per file and outcome, not per load


def read_3d_fields(
    ann: dict, num_keypoints: int, source: str, record: str
) -> tuple[np.ndarray, np.ndarray]:
    """An annotation's ``joints_3d`` (K, 3) mm and its camera's ``K`` (3, 3).

    Raises:
        BadInputError: naming the file, the record and the field that is missing, of the wrong
            shape or not finite.
    """
    needs = (
        "a 3D config (data.depth: true) needs per annotation 'joints_3d' (K x 3 camera-frame mm) "
        "and 'camera' {'K': 3 x 3 intrinsics}, as the synthetic sets write them (posereg.synth)"
    )
    if "joints_3d" not in ann:
        raise BadInputError(source, record, f"no 'joints_3d' field; {needs}")
    camera = ann.get("camera")
    if not isinstance(camera, dict) or "K" not in camera:
        raise BadInputError(source, record, f"no 'camera.K' field; {needs}")
    out = []
    for field, value, shape in (
        ("joints_3d", ann["joints_3d"], (num_keypoints, 3)),
        ("camera.K", camera["K"], (3, 3)),
    ):
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            arr = np.zeros(0)
        if arr.shape != shape:
            raise BadInputError(
                source,
                record,
                f"'{field}' must be {shape[0]} x {shape[1]} numbers, got {value!r:.80}",
            )
        if not np.isfinite(arr).all():
            raise BadInputError(source, record, f"'{field}' has a non-finite value")
        out.append(arr)
    return out[0], out[1]


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


def person_category(data: dict, source: str) -> dict | None:
    """The person category of a COCO dict: the first category with a non-empty ``keypoints``
    list, else the first one named ``person``.

    Arguments:
        data: the COCO dict.
        source: the file, for messages.

    Returns:
        The category, or None when the file has no ``categories`` key at all (a minimal file:
        category id 1 is the person).

    Raises:
        BadInputError: ``categories`` is not a list, or lists no person category (``[]``, or only
            other categories): its annotations would be read as nobody's and scored AP -1.
    """
    if "categories" not in data:
        return None
    cats = data["categories"]
    if not isinstance(cats, list):
        raise BadInputError(source, "", f"'categories' must be a list, got {type(cats).__name__}")
    cats = [c for c in cats if isinstance(c, dict)]
    person = next((c for c in cats if c.get("keypoints")), None)
    person = person or next((c for c in cats if c.get("name") == "person"), None)
    if person is None:
        listed = ", ".join(repr(c.get("name", c.get("id"))) for c in cats[:5]) or "none"
        raise BadInputError(
            source,
            "categories",
            f"no person category (no category lists 'keypoints' and none is named 'person'; "
            f"categories: {listed}); a COCO keypoint file needs one, e.g. "
            '{"id": 1, "name": "person", "keypoints": [...]}',
        )
    return person


def _person_category(data: dict, source: str, skeleton: Skeleton, field: str) -> int:
    """The id of :func:`person_category` (1 when the file has no ``categories``).

    The category must list the skeleton's K names, or more names whose first K are the
    skeleton's while the annotations' ``field`` holds K keypoints (Human-Art lists 21 names and
    holds COCO-17 in ``keypoints``): then the K are loaded, with one warning.
    """
    cat = person_category(data, source)
    if cat is None:
        return 1
    cid = _int_id(cat.get("id"))
    if cid is None:
        i = data["categories"].index(cat)
        raise BadInputError(
            source, f"category #{i}", f"category id {cat.get('id')!r} is not an integer"
        )
    names = cat.get("keypoints")
    k = skeleton.num_keypoints
    if isinstance(names, list) and names and len(names) != k:
        where = f"category id {cid} ({cat.get('name', '?')})"
        n = len(names)
        fuller = keypoint_field_holding(data, cid, n)
        hint = (
            f"; its {n} keypoints are in the annotations' {fuller!r} field: set "
            f"data.keypoints_field: {fuller} and a {n}-keypoint data.skeleton"
            if fuller is not None and fuller != field
            else ""
        )
        prefix = n > k and list(names[:k]) == list(skeleton.keypoint_names)
        if not (prefix and field_keypoint_count(data, cid, field) == k):
            raise BadInputError(
                source,
                where,
                f"{n} keypoints, but skeleton {skeleton.name} has {k}; set "
                "data.skeleton to a matching built-in, a YAML file, or auto (docs/data.md)" + hint,
            )
        notice = (
            f"{source}: {where} lists {n} keypoint names; the annotations' {field!r} "
            f"hold the first {k} (skeleton {skeleton.name}), which are loaded{hint}"
        )
        if notice not in _WARNED:
            _WARNED.add(notice)
            logger.warning("%s", notice)
    _check_field_length(data, source, cid, cat, skeleton, field)
    return cid


def _check_field_length(
    data: dict, source: str, cid: int, cat: dict, skeleton: Skeleton, field: str
) -> None:
    """BadInputError when no annotation of the category holds the skeleton's K keypoints in
    ``field`` (every one would be skipped for its length), naming a field that does hold K."""
    k = skeleton.num_keypoints
    anns = data.get("annotations")
    lengths = {
        len(a[field])
        for a in (anns if isinstance(anns, list) else [])
        if isinstance(a, dict)
        and a.get("category_id", cid) == cid
        and isinstance(a.get(field), list)
    }
    if not lengths or 3 * k in lengths:
        return
    held = ", ".join(str(n // 3) if n % 3 == 0 else f"{n} values" for n in sorted(lengths))
    fuller = keypoint_field_holding(data, cid, k)
    raise BadInputError(
        source,
        f"category id {cid} ({cat.get('name', '?')})",
        f"the annotations' {field!r} hold {held} keypoints, but skeleton {skeleton.name} has {k}; "
        + (
            f"their {fuller!r} hold {k}: set data.keypoints_field: {fuller}"
            if fuller is not None
            else "set data.skeleton and data.keypoints_field to match (docs/data.md)"
        ),
    )


def _check_keypoints_field(anns: list, source: str, field: str) -> None:
    """BadInputError naming the file and the field when no annotation has ``field``."""
    dicts = [a for a in anns if isinstance(a, dict)]
    if not dicts or any(field in a for a in dicts):
        return
    found = sorted({f for a in dicts for f in a if f.startswith("keypoints")})
    raise BadInputError(
        source,
        "",
        f"no annotation has a {field!r} field (data.keypoints_field); "
        + (f"keypoint fields found: {', '.join(found)}" if found else "none has a keypoint field"),
    )


def _image_size(img: dict, key: str, source: str, record: str) -> int:
    """An image's height or width: absent -> 0 (unknown); else a positive whole number."""
    value = img.get(key)
    if value is None:
        return 0
    if not isinstance(value, int | float) or isinstance(value, bool) or not np.isfinite(value):
        raise BadInputError(
            source, record, f"{key} must be a whole number of pixels, got {value!r}"
        )
    if value < 0 or not float(value).is_integer():
        raise BadInputError(
            source, record, f"{key} must be a whole number of pixels >= 0, got {value!r}"
        )
    return int(value)


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
        sizes.append(
            (
                _image_size(img, "height", source, record),
                _image_size(img, "width", source, record),
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
    with_3d: bool = False,
    keypoints_field: str = "keypoints",
    keep_crowd: bool = False,
) -> tuple[InstanceTable, LoadReport]:
    """Read a COCO person_keypoints json (and optionally detections) into an InstanceTable.

    Arguments:
        ann_file: the annotation json.
        image_root: directory that ``file_name`` entries are relative to.
        skeleton: the keypoint layout; every annotation must carry 3 x K keypoint values.
        keypoints_field: the annotation field the keypoints are read from
            (``data.keypoints_field``; e.g. Human-Art's ``keypoints_21``).
        detections: a COCO results file or list; when given, instances are the detections (of the
            person category, with ``score >= det_score_threshold``) instead of the annotations.
        det_score_threshold: minimum detection score kept.
        skip_unlabelled: leave out annotations with no labelled keypoint (v > 0) (counted).
        check_files: check that every image file exists (missing ones are counted skips).
        strict: raise :class:`BadInputError` on the first bad record instead of skipping it.
        with_3d: also read each annotation's ``joints_3d`` and ``camera.K``
            (:func:`read_3d_fields`); one without them is a :class:`BadInputError`, never a skip.
        keep_crowd: keep the boxes of the crowd annotations (``iscrowd: 1``; never instances) in
            ``table.crowd_boxes`` / ``table.crowd_image_index``, as ignore regions for
            image-level models (counted as an adjustment); False: counted skips.

    Returns:
        The instances and the load report (kept / skipped per reason).

    A labelled keypoint outside the image (:func:`keypoints_outside_image`) is dropped (v = 0)
    and the person kept; a missing ``area`` becomes ``AREA_PER_BOX_AREA`` x box area and a
    missing ``iscrowd`` 0. Each is counted in the report's adjustments.

    Raises:
        BadInputError: unreadable json, no images list, duplicate image or annotation ids, an
            image path outside ``image_root``, an image height/width or category id that is not
            a whole number, a person category whose keypoint count differs from the skeleton's
            (see :func:`_person_category` for the one exception), annotations none of which has
            ``keypoints_field``, or no usable instance at all.
    """
    source = str(ann_file)
    image_root = Path(image_root)
    data = read_json(ann_file)
    if not isinstance(data, dict):
        raise BadInputError(
            source, "", "top level must be a JSON object with 'images' and 'annotations'"
        )
    by_id, files, ids, sizes = _read_images(data, source, image_root)
    if detections is None and isinstance(data.get("annotations"), list):
        _check_keypoints_field(data["annotations"], source, keypoints_field)
    person = _person_category(data, source, skeleton, keypoints_field)
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
        "joints_3d": [],
        "intrinsics": [],
    }
    any_clean = False
    crowd_rows: list[tuple[int, np.ndarray]] = []  # (image index, box (x, y, w, h))
    if with_3d and detections is not None:
        raise BadInputError(
            source, "", "3D evaluation (data.depth: true) needs ground-truth boxes, not detections"
        )

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
            # posereg.data.multiperson reads the image id back from this text (tested there)
            record = (
                f"annotation id {aid} (image id {iid})" if aid is not None else f"annotation #{i}"
            )
            if aid is None:
                raw = ann.get("id")
                detail = "" if raw is None else f"id {raw!r} is not an integer"
                report.skip(source, record, "missing annotation id", detail, strict=strict)
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
                    source,
                    record,
                    "unknown image_id",
                    f"no image with id {ann.get('image_id')!r}",
                    strict=strict,
                )
                continue
            category = ann.get("category_id", person)
            if _int_id(category) is None:
                report.skip(
                    source,
                    record,
                    "invalid category_id",
                    f"category_id {category!r} is not an integer",
                    strict=strict,
                )
                continue
            if category != person:
                report.skip(source, record, "not the person category", strict=False)
                continue
            crowd = ann.get("iscrowd", 0)
            if crowd not in (0, 1):  # True / False compare equal to 1 / 0
                report.skip(
                    source,
                    record,
                    "invalid iscrowd",
                    f"iscrowd {crowd!r}, expected 0 or 1",
                    strict=strict,
                )
                continue
            if crowd and keep_crowd:
                box, reason, detail = check_box(ann.get("bbox"))
                if box is None:
                    report.skip(source, record, "crowd region: " + reason, detail, strict=strict)
                    continue
                box = clip_box(box, *sizes[by_id[iid]])
                if box[2] <= 0 or box[3] <= 0:
                    report.skip(
                        source,
                        record,
                        "box outside the image",
                        f"bbox {ann['bbox']}",
                        strict=strict,
                    )
                    continue
                crowd_rows.append((by_id[iid], box))
                report.adjust(source, record, "crowd annotation kept as an ignore region")
                continue
            if crowd:
                report.skip(source, record, "crowd annotation", strict=False)
                continue
            if keypoints_field not in ann:
                report.skip(source, record, f"no {keypoints_field!r} field", strict=strict)
                continue
            kpts, reason, detail = check_keypoint_values(
                ann[keypoints_field], k, reject_negative=False
            )
            if kpts is None:
                report.skip(source, record, reason, detail, strict=strict)
                continue
            joints_3d, intrinsics = (
                read_3d_fields(ann, k, source, record) if with_3d else (None, None)
            )
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
            box_area = float(box[2] * box[3])
            box = clip_box(box, *sizes[img])
            if box[2] <= 0 or box[3] <= 0:
                report.skip(
                    source, record, "box outside the image", f"bbox {ann['bbox']}", strict=strict
                )
                continue
            outside = keypoints_outside_image(kpts, *sizes[img])
            if outside.size and skip_unlabelled and outside.size == np.count_nonzero(kpts[:, 2]):
                report.skip(
                    source,
                    record,
                    "no labelled keypoints",
                    f"all {outside.size} labelled keypoints are outside the image",
                    strict=False,
                )
                continue
            for j in outside:
                report.adjust(
                    source,
                    record,
                    "keypoints outside the image dropped",
                    f"keypoint {j} at {kpts[j, :2].tolist()}",
                )
            kpts[outside] = 0.0  # v = 0: not labelled
            if skip_unlabelled and not np.any(kpts[:, 2] > 0):
                report.skip(source, record, "no labelled keypoints", strict=False)
                continue
            if "iscrowd" not in ann:
                report.adjust(source, record, "iscrowd missing, 0 used")
            area = ann.get("area")
            ok_area = isinstance(area, int | float) and np.isfinite(area) and area > 0
            if not ok_area:
                report.adjust(
                    source,
                    record,
                    f"area missing or invalid, {AREA_PER_BOX_AREA} x box area used",
                    f"area {area!r}",
                )
            rows["image_index"].append(img)
            rows["ann_ids"].append(aid)
            rows["boxes"].append(box)
            rows["keypoints"].append(kpts)
            rows["keypoints_clean"].append(clean)
            rows["bbox_scores"].append(1.0)
            rows["areas"].append(float(area) if ok_area else AREA_PER_BOX_AREA * box_area)
            rows["joints_3d"].append(joints_3d)
            rows["intrinsics"].append(intrinsics)
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
            rows["joints_3d"].append(None)
            rows["intrinsics"].append(None)

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
        joints_3d=np.asarray(rows["joints_3d"], dtype=np.float64).reshape(-1, k, 3)
        if with_3d
        else None,
        intrinsics=np.asarray(rows["intrinsics"], dtype=np.float64).reshape(-1, 3, 3)
        if with_3d
        else None,
        crowd_image_index=np.asarray([i for i, _ in crowd_rows], dtype=np.int64)
        if keep_crowd
        else None,
        crowd_boxes=np.asarray([b for _, b in crowd_rows], dtype=np.float64).reshape(-1, 4)
        if keep_crowd
        else None,
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
            report.skip(
                image_root / files[img],
                record,
                "image file not found",
                missing_image_detail(image_root, files[img]),
                strict=strict,
            )
        keep.append(exists[img])
    return keep
