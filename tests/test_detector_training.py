"""Training a person detector (posereg.engine.detector) and loading it as ``--detector-weights``
(posereg.detect): a tiny Faster R-CNN on the half-width ResNet-18 FPN overfits three stick-figure
images, its checkpoint round-trips through PersonDetector and ``posereg predict``, and a
checkpoint of another kind given as detector weights is one message naming the file."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from _real_data import tiny_checkpoint
from posereg.checkpoint import load_checkpoint
from posereg.cli import main
from posereg.data.multiperson import MultiPersonDataset
from posereg.detect import PersonDetector
from posereg.engine.detector import DetectorTrainConfig, evaluate_detector, train_detector
from posereg.metrics.coco import evaluate_coco_boxes
from posereg.skeletons import COCO17
from posereg.synth.sticks import draw_sticks, stick_people

NAME = "fasterrcnn_resnet18_fpn_w0.5"
# 128 x 128 images, no resize; people 50-80 px tall; a narrow FPN and box head; few RoIs.
TINY = {
    "min_size": 128,
    "max_size": 128,
    "anchor_sizes": (16, 32, 64, 128, 256),
    "fpn_channels": 32,
    "box_representation": 128,
    "box_batch_size_per_image": 32,
    "rpn_pre_nms_top_n_train": 200,
    "rpn_post_nms_top_n_train": 100,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50,
}
SCENES = [
    [(40.0, 60.0, 70.0)],
    [(30.0, 64.0, 60.0), (90.0, 60.0, 80.0)],
    [(25.0, 70.0, 50.0), (64.0, 60.0, 70.0), (104.0, 66.0, 60.0)],
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """50 AdamW steps on 3 stick-figure images (1, 2 and 3 people), saved to disk."""
    targets = [stick_people(specs, seed=i) for i, specs in enumerate(SCENES)]
    images = [draw_sticks((128, 128), t) for t in targets]
    config = DetectorTrainConfig(NAME, dict(TINY), steps=50, lr=2e-3, warmup_steps=5)
    out = tmp_path_factory.mktemp("det") / "detector.pt"
    result = train_detector([(images, targets)], config, out)
    return result, images, targets


def _bgr(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) RGB in [0, 1] -> (H, W, 3) uint8 BGR, as cv2.imread gives (exact: the stick
    images are uint8 / 255)."""
    return np.ascontiguousarray((image * 255).round().byte().permute(1, 2, 0).numpy()[..., ::-1])


def test_a_tiny_detector_overfits_three_images_and_loads_through_detect(trained):
    # Bound: every person found by a detection scored > 0.5 with IoU > 0.5, at most one spurious
    # detection per image, after 50 steps (about 5 s on one CPU thread); the loss falls.
    result, images, targets = trained
    assert np.mean(result.losses[-5:]) < 0.5 * np.mean(result.losses[:5]), result.losses
    state = load_checkpoint(result.checkpoint)
    assert state["detector"] == {"name": NAME, "num_classes": 2, "options": TINY}
    assert state["step"] == 50

    detector = PersonDetector(NAME, result.checkpoint, score_threshold=0.5)
    for key, value in result.model.state_dict().items():  # the weights that were trained
        assert torch.equal(detector.model.state_dict()[key], value), key
    for image, target in zip(images, targets, strict=True):
        found = detector(_bgr(image))  # (N, 4) x, y, w, h, best first
        xyxy = torch.from_numpy(found.boxes).float()
        xyxy[:, 2:] += xyxy[:, :2]
        assert np.all(found.scores > 0.5)
        iou = box_iou(target["boxes"], xyxy)  # (G, N)
        assert iou.shape[1] >= len(target["boxes"]), f"people missed: {found.scores}"
        assert (iou.max(dim=1).values > 0.5).all(), iou
        assert len(found.boxes) <= len(target["boxes"]) + 1, "more than one spurious detection"


def test_posereg_predict_uses_the_trained_detector(tmp_path, trained):
    result, images, _ = trained
    cv2.imwrite(str(tmp_path / "three.png"), _bgr(images[2]))
    pose = tiny_checkpoint(tmp_path / "pose.pt")
    code = main(["predict", str(tmp_path / "three.png"), "--checkpoint", str(pose), "--detector",
                 NAME, "--detector-weights", str(result.checkpoint), "--no-draw", "--out",
                 str(tmp_path / "out")])  # fmt: skip
    assert code == 0
    entries = json.loads((tmp_path / "out" / "predictions.json").read_text())
    found = PersonDetector(NAME, result.checkpoint, 0.5)(_bgr(images[2]))
    assert len(entries) == len(found.boxes) >= 3
    np.testing.assert_allclose([e["bbox"] for e in entries], found.boxes, atol=0.01)


def test_a_checkpoint_of_another_kind_as_detector_weights_is_one_message_naming_it(
    tmp_path, trained, capsys
):
    result, images, _ = trained
    cv2.imwrite(str(tmp_path / "one.png"), _bgr(images[0]))
    pose = tiny_checkpoint(tmp_path / "pose.pt")

    def predict(detector: str, weights) -> str:
        code = main(["predict", str(tmp_path / "one.png"), "--checkpoint", str(pose),
                     "--detector", detector, "--detector-weights", str(weights), "--out",
                     str(tmp_path / "out")])  # fmt: skip
        assert code != 0
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        return err

    # a pose model's checkpoint
    err = predict(NAME, pose)
    assert f"{pose}: a posereg checkpoint without a detector" in err
    # the trained detector given as another architecture
    err = predict("fasterrcnn_mobilenet_v3_large_320_fpn", result.checkpoint)
    assert (
        f"{result.checkpoint}: a checkpoint of the {NAME} detector, not of "
        f"fasterrcnn_mobilenet_v3_large_320_fpn: pass --detector {NAME}"
    ) in err
    # a torchvision-style state dict (91 COCO classes) of this architecture: shapes differ
    from posereg.detect import build_detector

    torch.save(build_detector(NAME, num_classes=91, **TINY).state_dict(), tmp_path / "coco.pth")
    err = predict(NAME, tmp_path / "coco.pth")
    assert f"{tmp_path / 'coco.pth'}: not a fasterrcnn_resnet18_fpn_w05 state dict" in err
    assert not (tmp_path / "out").exists()

    with pytest.raises(FileNotFoundError, match=f"the {NAME} detector has no COCO weights: train"):
        PersonDetector(NAME)


def _coco_files(root, images, targets) -> tuple:
    """The stick images as PNGs and their people as a COCO person_keypoints json."""
    (root / "images").mkdir()
    coco = {
        "images": [],
        "annotations": [],
        "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17.keypoint_names),
                        "skeleton": [[a + 1, b + 1] for a, b in COCO17.limbs]}],
    }  # fmt: skip
    for i, (image, target) in enumerate(zip(images, targets, strict=True), start=1):
        cv2.imwrite(str(root / "images" / f"{i}.png"), _bgr(image))
        coco["images"].append({"id": i, "file_name": f"{i}.png", "width": 128, "height": 128})
        for box, kp in zip(target["boxes"].tolist(), target["keypoints"].tolist(), strict=True):
            x1, y1, x2, y2 = box
            coco["annotations"].append(
                {"id": len(coco["annotations"]) + 1, "image_id": i, "category_id": 1,
                 "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                 "iscrowd": 0, "keypoints": [v for p in kp for v in p], "num_keypoints": 17}
            )  # fmt: skip
    path = root / "people.json"
    path.write_text(json.dumps(coco))
    return path, root / "images", coco


def test_box_ap_is_cocoeval_on_the_truth_a_shifted_truth_and_the_overfit_detector(
    tmp_path, trained
):
    result, images, targets = trained
    ann, image_dir, coco = _coco_files(tmp_path, images, targets)
    truth = [
        {"image_id": a["image_id"], "bbox": a["bbox"], "score": 1.0} for a in coco["annotations"]
    ]
    assert evaluate_coco_boxes(ann, truth).ap == pytest.approx(1.0)
    # every box moved right by 0.3 of its width: IoU 0.7 / 1.3 = 0.54, a hit at the IoU
    # threshold .50 only of the ten .50:.05:.95, so AP = 1 / 10
    shifted = [{**d, "bbox": [d["bbox"][0] + 0.3 * d["bbox"][2], *d["bbox"][1:]]} for d in truth]
    moved = evaluate_coco_boxes(ann, shifted)
    assert (moved.ap50, moved.ap75, moved.ap) == pytest.approx((1.0, 0.0, 0.1))
    none = evaluate_coco_boxes(ann, [])
    assert (none.ap, none.num_detections) == (0.0, 0)
    with pytest.raises(ValueError, match=r"image ids \[9\] that the ground truth does not have"):
        evaluate_coco_boxes(ann, [{**truth[0], "image_id": 9}])

    # the overfit detector on the same images read back through MultiPersonDataset
    dataset = MultiPersonDataset.from_coco(ann, image_dir)
    found = evaluate_detector(result.model, dataset, ann)
    assert found.ap50 >= 0.9 and found.num_detections >= 6, found


def test_the_default_options_are_the_small_ones_for_posereg_s_detector_only():
    from posereg.engine.detector import SMALL_DETECTOR_OPTIONS

    assert DetectorTrainConfig().options == SMALL_DETECTOR_OPTIONS
    assert DetectorTrainConfig("fasterrcnn_mobilenet_v3_large_320_fpn").options == {}
    with pytest.raises(ValueError, match="unknown detector 'yolo'"):
        DetectorTrainConfig("yolo")  # type: ignore[arg-type]
