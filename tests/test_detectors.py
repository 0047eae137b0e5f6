"""The ``--detector`` choices (posereg.detect): each torchvision detector builds without weights
(nothing downloads), loads a state dict file, and gives person boxes in posereg's format
((x, y, w, h) pixels of the image given, best first) on a real photo; a missing weights file and
a bad name are one message each."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from _real_data import real
from posereg.cli import main
from posereg.detect import COCO_DETECTORS, PERSON, PersonDetector, build_detector


def _favour_person(model: torch.nn.Module) -> None:
    """Random weights find no one: raise the person logit of the classifier so that the boxes
    (random, but the architecture's own) come out as people."""
    with torch.no_grad():
        if hasattr(model, "roi_heads"):  # Faster R-CNN: (91,) class logits
            model.roi_heads.box_predictor.cls_score.bias[PERSON] = 8.0
        else:  # SSDlite: per feature map, (anchors x 91) logits, anchor-major
            for branch in model.head.classification_head.module_list:
                branch[-1].bias.view(-1, 91)[:, PERSON] = 8.0


@pytest.mark.parametrize("name", COCO_DETECTORS)
def test_each_detector_builds_without_weights_and_finds_boxes_on_a_photo(tmp_path, name):
    image = cv2.imread(str(real("coco", "000000000785.jpg")))  # (425, 640, 3) BGR
    height, width = image.shape[:2]
    torch.manual_seed(0)
    model = build_detector(name, score_threshold=0.3)
    _favour_person(model)
    torch.save(model.state_dict(), tmp_path / "detector.pth")  # as torchvision's files are

    detector = PersonDetector(name, tmp_path / "detector.pth", score_threshold=0.3)
    raw: list[dict[str, torch.Tensor]] = []
    detector.model.register_forward_hook(lambda module, args, out: raw.extend(out))
    found = detector(image)

    # the model's own person detections (one forward pass), converted here to (x, y, w, h)
    (out,) = raw
    keep = (out["labels"] == PERSON) & (out["scores"] >= 0.3)
    xyxy = out["boxes"][keep].double().numpy()
    expected = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    expected = expected[(expected[:, 2:] >= 1).all(axis=1)]
    assert len(found.boxes) > 0
    assert found.boxes.shape == (len(expected), 4) and found.boxes.dtype == np.float64
    assert np.all(np.diff(found.scores) <= 0) and np.all(found.scores >= 0.3)
    order = np.lexsort((expected[:, 1], expected[:, 0]))
    mine = np.lexsort((found.boxes[:, 1], found.boxes[:, 0]))
    np.testing.assert_allclose(found.boxes[mine], expected[order], atol=1e-4)
    # pixels of the image given (not the detector's 320 or 800 pixel input)
    x, y, w, h = found.boxes.T
    assert np.all(x >= 0) and np.all(y >= 0) and np.all(w >= 1) and np.all(h >= 1)
    assert np.all(x + w <= width + 1e-3) and np.all(y + h <= height + 1e-3)
    assert (x + w).max() > 0.6 * width and (y + h).max() > 0.6 * height

    # untrained() with the same seed builds the same weights (the benchmark's detectors)
    again = PersonDetector.untrained(name, score_threshold=0.3, seed=0).model.state_dict()
    loaded = detector.model.state_dict()
    assert again.keys() == loaded.keys()
    for key, value in again.items():  # all but the person logits that _favour_person raised
        if not key.endswith("bias") or (
            "cls_score" not in key and "classification_head" not in key
        ):
            assert torch.equal(value, loaded[key]), key


@pytest.mark.parametrize("name", COCO_DETECTORS)
def test_missing_weights_name_the_cache_file_the_command_and_the_flag(tmp_path, monkeypatch, name):
    from torchvision.models import detection

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))  # an empty torchvision cache
    builder = "fasterrcnn_resnet50_fpn" if name == "fasterrcnn" else name
    files = {
        "fasterrcnn": "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth",
        "fasterrcnn_mobilenet_v3_large_fpn": "fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth",
        "fasterrcnn_mobilenet_v3_large_320_fpn": "fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth",
        "ssdlite320_mobilenet_v3_large": "ssdlite320_mobilenet_v3_large_coco-a79551df.pth",
    }
    expected = tmp_path / "empty" / "hub" / "checkpoints" / files[name]
    with pytest.raises(FileNotFoundError) as e:
        PersonDetector(name)
    message = str(e.value)
    assert f"no weights for the {name} detector at {expected} (torchvision's cache)" in message
    assert f"torchvision.models.detection.{builder}(weights='DEFAULT')" in message
    assert "--detector-weights FILE" in message
    assert hasattr(detection, builder)
    with pytest.raises(FileNotFoundError, match=f"at {tmp_path / 'nope.pth'}\\. posereg never"):
        PersonDetector(name, tmp_path / "nope.pth")


def test_a_bad_detector_name_is_one_line_listing_the_valid_ones(tmp_path, capsys):
    image = real("coco", "000000000785.jpg")
    code = main(["predict", str(image), "--checkpoint", str(tmp_path / "any.pt"), "--detector",
                 "yolo", "--out", str(tmp_path / "out")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert err == (
        "posereg predict: error: --detector 'yolo': expected one of fasterrcnn, "
        "fasterrcnn_mobilenet_v3_large_fpn, fasterrcnn_mobilenet_v3_large_320_fpn, "
        "ssdlite320_mobilenet_v3_large, fasterrcnn_resnet18_fpn_w0.5\n"
    )
    assert not Path(tmp_path / "out").exists()
    with pytest.raises(ValueError, match="unknown detector 'yolo'; valid: fasterrcnn, "):
        PersonDetector("yolo")  # type: ignore[arg-type]
