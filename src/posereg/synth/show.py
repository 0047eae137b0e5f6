"""Contact sheets of a COCO person-keypoints split with its labels drawn (``posereg data show``).

Per person: the skeleton through the (noisy) labels; labels as filled dots (v = 2) or rings
(v = 1); when the json carries ``keypoints_clean``, the clean point as a white dot joined to its
label; gross errors (``noise.outlier``) circled in red and swapped pairs joined in magenta; the
box from ``bbox``. Works on any COCO keypoint json; the extra synth fields are optional.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

__all__ = ["contact_sheet", "draw_annotations"]

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
        noise = a.get("noise", {})
        for k in noise.get("outlier", []):
            cv2.circle(img, _pt(kp[k], scale), 7, (0, 0, 255), 2, cv2.LINE_AA)
        for i, j in noise.get("swap", []):
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
        FileNotFoundError: the annotation file or an image is missing.
        ValueError: num_images, columns or scale is not positive.
    """
    if num_images < 1 or columns < 1 or scale <= 0:
        raise ValueError(
            f"num_images and columns must be >= 1 and scale > 0, got {num_images}, {columns}, {scale}"
        )
    root = Path(dataset_dir)
    ann_path = root / "annotations" / f"person_keypoints_{split}.json"
    if not ann_path.is_file():
        raise FileNotFoundError(
            f"no annotation file {ann_path} (is {root} a dataset folder, and is the split {split!r}?)"
        )
    data = json.loads(ann_path.read_text())
    skeleton = data["categories"][0].get("skeleton", [])
    by_image: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    tiles = []
    for rec in data["images"][:num_images]:
        path = root / "images" / split / rec["file_name"]
        img = cv2.imread(str(path))
        if img is None:
            raise FileNotFoundError(f"cannot read image {path} listed in {ann_path}")
        if scale != 1.0:
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        tiles.append(draw_annotations(img, by_image.get(rec["id"], []), skeleton, scale))
    if not tiles:
        raise ValueError(f"{ann_path} lists no images")
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
