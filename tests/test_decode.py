"""One crop decoder, one depth codec, one COCO-results writer for evaluation and prediction
(posereg.decode, posereg.metrics.make_coco_predictions): the same model's ``posereg eval`` entries
and ``posereg predict`` entries for one real image and its boxes are the same, field by field."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from _real_data import real, tiny_checkpoint
from posereg.codecs import DecodedKeypoints
from posereg.data.dataset import TopDownDataset
from posereg.decode import decode_crops, root_relative_depth
from posereg.engine.evaluate import coco_results, predict_dataset
from posereg.models.build import model_from_checkpoint
from posereg.predict import Predictor, result_entries

IMAGE_ID = 785


def test_eval_entries_and_predict_entries_of_one_image_agree_field_by_field(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    model, cfg, _ = model_from_checkpoint(ckpt)
    dets_all = json.loads(real("coco", "test_coco_det_AP_H_56.json").read_text())
    dets = [d for d in dets_all if d["image_id"] == IMAGE_ID]
    assert len(dets) >= 10
    # evaluation with detection boxes: each entry's score has the box's score, as predict's
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, detections="dets.json"),
        eval=dataclasses.replace(cfg.eval, use_detections=True),
    )
    # evaluation crops (no augmentation), decoded at full size: the pixels predict crops from
    transform = dataclasses.replace(cfg.data.transform, augment=False, fast_decode=False)
    dataset = TopDownDataset.from_coco(
        real("coco", "test_coco.json"), real("coco"), input_size=tuple(cfg.data.input_size),
        transform=transform, detections=dets,
    )  # fmt: skip
    n = len(dataset)
    assert n == len(dets)
    preds = predict_dataset(model, dataset, torch.device("cpu"), n, cfg.eval.flip_test)
    evaluated = coco_results(preds, dataset, cfg)

    predictor = Predictor.from_checkpoint(ckpt, device="cpu", exif_orientation=False)
    table = dataset.table
    result = predictor(real("coco", f"{IMAGE_ID:012d}.jpg"), table.boxes, table.bbox_scores)
    predicted = result_entries(result, IMAGE_ID)

    assert len(evaluated) == len(predicted) == n
    for ev, pr in zip(evaluated, predicted, strict=True):
        # predict writes rounded (3 decimals), evaluation full precision (its AP unchanged)
        shared = {"image_id", "category_id", "keypoints", "score", "sigma"}
        assert shared <= set(ev) and shared <= set(pr)
        assert ev["image_id"] == pr["image_id"] == IMAGE_ID and ev["category_id"] == 1
        assert ev["score"] == pr["score"]  # box score + mean_k(c) + max_k(c), the same rule
        assert np.round(ev["keypoints"], 3).tolist() == pr["keypoints"]
        assert np.round(ev["sigma"], 3).tolist() == pr["sigma"]
    # not a trivial agreement: the people differ from each other
    kps = np.array([e["keypoints"] for e in evaluated])
    assert np.ptp(kps[:, 0::3].mean(1)) > 50  # px between the leftmost and rightmost person


def test_decode_crops_maps_to_pixels_and_makes_depth_root_relative_mm():
    # two crops; keypoints (u, v, d), K = 3, root joints (1, 2)
    kp = torch.tensor([[[0.0, 0.0, 0.3], [0.25, -0.5, 0.2], [-0.25, 0.5, 0.4]]] * 2)
    sigma = torch.full_like(kp, 0.1)
    dec = DecodedKeypoints(keypoints=kp, scores=1 - sigma.mean(-1), sigma=sigma)
    center = np.array([[100.0, 50.0], [10.0, 20.0]])
    scale = np.array([[40.0, 80.0], [4.0, 8.0]])
    poses = decode_crops(dec, center, scale, root=(1, 2), depth_range=2000.0)
    np.testing.assert_allclose(poses.keypoints[0], [[100, 50], [110, 10], [90, 90]], atol=1e-5)
    np.testing.assert_allclose(poses.keypoints[1], [[10, 20], [11, 16], [9, 24]], atol=1e-6)
    np.testing.assert_allclose(poses.sigma[0], [[4, 8]] * 3, atol=1e-5)
    np.testing.assert_allclose(poses.depth[0], [0.0, -200.0, 200.0], atol=1e-3)  # -0.3 root
    np.testing.assert_allclose(poses.depth_sigma, np.full((2, 3), 200.0), atol=1e-3)
    np.testing.assert_allclose(
        root_relative_depth(kp[..., 2].double().numpy(), (1, 2), 2000.0), poses.depth, atol=1e-3
    )
    with pytest.raises(ValueError, match="root joints"):
        decode_crops(dec, center, scale)
    flat = decode_crops(DecodedKeypoints(kp[..., :2], dec.scores), center, scale)
    assert flat.depth is None and flat.sigma is None and flat.depth_sigma is None
