"""COCO OKS AP through pycocotools: exactness against COCOeval run directly, OKS-NMS, scores."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from _real_data import real
from posereg.codecs import RegressionCodec
from posereg.data import TopDownDataset, collate, crop_to_image
from posereg.data.badinput import BadInputError
from posereg.metrics.coco import (
    evaluate_coco,
    evaluate_coco_reports,
    instance_score,
    make_coco_predictions,
    match_by_box,
    oks,
    oks_nms,
    oks_nms_per_image,
)
from posereg.models.heads import flip_back_coordinates
from posereg.skeletons import COCO17


@pytest.fixture(scope="module")
def gt_json():
    return json.loads(real("coco", "test_coco.json").read_text())


def labels_as_predictions(gt: dict) -> list[dict]:
    return [
        {
            "image_id": a["image_id"],
            "category_id": 1,
            "keypoints": list(a["keypoints"]),
            "score": 1.0,
        }
        for a in gt["annotations"]
        if a["num_keypoints"] > 0
    ]


def perturbed(gt: dict, seed: int, magnitude: float) -> list[dict]:
    """Seeded shifts, dropped instances and keypoints, varied scores."""
    rng = np.random.default_rng(seed)
    preds = []
    for p in labels_as_predictions(gt):
        if rng.random() < 0.15:
            continue  # a missed person
        kp = np.asarray(p["keypoints"], dtype=float).reshape(-1, 3)
        kp[:, :2] += rng.normal(0.0, magnitude, (len(kp), 2))
        kp[rng.random(len(kp)) < 0.1, :2] = 0.0  # a few wildly wrong keypoints
        kp[:, 2] = rng.uniform(0.1, 1.0, len(kp))
        preds.append(
            {**p, "keypoints": kp.ravel().tolist(), "score": float(rng.uniform(0.05, 1.0))}
        )
        if rng.random() < 0.3:  # a duplicate, shifted
            dup = kp.copy()
            dup[:, :2] += rng.normal(0.0, 4 * magnitude, dup[:, :2].shape)
            preds.append(
                {**p, "keypoints": dup.ravel().tolist(), "score": float(rng.uniform(0.0, 0.5))}
            )
    return preds


def cocoeval_directly(ann_file, preds: list[dict], sigmas=None) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(ann_file))
        coco_dt = coco_gt.loadRes(copy.deepcopy(preds))
        ev = COCOeval(coco_gt, coco_dt, "keypoints")
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_labels_as_predictions_give_ap_one(gt_json):
    result = evaluate_coco(real("coco", "test_coco.json"), labels_as_predictions(gt_json))
    assert result.ap == 1.0 and result.ap50 == 1.0 and result.ap75 == 1.0 and result.ar == 1.0
    assert result.truth == "labels" and result.num_predictions == 12


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("magnitude", [1.0, 4.0, 12.0])
def test_ap_equals_cocoeval_run_directly(gt_json, seed, magnitude):
    preds = perturbed(gt_json, seed, magnitude)
    ours = evaluate_coco(real("coco", "test_coco.json"), preds)
    ref = cocoeval_directly(real("coco", "test_coco.json"), preds)
    np.testing.assert_allclose(ours.stats, ref[:10], rtol=0, atol=1e-9)
    assert 0.0 < ours.ap < 1.0


def test_custom_sigmas_are_used(gt_json):
    preds = perturbed(gt_json, 5, 4.0)
    wide = np.full(17, 0.2)
    ours = evaluate_coco(real("coco", "test_coco.json"), preds, sigmas=wide)
    np.testing.assert_allclose(
        ours.stats, cocoeval_directly(real("coco", "test_coco.json"), preds, wide)[:10], atol=1e-9
    )
    assert ours.ap > evaluate_coco(real("coco", "test_coco.json"), preds).ap


def test_faster_coco_eval_gives_identical_numbers(gt_json):
    pytest.importorskip("faster_coco_eval")
    for seed in range(3):
        preds = perturbed(gt_json, seed, 6.0)
        a = evaluate_coco(real("coco", "test_coco.json"), preds)
        b = evaluate_coco(real("coco", "test_coco.json"), preds, backend="faster_coco_eval")
        np.testing.assert_allclose(a.stats, b.stats, rtol=0, atol=1e-12)
        assert b.backend == "faster_coco_eval"


def test_predictions_are_not_mutated(gt_json):
    preds = perturbed(gt_json, 0, 2.0)
    before = copy.deepcopy(preds)
    evaluate_coco(gt_json, preds)
    assert preds == before


def test_clean_truth_is_a_second_report(gt_json):
    """Labels = truth + noise: predicting the truth is perfect against keypoints_clean only."""
    rng = np.random.default_rng(0)
    gt = copy.deepcopy(gt_json)
    truth = []
    for a in gt["annotations"]:
        kp = np.asarray(a["keypoints"], dtype=float).reshape(-1, 3)
        a["keypoints_clean"] = kp.ravel().tolist()
        noisy = kp.copy()
        noisy[:, :2] += np.where(kp[:, 2:] > 0, rng.normal(0, 6.0, kp[:, :2].shape), 0.0)
        a["keypoints"] = noisy.ravel().tolist()
        if a["num_keypoints"] > 0:
            truth.append(
                {
                    "image_id": a["image_id"],
                    "category_id": 1,
                    "keypoints": kp.ravel().tolist(),
                    "score": 1.0,
                }
            )
    reports = evaluate_coco_reports(gt, truth)
    assert set(reports) == {"labels", "clean"}
    assert reports["clean"].ap == 1.0 and reports["clean"].truth == "clean"
    assert reports["labels"].ap < 0.9
    assert evaluate_coco_reports(gt_json, truth).keys() == {"labels"}
    with pytest.raises(BadInputError, match="have no keypoints_clean"):
        evaluate_coco(gt_json, truth, use_clean=True)


def test_wrong_prediction_length_is_a_clear_error(gt_json):
    preds = labels_as_predictions(gt_json)
    preds[3]["keypoints"] = preds[3]["keypoints"][:48]
    with pytest.raises(
        ValueError, match=r"prediction #3 \(image id \d+\) has 48 keypoint values, expected 51"
    ):
        evaluate_coco(gt_json, preds)
    with pytest.raises(ValueError, match="no predictions"):
        evaluate_coco(gt_json, [])


def test_oks_matches_cocoeval_compute_oks(gt_json):
    preds = perturbed(gt_json, 7, 5.0)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(real("coco", "test_coco.json")))
        coco_dt = coco_gt.loadRes(copy.deepcopy(preds))
        ev = COCOeval(coco_gt, coco_dt, "keypoints")
        ev.evaluate()
    image_id = preds[0]["image_id"]
    ious = ev.ious[(image_id, 1)]  # (dets sorted by score, gts)
    dts = sorted(coco_dt.loadAnns(coco_dt.getAnnIds(imgIds=image_id)), key=lambda d: -d["score"])
    gts = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=image_id))
    for j, g in enumerate(gts):
        gk = np.asarray(g["keypoints"], float).reshape(17, 3)
        if not (gk[:, 2] > 0).any():
            continue
        d = np.array([np.asarray(x["keypoints"], float).reshape(17, 3) for x in dts])
        ours = oks(gk, d, g["area"], COCO17.sigmas, visible=gk[:, 2] > 0)
        np.testing.assert_allclose(ours, ious[:, j], atol=1e-12)


def test_oks_nms_keeps_the_best_of_each_cluster():
    rng = np.random.default_rng(0)
    base = np.concatenate([rng.uniform(0, 200, (17, 2)), np.ones((17, 1))], 1)
    other = base.copy()
    other[:, 0] += 300
    near = base.copy()
    near[:, :2] += 0.5
    poses = np.stack([near, base, other])
    keep = oks_nms(poses, np.array([0.5, 0.9, 0.3]), np.full(3, 100.0**2))
    np.testing.assert_array_equal(keep, [1, 2])  # 'near' duplicates 'base' (OKS > 0.9)
    keep = oks_nms(poses, np.array([0.5, 0.9, 0.3]), np.full(3, 100.0**2), threshold=1.0)
    np.testing.assert_array_equal(keep, [1, 0, 2])
    preds = make_coco_predictions(
        [7, 7, 8], poses[..., :2], poses[..., 2], np.array([0.5, 0.9, 0.3]), np.full(3, 1e4)
    )
    kept = oks_nms_per_image(preds)
    assert [(p["image_id"], round(p["score"], 6)) for p in kept] == [(7, 2.9), (8, 2.3)]


def test_instance_score_rules():
    c = np.array([[0.1, 0.5, 0.9], [0.3, 0.3, 0.3]])
    box = np.array([0.8, 0.4])
    np.testing.assert_allclose(instance_score(c, box), [0.8 + 0.5 + 0.9, 0.4 + 0.3 + 0.3])
    np.testing.assert_allclose(instance_score(c), [0.5 + 0.9, 0.3 + 0.3])
    np.testing.assert_allclose(instance_score(c, box, "mean"), [0.5, 0.3])
    np.testing.assert_allclose(instance_score(c, box, "box_times_mean"), [0.8 * 0.7, 0.4 * 0.3])
    np.testing.assert_allclose(instance_score(c, box, "box"), box)
    with pytest.raises(ValueError, match="valid: official, mean, box_times_mean, box"):
        instance_score(c, box, "max")


def test_pipeline_end_to_end_perfect_predictions_give_ap_one():
    """Dataset targets -> (flip test) -> crop_to_image -> COCO results -> AP: the whole path."""
    ds = TopDownDataset.from_coco(real("coco", "test_coco.json"), real("coco"))
    batch = collate([ds[i] for i in range(len(ds))])
    pred = batch.target.double()  # a perfect regressor
    # what the same regressor says on the pixel-mirrored crop: x -> W - 1 - x, pairs swapped
    mirrored = pred[:, COCO17.flip_index].clone()
    mirrored[..., 0] = -mirrored[..., 0] - 1.0 / 192
    pred = 0.5 * (pred + flip_back_coordinates(mirrored, COCO17.flip_index, 192))
    decoded = RegressionCodec((256, 192)).decode(pred, sigma=torch.full_like(pred, 0.1))
    xy = crop_to_image(decoded.keypoints.numpy(), batch.center, batch.scale)
    preds = make_coco_predictions(
        batch.image_id, xy, decoded.scores.numpy(), areas=batch.scale.prod(axis=1)
    )
    assert preds[0]["score"] == pytest.approx(0.9 + 0.9)  # official rule with GT boxes
    result = evaluate_coco(real("coco", "test_coco.json"), oks_nms_per_image(preds))
    assert result.ap == 1.0 and result.ar == 1.0


@pytest.mark.parametrize("pred_category", [1, 7])
def test_a_person_category_with_another_id_is_scored(gt_json, tmp_path, pred_category):
    """posereg predicts people only: its predictions (category_id 1) are scored against the
    file's person category whatever its id, not left unmatched at AP 0."""
    gt = copy.deepcopy(gt_json)
    for cat in gt["categories"]:
        cat["id"] = 7
    for ann in gt["annotations"]:
        ann["category_id"] = 7
    path = tmp_path / "person_is_7.json"
    path.write_text(json.dumps(gt))
    preds = [{**p, "category_id": pred_category} for p in labels_as_predictions(gt_json)]
    result = evaluate_coco(path, preds)
    assert result.ap == 1.0 and result.ar == 1.0


def test_match_by_box_takes_best_scored_first_and_each_truth_once():
    truth = np.array([[10.0, 10.0, 40.0, 80.0], [150.0, 10.0, 40.0, 80.0]])  # x y w h
    labelled = np.array([True, True])
    near_a = [11.0, 11.0, 40.0, 80.0]  # IoU ~0.93 with a
    also_a = [14.0, 12.0, 40.0, 80.0]  # IoU ~0.78 with a: lower scored, a is taken first
    far = [400.0, 400.0, 40.0, 80.0]
    boxes = np.array([also_a, near_a, far])
    assert match_by_box(boxes, np.array([0.2, 0.9, 0.5]), truth, labelled) == [(1, 0)]
    # the lower-scored one gets a once the better one is gone
    assert match_by_box(boxes[[0, 2]], np.array([0.2, 0.5]), truth, labelled) == [(0, 0)]
    # b matched too when a box sits on it
    both = np.array([near_a, [149.0, 10.0, 40.0, 80.0]])
    assert sorted(match_by_box(both, np.array([0.9, 0.8]), truth, labelled)) == [(0, 0), (1, 1)]
    # IoU 0.5 is the threshold: a box half the width of a's (IoU 0.5) matches, a narrower not
    half = np.array([[10.0, 10.0, 20.0, 80.0]])
    assert match_by_box(half, np.array([1.0]), truth, labelled) == [(0, 0)]
    assert match_by_box(half - [0, 0, 1, 0], np.array([1.0]), truth, labelled) == []


def test_match_by_box_never_matches_a_truth_without_labelled_keypoint():
    truth = np.array([[10.0, 10.0, 40.0, 80.0]])
    pairs = match_by_box(truth.copy(), np.array([1.0]), truth, np.array([False]))
    assert pairs == []
