"""Multi-person data: the synthetic ``multi`` preset and the image-level dataset
(posereg.data.multiperson), checked against the written COCO json read by pycocotools."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from posereg.skeletons import COCO17
from posereg.synth.generate import SynthConfig, generate

NUM_IMAGES = 6


@pytest.fixture(scope="module")
def multi_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny split of the multi preset: ``root/annotations/person_keypoints_train.json``."""
    root = tmp_path_factory.mktemp("multi")
    generate(
        root,
        "train",
        NUM_IMAGES,
        seed=3,
        config=SynthConfig.preset("multi"),
        num_workers=0,
        progress=False,
        preset="multi",
    )
    return root


def _ann_file(root: Path) -> Path:
    return root / "annotations" / "person_keypoints_train.json"


def test_multi_preset_writes_2_to_8_people_per_image_with_boxes_and_17_keypoints(
    multi_set: Path,
) -> None:
    cfg = SynthConfig.preset("multi")
    assert cfg.people_per_image == (2, 8) and cfg.image_size == (256, 256)
    coco = COCO(str(_ann_file(multi_set)))
    assert len(coco.getImgIds()) == NUM_IMAGES
    assert coco.loadCats(1)[0]["keypoints"] == list(COCO17.keypoint_names)
    counts = []
    for img in coco.loadImgs(coco.getImgIds()):
        assert (img["height"], img["width"]) == (256, 256)
        pixels = cv2.imread(str(multi_set / "images" / "train" / img["file_name"]))
        assert pixels.shape == (256, 256, 3)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        counts.append(len(anns))
        for a in anns:
            x, y, w, h = a["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 256 and y + h <= 256
            assert len(a["keypoints"]) == len(a["keypoints_clean"]) == 3 * 17
            assert a["iscrowd"] == 0
            v = np.asarray(a["keypoints"]).reshape(17, 3)[:, 2]
            assert a["num_keypoints"] == int((v > 0).sum())
    assert min(counts) >= 2 and max(counts) <= 8
    assert max(counts) > 3  # more than the medium preset's 1-3
    record = json.loads(
        (multi_set / "annotations" / "person_keypoints_train.settings.json").read_text()
    )
    assert record["preset"] == "multi"
    assert SynthConfig.from_dict(record["config"]) == cfg
