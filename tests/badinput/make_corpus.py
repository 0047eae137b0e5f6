"""Regenerate the bad-input corpus in this folder from a real COCO fixture photo.

    python tests/badinput/make_corpus.py

Each file is one case of the bad-input policy (docs/data.md); tests/test_data_badinput.py
states what posereg must do with it. The files are committed; this script documents how they
were made.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
REAL = HERE.parents[1] / "src" / "posereg" / "samples" / "coco"
K = 17


def write_json(name: str, data: object) -> None:
    # allow_nan writes the NaN / Infinity literals Python's json reads back
    (HERE / name).write_text(json.dumps(data, allow_nan=True, indent=1))


def coco(images: list[dict], annotations: list[dict]) -> dict:
    cats = [{"id": 1, "name": "person", "keypoints": [f"k{i}" for i in range(K)]}]
    return {"images": images, "annotations": annotations, "categories": cats}


def image(iid: int = 1, file_name: str = "ok.jpg", h: int = 96, w: int = 64) -> dict:
    return {"id": iid, "file_name": file_name, "height": h, "width": w}


def ann(aid: int, iid: int = 1, **changes) -> dict:
    xs = np.linspace(12, 50, K).round(1)
    ys = np.linspace(10, 85, K).round(1)
    kpts = np.stack([xs, ys, np.full(K, 2.0)], 1).ravel().tolist()
    out = {
        "id": aid,
        "image_id": iid,
        "category_id": 1,
        "iscrowd": 0,
        "bbox": [8.0, 6.0, 48.0, 84.0],
        "area": 3000.0,
        "num_keypoints": K,
        "keypoints": kpts,
    }
    out.update(changes)
    return out


def kpts_with(index: int, value: list[float]) -> list[float]:
    k = ann(0)["keypoints"]
    k[3 * index : 3 * index + 3] = value
    return k


def main() -> None:
    photo = cv2.imread(str(REAL / "000000000785.jpg"))
    crop = photo[40:136, 300:364]  # 96 x 64: a person's head and shoulders
    cv2.imwrite(str(HERE / "ok.jpg"), crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
    data = (HERE / "ok.jpg").read_bytes()
    (HERE / "truncated.jpg").write_bytes(data[: int(len(data) * 0.6)])
    scan = data.rfind(b"\xff\xda")  # start of scan: cut entropy-coded data, keep the end marker
    (HERE / "corrupt.jpg").write_bytes(data[: scan + 200] + data[scan + 800 :])
    (HERE / "not_an_image.jpg").write_text("this is not an image\n")
    (HERE / "empty.jpg").write_bytes(b"")
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(HERE / "grey.png"), grey)
    cv2.imwrite(str(HERE / "grey.jpg"), grey, [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(str(HERE / "grey16.png"), grey.astype(np.uint16) * 257)
    rgba = np.dstack([crop, np.full(grey.shape, 128, np.uint8)])
    cv2.imwrite(str(HERE / "rgba.png"), rgba)
    Image.fromarray(crop[..., ::-1]).convert("P", palette=Image.Palette.ADAPTIVE).save(
        HERE / "palette.png"
    )

    good = ann(1)
    write_json("ok.json", coco([image()], [good]))
    write_json(
        "wrong_length.json", coco([image()], [good, ann(2, keypoints=ann(0)["keypoints"][:48])])
    )
    write_json(
        "nan_keypoint.json",
        coco([image()], [good, ann(2, keypoints=kpts_with(5, [float("nan"), 30.0, 2]))]),
    )
    write_json(
        "inf_keypoint.json",
        coco([image()], [good, ann(2, keypoints=kpts_with(7, [20.0, float("inf"), 2]))]),
    )
    write_json(
        "negative_coordinate.json",
        coco([image()], [good, ann(2, keypoints=kpts_with(9, [-4.0, 30.0, 2]))]),
    )
    write_json(
        "bad_visibility.json",
        coco([image()], [good, ann(2, keypoints=kpts_with(3, [20.0, 30.0, 3]))]),
    )
    write_json("zero_area_box.json", coco([image()], [good, ann(2, bbox=[10.0, 10.0, 0.0, 40.0])]))
    write_json("negative_box.json", coco([image()], [good, ann(2, bbox=[10.0, 10.0, 30.0, -5.0])]))
    write_json("duplicate_image_id.json", coco([image(), image(1, "grey.jpg")], [good]))
    write_json("duplicate_ann_id.json", coco([image()], [good, ann(1)]))
    write_json("unknown_image_id.json", coco([image()], [good, ann(2, iid=99)]))
    write_json(
        "path_escape.json",
        coco([image(1, "../badinput/ok.jpg"), image(2, "../../etc/passwd")], [good]),
    )
    write_json("absolute_path.json", coco([image(1, "/etc/passwd")], [good]))
    write_json("missing_file.json", coco([image(), image(2, "missing.jpg")], [good, ann(2, iid=2)]))
    write_json("empty_dataset.json", coco([image()], []))
    write_json(
        "all_unlabelled.json", coco([image()], [ann(1, keypoints=[0.0] * (3 * K), num_keypoints=0)])
    )
    (HERE / "not_json.json").write_text('{"images": [ {"id": 1, \n')
    write_json("truncated_image.json", coco([image(1, "truncated.jpg")], [good]))
    write_json("corrupt_image.json", coco([image(1, "corrupt.jpg")], [good]))
    write_json("not_an_image.json", coco([image(1, "not_an_image.jpg")], [good]))
    write_json("empty_image.json", coco([image(1, "empty.jpg")], [good]))
    write_json("size_mismatch.json", coco([image(1, "ok.jpg", h=480, w=640)], [good]))
    write_json(
        "modes.json",
        coco(
            [
                image(i + 1, f)
                for i, f in enumerate(
                    ("grey.png", "grey.jpg", "grey16.png", "rgba.png", "palette.png")
                )
            ],
            [ann(i + 1, iid=i + 1) for i in range(5)],
        ),
    )
    mpii_ok = {
        "image": "ok.jpg",
        "joints": [[20.0, 10.0 + 4 * j] for j in range(16)],
        "joints_vis": [1] * 16,
        "center": [33.0, 45.0],
        "scale": 0.4,
    }
    write_json("mpii_wrong_length.json", [mpii_ok, {**mpii_ok, "joints": mpii_ok["joints"][:15]}])
    write_json("mpii_bad_scale.json", [mpii_ok, {**mpii_ok, "scale": 0}])
    shutil.rmtree(HERE / "__pycache__", ignore_errors=True)


if __name__ == "__main__":
    main()
