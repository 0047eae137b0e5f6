"""Contact sheets of a COCO person-keypoints split with its labels drawn (``posereg data show``).

Per person: the skeleton through the (noisy) labels; labels as filled dots (v = 2) or rings
(v = 1); when the json carries ``keypoints_clean``, the clean point as a white dot joined to its
label; gross errors (``noise.outlier``) circled in red and swapped pairs joined in magenta; the
box from ``bbox``. Works on any COCO keypoint json; the extra synth fields are optional.
Bad input (a missing folder or json, invalid JSON, a missing or unreadable image) raises
:class:`BadInputError` naming the file and record; an annotation that cannot be drawn (keypoints
or box of the wrong shape or type) is left off the sheet and counted in a warning.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np

from posereg.data.badinput import BadInputError
from posereg.data.coco import read_json
from posereg.data.instances import resolve_image_path
from posereg.skeletons import field_keypoint_count

__all__ = ["contact_sheet", "draw_annotations"]

logger = logging.getLogger("posereg.data")

_PALETTE = [
    (0, 200, 255),
    (255, 160, 0),
    (80, 255, 80),
    (255, 80, 200),
    (0, 120, 255),
    (200, 255, 0),
]


def _pt(xy: np.ndarray, scale: float) -> tuple[int, int]:
    return round(float(xy[0] + 0.5) * scale - 0.5), round(float(xy[1] + 0.5) * scale - 0.5)


def _numbers(value: object, length: int | None = None) -> bool:
    return (
        isinstance(value, list | tuple)
        and (length is None or len(value) == length)
        and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )
    )


def _drawable(ann: object, num_keypoints: int | None) -> str:
    """Why an annotation cannot be drawn ("" when it can)."""
    if not isinstance(ann, dict):
        return "not an object"
    kp = ann.get("keypoints")
    if not _numbers(kp) or len(kp) % 3 or (num_keypoints and len(kp) != 3 * num_keypoints):
        return "keypoints are not 3 x K numbers"
    if not _numbers(ann.get("bbox"), 4):
        return f"bbox {ann.get('bbox')!r} is not four numbers"
    if "keypoints_clean" in ann and not _numbers(ann["keypoints_clean"], len(kp)):
        return "keypoints_clean differs in length or type from keypoints"
    return ""


def _limbs(data: dict, source: Path) -> tuple[list[list[int]], int | None]:
    """The person category's 1-based limb pairs (checked) and its keypoint count; when the
    annotations' ``keypoints`` hold fewer (the first K of its names, as Human-Art's hold COCO-17
    of 21), that count and the limbs among those K."""
    cats = data.get("categories")
    person = next(
        (c for c in cats if isinstance(c, dict) and c.get("keypoints")),
        None,
    ) if isinstance(cats, list) else None  # fmt: skip
    if person is None:
        return [], None
    k = len(person["keypoints"]) if isinstance(person["keypoints"], list) else None
    held = field_keypoint_count(data, person.get("id"), "keypoints")
    limbs = person.get("skeleton") or []
    ok = isinstance(limbs, list) and all(
        isinstance(p, list | tuple)
        and len(p) == 2
        and all(isinstance(i, int) and not isinstance(i, bool) and 1 <= i <= (k or 0) for i in p)
        for p in limbs
    )
    if not ok:
        raise BadInputError(
            source,
            f"category id {person.get('id')!r}",
            f"skeleton must be a list of 1-based [a, b] keypoint index pairs in 1..{k}",
        )
    if k is not None and held is not None and 0 < held < k:
        # the annotations' `keypoints` hold the first `held` names (Human-Art: COCO-17 of 21)
        return [p for p in limbs if max(p) <= held], held
    return limbs, k


def draw_annotations(
    img: np.ndarray, anns: list[dict], skeleton: list[list[int]], scale: float = 1.0
) -> np.ndarray:
    """Draw annotations on an image (already resized by ``scale``); returns the same array.

    Arguments:
        img: (H, W, 3) BGR uint8, modified in place.
        anns: COCO annotations of this image.
        skeleton: 1-based limb pairs of the category.
        scale: factor between annotation pixels and ``img`` pixels.
    """
    photo = img.copy()
    for n, a in enumerate(anns):
        colour = _PALETTE[n % len(_PALETTE)]
        kp = np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)
        x, y, w, h = a["bbox"]
        cv2.rectangle(
            img,
            _pt(np.array([x - 0.5, y - 0.5]), scale),
            _pt(np.array([x + w - 0.5, y + h - 0.5]), scale),
            colour,
            1,
        )
        for i, j in skeleton:
            if kp[i - 1, 2] > 0 and kp[j - 1, 2] > 0:
                cv2.line(img, _pt(kp[i - 1], scale), _pt(kp[j - 1], scale), colour, 1, cv2.LINE_AA)
        clean = (
            np.asarray(a["keypoints_clean"], dtype=np.float64).reshape(-1, 3)
            if "keypoints_clean" in a
            else None
        )
        for k in np.flatnonzero(kp[:, 2] > 0):
            p = _pt(kp[k], scale)
            if clean is not None:
                c = _pt(clean[k], scale)
                cv2.line(img, c, p, (255, 255, 255), 1, cv2.LINE_AA)
                cv2.circle(img, c, 1, (255, 255, 255), -1, cv2.LINE_AA)
            if kp[k, 2] == 2:
                cv2.circle(img, p, 3, colour, -1, cv2.LINE_AA)
                cv2.circle(img, p, 3, (0, 0, 0), 1, cv2.LINE_AA)
            else:
                cv2.circle(img, p, 3, colour, 1, cv2.LINE_AA)
        noise = a.get("noise") if isinstance(a.get("noise"), dict) else {}
        valid = range(len(kp))
        for k in noise.get("outlier", []):
            if isinstance(k, int) and k in valid:
                cv2.circle(img, _pt(kp[k], scale), 7, (0, 0, 255), 2, cv2.LINE_AA)
        for pair in noise.get("swap", []):
            if isinstance(pair, list | tuple) and len(pair) == 2 and all(i in valid for i in pair):
                i, j = pair
                cv2.line(img, _pt(kp[i], scale), _pt(kp[j], scale), (255, 0, 255), 2, cv2.LINE_AA)
    # Labels at 75 % opacity, so the person under them stays visible.
    cv2.addWeighted(img, 0.75, photo, 0.25, 0.0, dst=img)
    return img


def contact_sheet(
    dataset_dir: str | Path,
    split: str = "train",
    out: str | Path | None = None,
    num_images: int = 16,
    columns: int = 4,
    scale: float = 1.0,
) -> Path:
    """Write a PNG grid of the first ``num_images`` images of a split with their labels drawn.

    Arguments:
        dataset_dir: folder with ``images/<split>/`` and ``annotations/person_keypoints_<split>.json``.
        split: split name.
        out: PNG path (None: ``dataset_dir/contact_sheet_<split>.png``).
        num_images: images on the sheet.
        columns: images per row.
        scale: resize factor of each image (labels are drawn after resizing, so they stay thin).

    Returns:
        Path of the PNG.

    Raises:
        BadInputError: the folder or the annotation file is missing, the json is invalid or not a
            COCO keypoint file, an image is missing or unreadable (naming file and record).
        ValueError: num_images, columns or scale is not positive.
    """
    if num_images < 1 or columns < 1 or scale <= 0:
        raise ValueError(
            f"num_images and columns must be >= 1 and scale > 0, got {num_images}, {columns}, {scale}"
        )
    root = Path(dataset_dir)
    if not root.is_dir():
        raise BadInputError(root, "", "dataset folder not found")
    ann_path = root / "annotations" / f"person_keypoints_{split}.json"
    if not ann_path.is_file():
        raise BadInputError(
            ann_path,
            "",
            f"annotation file not found (is {root} a dataset folder with annotations/ and "
            f"images/, and is the split {split!r}?)",
        )
    data = read_json(ann_path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise BadInputError(ann_path, "", "not a COCO keypoint file: no 'images' list")
    anns = data.get("annotations", [])
    if not isinstance(anns, list):
        raise BadInputError(ann_path, "", "'annotations' must be a list")
    skeleton, num_keypoints = _limbs(data, ann_path)
    by_image: dict[int, list[dict]] = {}
    left_out: list[str] = []
    for i, a in enumerate(anns):
        why = _drawable(a, num_keypoints)
        if why or not isinstance(a.get("image_id"), int):
            left_out.append(f"annotation #{i}: {why or 'image_id is not an integer'}")
            continue
        by_image.setdefault(a["image_id"], []).append(a)
    if left_out:
        logger.warning(
            "%s: %d annotations not drawn (e.g. %s)",
            ann_path,
            len(left_out),
            "; ".join(left_out[:3]),
        )
    image_root = root / "images" / split
    tiles = []
    for n, rec in enumerate(data["images"][:num_images]):
        record = f"image id {rec.get('id')!r}" if isinstance(rec, dict) else f"image entry #{n}"
        if not isinstance(rec, dict):
            raise BadInputError(ann_path, record, "image entries must be objects")
        path = resolve_image_path(image_root, rec.get("file_name"), str(ann_path), record)
        if not path.is_file():
            raise BadInputError(
                ann_path, record, f"image file not found: {path} (searched under {image_root})"
            )
        img = cv2.imread(str(path))
        if img is None:
            raise BadInputError(path, record, "cannot decode image")
        if scale != 1.0:
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        rid = rec.get("id")
        here = by_image.get(rid, []) if isinstance(rid, int) else []
        tiles.append(draw_annotations(img, here, skeleton, scale))
    if not tiles:
        raise BadInputError(ann_path, "", "lists no images")
    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * (th + 2), columns * (tw + 2), 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[
            r * (th + 2) : r * (th + 2) + t.shape[0], c * (tw + 2) : c * (tw + 2) + t.shape[1]
        ] = t
    out_path = Path(out) if out is not None else root / f"contact_sheet_{split}.png"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out_path), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"could not write {out_path}")
    return out_path
