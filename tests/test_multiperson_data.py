"""Multi-person data: the synthetic ``multi`` preset and the image-level dataset
(posereg.data.multiperson), checked against the written COCO json read by pycocotools."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from torchvision.transforms import v2

from _real_data import real
from posereg.config import ConfigError, MultiPersonDataConfig, MultiPersonTransformConfig
from posereg.data.badinput import BadInputError
from posereg.data.coco import load_coco_instances
from posereg.data.multiperson import (
    MultiPersonDataset,
    build_multiperson_loader,
    build_multiperson_transforms,
)
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


# ----------------------------------------------------------------------------------------------
# The dataset


def _coco(root: Path) -> COCO:
    return COCO(str(_ann_file(root)))


def _images(root: Path) -> Path:
    return root / "images" / "train"


def _variant(root: Path, tmp_path: Path, change) -> Path:
    """A copy of the json with ``change(data)`` applied (images stay in the fixture's folder)."""
    data = json.loads(_ann_file(root).read_text())
    change(data)
    path = tmp_path / "variant.json"
    path.write_text(json.dumps(data))
    return path


def _xyxy(bbox: list[float]) -> list[float]:
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def test_items_match_the_coco_json(multi_set: Path) -> None:
    coco = _coco(multi_set)
    ds = MultiPersonDataset.from_coco(_ann_file(multi_set), _images(multi_set))
    assert len(ds) == NUM_IMAGES
    for i in range(len(ds)):
        image, target = ds[i]
        img = coco.loadImgs(target["image_id"])[0]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        pixels = cv2.imread(str(_images(multi_set) / img["file_name"]))[:, :, ::-1]
        assert image.dtype == torch.float32 and image.shape == (3, 256, 256)
        np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), pixels / 255.0, atol=1e-6)
        assert target["labels"].tolist() == [1] * len(anns)
        np.testing.assert_allclose(target["boxes"].numpy(), [_xyxy(a["bbox"]) for a in anns])
        expected = np.array([a["keypoints"] for a in anns]).reshape(-1, 17, 3)
        np.testing.assert_allclose(target["keypoints"].numpy(), expected, atol=1e-4)
        assert target["crowd_boxes"].shape == (0, 4)


def test_flip_maps_the_left_wrist_to_the_mirrored_right_wrist(multi_set: Path) -> None:
    coco = _coco(multi_set)
    flip_only = MultiPersonTransformConfig(
        augment=True, flip_prob=1.0, scale=(1.0, 1.0), translate=0.0
    )
    ds = MultiPersonDataset.from_coco(_ann_file(multi_set), _images(multi_set), transform=flip_only)
    plain = MultiPersonDataset.from_coco(_ann_file(multi_set), _images(multi_set))
    left_wrist, right_wrist = COCO17.index("left_wrist"), COCO17.index("right_wrist")
    checked = 0
    for i in range(len(ds)):
        image, target = ds[i]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=target["image_id"]))
        for a, kpts, box in zip(anns, target["keypoints"], target["boxes"], strict=True):
            x, y, v = a["keypoints"][3 * right_wrist : 3 * right_wrist + 3]
            if v > 0:  # mirrored in a 256-wide image: x -> 255 - x, and now the left wrist
                assert kpts[left_wrist].tolist() == pytest.approx([255.0 - x, y, v], abs=1e-4)
                checked += 1
            bx, by, bw, bh = a["bbox"]  # box edges on pixel borders: x1 -> 256 - x2
            assert box.tolist() == pytest.approx([256.0 - bx - bw, by, 256.0 - bx, by + bh])
        np.testing.assert_array_equal(image.numpy(), plain[i][0].flip(-1).numpy())
    assert checked >= 5


def test_crowd_annotations_are_not_targets_but_crowd_boxes(multi_set: Path, tmp_path: Path) -> None:
    def add_crowd(data: dict) -> None:
        data["annotations"][0]["iscrowd"] = 1  # a person of image 1 becomes a crowd region
        data["annotations"][0]["bbox"] = [10.0, 20.0, 300.0, 40.0]  # clipped to the image

    ann = _variant(multi_set, tmp_path, add_crowd)
    coco = COCO(str(ann))
    ds = MultiPersonDataset.from_coco(ann, _images(multi_set))
    _, target = ds[0]
    people = coco.loadAnns(coco.getAnnIds(imgIds=1, iscrowd=False))
    assert target["image_id"] == 1 and len(target["boxes"]) == len(people)
    np.testing.assert_allclose(target["boxes"].numpy(), [_xyxy(a["bbox"]) for a in people])
    assert target["crowd_boxes"].tolist() == [[10.0, 20.0, 256.0, 60.0]]
    assert ds.report.adjustments()["crowd annotation kept as an ignore region"] == 1


def test_a_person_with_no_labelled_keypoint_is_a_box_only_target_with_one_warning(
    multi_set: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def unlabel(data: dict) -> None:
        for a in data["annotations"][:2]:
            a["keypoints"] = [0] * 51
            a["num_keypoints"] = 0

    ann = _variant(multi_set, tmp_path, unlabel)
    with caplog.at_level("WARNING", logger="posereg.data"):
        ds = MultiPersonDataset.from_coco(ann, _images(multi_set))
    _, target = ds[0]
    assert target["keypoints"][:2].abs().sum() == 0 and len(target["boxes"]) >= 2
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "no labelled keypoint, kept as a box-only target: 2" in warnings[0]


def test_images_without_people_are_kept_unless_asked(multi_set: Path, tmp_path: Path) -> None:
    ann = _variant(
        multi_set,
        tmp_path,
        lambda d: d.update(annotations=[a for a in d["annotations"] if a["image_id"] != 2]),
    )
    ds = MultiPersonDataset.from_coco(ann, _images(multi_set))
    assert len(ds) == NUM_IMAGES
    _, target = ds[1]
    assert target["image_id"] == 2 and target["boxes"].shape == (0, 4)
    assert target["keypoints"].shape == (0, 17, 3) and target["labels"].shape == (0,)
    dropped = MultiPersonDataset.from_coco(ann, _images(multi_set), keep_empty_images=False)
    assert len(dropped) == NUM_IMAGES - 1 and 2 not in [dropped[i][1]["image_id"] for i in range(5)]
    assert dropped.report.counts() == {"image without people left out": 1}


def test_a_corrupt_image_is_one_message_naming_the_file(multi_set: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for f in _images(multi_set).iterdir():
        (images / f.name).write_bytes(f.read_bytes())
    bad = images / "000000000002.jpg"
    bad.write_bytes(bad.read_bytes()[:600])  # truncated
    ds = MultiPersonDataset.from_coco(_ann_file(multi_set), images)
    ds[0]
    with pytest.raises(BadInputError) as info:
        ds[1]
    assert info.value.file == str(bad) and info.value.record == "image id 2 (000000000002.jpg)"
    assert "JPEG" in info.value.problem and "\n" not in str(info.value)


def test_a_wrong_field_is_one_message_naming_the_file_and_key(
    multi_set: Path, tmp_path: Path
) -> None:
    with pytest.raises(BadInputError) as info:
        MultiPersonDataset.from_coco(
            _ann_file(multi_set), _images(multi_set), keypoints_field="keypoints_21"
        )
    assert info.value.file == str(_ann_file(multi_set))
    assert "no annotation has a 'keypoints_21' field" in str(info.value)

    first = json.loads(_ann_file(multi_set).read_text())["annotations"][0]
    ann = _variant(multi_set, tmp_path, lambda d: d["annotations"][0].update(keypoints=[1.0] * 50))
    with pytest.raises(BadInputError) as info:
        MultiPersonDataset.from_coco(ann, _images(multi_set), strict=True)
    assert info.value.file == str(ann)
    assert info.value.record == f"annotation id {first['id']} (image id {first['image_id']})"
    assert "wrong keypoint length" in info.value.problem
    # not strict: a counted skip, and its image is left out whole (its person is not background)
    ds = MultiPersonDataset.from_coco(ann, _images(multi_set))
    assert len(ds) == NUM_IMAGES - 1
    assert first["image_id"] not in [ds[i][1]["image_id"] for i in range(len(ds))]
    assert ds.report.counts() == {
        "wrong keypoint length": 1,
        "image left out: a person record of it was skipped": 1,
    }


def test_boxes_outside_the_image_are_dropped_with_a_count(multi_set: Path, tmp_path: Path) -> None:
    # in the json: a box wholly outside the image is a counted skip, its image kept
    ann = _variant(
        multi_set, tmp_path, lambda d: d["annotations"][0].update(bbox=[300.0, 10.0, 20.0, 20.0])
    )
    ds = MultiPersonDataset.from_coco(ann, _images(multi_set))
    assert len(ds) == NUM_IMAGES and ds.report.counts() == {"box outside the image": 1}

    # after a transform: the people whose box leaves the 64 x 64 centre crop are sanitized away
    coco = _coco(multi_set)
    table, report = load_coco_instances(
        _ann_file(multi_set), _images(multi_set), COCO17, skip_unlabelled=False, keep_crowd=True
    )
    crop = MultiPersonDataset(table, COCO17, transforms=v2.CenterCrop(64), report=report)
    expected = {"people": 0, "crowd regions": 0}
    for i in range(len(crop)):
        _, target = crop[i]
        inside = []
        for a in coco.loadAnns(coco.getAnnIds(imgIds=target["image_id"])):
            x1, y1, x2, y2 = (np.clip(c - 96.0, 0.0, 64.0) for c in _xyxy(a["bbox"]))
            if x2 - x1 >= 1 and y2 - y1 >= 1:
                inside.append([x1, y1, x2, y2])
            else:
                expected["people"] += 1
        np.testing.assert_allclose(
            target["boxes"].numpy().reshape(-1, 4), np.reshape(inside, (-1, 4))
        )
        kpts = target["keypoints"]
        labelled = kpts[..., 2] > 0
        assert ((kpts[..., :2] >= 0) & (kpts[..., :2] <= 64)).all(-1)[labelled].all()
    assert expected["people"] > 0 and crop.dropped == expected


def test_loader_batches_lists_of_images_and_targets(multi_set: Path) -> None:
    config = MultiPersonDataConfig(
        train_ann=str(_ann_file(multi_set)),
        train_images=str(_images(multi_set)),
        workers=0,
        transform=MultiPersonTransformConfig(augment=True, rotation_deg=20.0, max_size=128),
    )
    torch.manual_seed(0)
    images, targets = next(iter(build_multiperson_loader(config, "train", batch_size=4)))
    assert len(images) == len(targets) == 4
    for image, target in zip(images, targets, strict=True):
        assert image.shape == (3, 128, 128) and 0.0 <= image.min() and image.max() <= 1.0
        n = len(target["boxes"])
        assert target["labels"].shape == (n,) and target["keypoints"].shape == (n, 17, 3)
        b = target["boxes"]
        assert ((b >= 0) & (b <= 128)).all() and (b[:, 2:] > b[:, :2]).all()


def test_real_coco_images_give_all_their_people_and_the_unlabelled_ones_as_boxes() -> None:
    """The COCO val2017 fixtures: 4 photos of other sizes, 14 people, 2 of them unlabelled."""
    ann = real("coco", "test_coco.json")
    coco = COCO(str(ann))
    flip = MultiPersonTransformConfig(augment=True, flip_prob=1.0, scale=(1.0, 1.0), translate=0.0)
    ds = MultiPersonDataset.from_coco(ann, ann.parent, transform=flip)
    assert len(ds) == 4
    assert ds.report.adjustments() == {"no labelled keypoint, kept as a box-only target": 2}
    for i in range(len(ds)):
        image, target = ds[i]
        img = coco.loadImgs(target["image_id"])[0]
        assert image.shape == (3, img["height"], img["width"])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        expected = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(-1, 17, 3)
        mirrored = expected[:, COCO17.flip_index]
        mirrored[..., 0] = np.where(mirrored[..., 2] > 0, img["width"] - 1 - mirrored[..., 0], 0)
        np.testing.assert_allclose(target["keypoints"].numpy(), mirrored, atol=1e-3)
        assert len(target["boxes"]) == len(anns)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"flip_prob": 1.5}, "flip_prob: 1.5 is out of range; allowed: in [0, 1]"),
        ({"scale": (1.2, 0.8)}, "scale must be (min, max) with min <= max, got (1.2, 0.8)"),
        ({"max_size": 0}, "max_size: 0 is out of range; allowed: >= 1"),
    ],
)
def test_bad_augmentation_settings_are_config_errors_naming_the_key(
    settings: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_multiperson_transforms(MultiPersonTransformConfig(**settings), COCO17)
