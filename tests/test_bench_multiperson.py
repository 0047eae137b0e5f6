"""benchmarks/bench_multiperson.py's pure parts on hand-made inputs: the OKS matching, the region
coverage, the summary (deltas, dense latency ratio, winners) and the tables (no training: the
trainings are the benchmark's)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_multiperson as bm  # noqa: E402

K = 17


def _person(x: float, y: float, v: int = 2) -> np.ndarray:
    """(K, 3) a pose spread over 40 x 80 px at (x, y), every keypoint with code v."""
    rng = np.random.default_rng(0)
    kp = np.stack([x + rng.uniform(0, 40, K), y + rng.uniform(0, 80, K), np.full(K, v)], -1)
    return kp


def test_keypoint_error_in_person_units_over_labelled_keypoints():
    truth = np.zeros((2, K, 3))
    truth[..., 2] = 2
    truth[1, :5, 2] = 0  # five unlabelled: not counted
    mu = np.zeros((2, K, 2))
    mu[0, :, 0] = 3.0  # 3 px / sqrt(900) = 0.1
    mu[1, :, 1] = 8.0  # 8 px / sqrt(1600) = 0.2
    err = bm.keypoint_error(mu, truth, np.array([900.0, 1600.0]))
    assert err.shape == (2 * K - 5,)
    np.testing.assert_allclose(np.sort(err), [0.1] * K + [0.2] * (K - 5))


def test_region_hits_uses_each_axis_semi_axis():
    mu = np.full((1, K, 2), 10.0)
    region = np.tile(np.array([2.0, 1.0]), (1, K, 1))  # a_x 2, a_y 1
    truth = np.zeros((1, K, 3))
    truth[..., :2] = 10.0
    truth[..., 2] = 2
    truth[0, 0, :2] = (11.9, 10.0)  # inside along x
    truth[0, 1, :2] = (10.0, 11.5)  # outside along y (inside if the axes were swapped)
    truth[0, 2, :2] = (11.5, 10.6)  # 0.75^2 + 0.6^2 = 0.92: inside
    truth[0, 3, :2] = (11.7, 10.7)  # 0.85^2 + 0.7^2 = 1.21: outside
    truth[0, 4, :2] = (7.0, 10.0)  # -1.5 along x: outside
    inside, v = bm.region_hits(mu, region, truth)
    assert inside[0, :5].tolist() == [True, False, True, False, False]
    assert inside[0, 5:].all() and (v == 2).all()


def test_region_coverage_counts_labelled_and_visible_separately():
    inside = np.array([True, True, False, True, False, True])
    v = np.array([2, 2, 2, 1, 1, 0])  # the v = 0 keypoint is counted nowhere
    cov = bm.region_coverage(inside, v)
    assert cov["labelled_n"] == 5 and cov["visible_n"] == 3
    assert math.isclose(cov["labelled"], 3 / 5) and math.isclose(cov["visible"], 2 / 3)
    assert math.isclose(cov["visible_se"], math.sqrt(2 / 3 * 1 / 3 / 3))
    empty = bm.region_coverage(np.zeros(0, bool), np.zeros(0))
    assert math.isnan(empty["labelled"]) and empty["labelled_n"] == 0


def _row(ap: float, cov: float | None = None) -> dict:
    return {
        "ap_clean": ap,
        "ap_labels": ap - 0.1,
        "found": 0.9,
        "err_sqrt_area": 1.0 - ap,
        "coverage": None if cov is None else {"labelled": cov, "visible": cov - 0.05},
    }


def _per_seed() -> dict:
    return {
        "dense_rle": {0: _row(0.50, 0.88), 1: _row(0.40, 0.92)},
        "dense_l1": {0: _row(0.45), 1: _row(0.50)},
        "kprcnn_rle": {0: _row(0.30, 0.80)},
        "kprcnn_heatmap": {0: _row(0.35), 1: _row(0.9)},  # seed 1 has no RLE run: left out
        "topdown": {0: _row(0.60, 0.9), 1: _row(0.60, 0.9)},
    }


def _latency(dense8: float) -> dict:
    return {
        "topdown": {1: {"ms": 40.0, "found": 1}, 4: {"ms": 90.0, "found": 4},
                    8: {"ms": 160.0, "found": 8}},
        "kprcnn": {1: {"ms": 100.0, "found": 1}, 4: {"ms": 104.0, "found": 4},
                   8: {"ms": 108.0, "found": 8}},
        "dense": {1: {"ms": 50.0, "found": 1}, 4: {"ms": 51.0, "found": 4},
                  8: {"ms": dense8, "found": 8}},
    }  # fmt: skip


def test_summary_means_deltas_ratio_and_winners():
    s = bm.summarize(_per_seed(), _latency(52.0))
    assert math.isclose(s["arms"]["dense_rle"]["ap_clean"], 0.45)
    assert math.isclose(s["arms"]["dense_rle"]["coverage_labelled"], 0.90)
    assert math.isnan(s["arms"]["dense_l1"]["coverage_labelled"])  # L1 learns no density
    d = s["deltas"]["dense_rle - dense_l1"]
    assert math.isclose(d["per_seed"][0], 0.05) and math.isclose(d["per_seed"][1], -0.10)
    assert math.isclose(d["mean"], -0.025)
    assert math.isclose(d["err_per_seed"][0], -0.05) and math.isclose(d["err_per_seed"][1], 0.10)
    assert math.isclose(d["err_mean"], 0.025)
    assert math.isclose(s["arms"]["dense_rle"]["err_sqrt_area"], 0.55)
    assert math.isclose(s["arms"]["dense_rle"]["found"], 0.9)
    k = s["deltas"]["kprcnn_rle - kprcnn_heatmap"]
    assert list(k["per_seed"]) == [0] and math.isclose(k["mean"], -0.05)
    assert "dense_rle - dense_oks" not in s["deltas"]  # no oks arm
    assert math.isclose(s["dense_ratio"], 52.0 / 50.0) and s["dense_goal_holds"] is True
    assert s["wins"] == {
        "AP (clean truth)": "topdown",
        "latency, 1 people": "topdown",
        "latency, 4 people": "dense",
        "latency, 8 people": "dense",
    }
    slow = bm.summarize(_per_seed(), _latency(60.0))
    assert math.isclose(slow["dense_ratio"], 1.2) and slow["dense_goal_holds"] is False


def test_summary_reports_a_tie_and_no_latency():
    per_seed = {"dense_rle": {0: _row(0.0)}, "kprcnn_rle": {0: _row(0.0)}}
    s = bm.summarize(per_seed, None)
    assert s["wins"] == {"AP (clean truth)": "tie: kprcnn, dense"}
    # a tie at the table's precision: 0.0002 and 0.0001 both show as 0.000
    per_seed = {"dense_rle": {0: _row(0.0002)}, "kprcnn_rle": {0: _row(0.0001)}}
    assert bm.summarize(per_seed, None)["wins"] == {"AP (clean truth)": "tie: kprcnn, dense"}
    per_seed["kprcnn_rle"] = {0: _row(0.0016)}  # 0.002 beats 0.000
    assert bm.summarize(per_seed, None)["wins"] == {"AP (clean truth)": "kprcnn"}
    assert s["dense_ratio"] is None and s["dense_goal_holds"] is None


def test_markdown_tables_show_every_number():
    text = bm.markdown_tables(bm.summarize(_per_seed(), _latency(60.0)))
    lines = text.splitlines()
    row = next(line for line in lines if line.startswith("| dense_rle |"))
    assert row == "| dense_rle | 2 | 0.450 | 0.350 | 0.900 | 0.5500 | 0.900 (0.850) |"
    assert next(line for line in lines if line.startswith("| dense_l1 |")).endswith("| - |")
    delta = next(line for line in lines if line.startswith("| dense_rle - dense_l1 |"))
    assert delta == "| dense_rle - dense_l1 | +0.050 | -0.100 | -0.025 |"
    err = [line for line in lines if line.startswith("| dense_rle - dense_l1 |")][1]
    assert err == "| dense_rle - dense_l1 | -0.0500 | +0.1000 | +0.0250 |"
    k = next(line for line in lines if line.startswith("| kprcnn_rle - kprcnn_heatmap |"))
    assert k == "| kprcnn_rle - kprcnn_heatmap | -0.050 | - | -0.050 |"
    dense = next(line for line in lines if line.startswith("| dense |"))
    assert dense == "| dense | 50.0 (1) | 51.0 (4) | 60.0 (8) | 1.20x |"
    assert "| topdown | 40.0 (1) | 90.0 (4) | 160.0 (8) | 4.00x |" in lines
    assert "Dense latency 8 vs 1 people: 1.20x (goal <= 1.10x): does not hold." in lines


def test_tables_and_latency_curves_from_the_json_file(tmp_path):
    """``--from-json``: the JSON the script writes (latency keyed by strings) gives the same
    tables as the summary it came from, and ``--plot`` a PNG of the curves."""
    import json

    summary = bm.summarize(_per_seed(), _latency(60.0))
    on_disk = {**summary, "latency": {p: {str(n): r for n, r in rows.items()}
                                      for p, rows in summary["latency"].items()}}  # fmt: skip
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(on_disk))
    assert bm.markdown_tables(bm._from_json(path)) == bm.markdown_tables(summary)
    png = tmp_path / "curves" / "latency.png"
    bm.main(["--from-json", str(path), "--plot", str(png)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width = matplotlib.image.imread(png).shape[:2]
    assert (width, height) == (600, 408)  # 5.0 x 3.4 in at 120 dpi


def test_overrides_give_every_arm_the_same_budget():
    import argparse

    args = argparse.Namespace(steps=600, batch_size=4, num_train=1000, num_val=200)
    for arm in bm.ARMS:
        sets = bm.arm_overrides(arm, 2, args, crops=4900)
        assert "train.batch_size=4" in sets and "train.seed=2" in sets
        if arm.pipeline == "topdown":
            # 600 x 4 = 2400 crops of 4900: one epoch, stopped at 600 steps
            assert "train.max_steps=600" in sets and "train.epochs=1" in sets
            assert "eval.flip_test=false" in sets
        else:
            assert "train.steps=600" in sets


def _coco_json(path: Path, people: dict[int, list[np.ndarray]], offset: float) -> Path:
    """A COCO person_keypoints json: per image its people's clean truth (K, 3); the labels are
    the clean truth shifted by ``offset`` px in x."""
    import json

    images, anns = [], []
    for image_id, poses in people.items():
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 256, "height": 256})
        for clean in poses:
            noisy = clean.copy()
            noisy[:, 0] += np.where(clean[:, 2] > 0, offset, 0.0)
            x, y = clean[:, 0].min(), clean[:, 1].min()
            anns.append({
                "id": len(anns) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                "bbox": [float(x), float(y), 40.0, 80.0], "area": 3200.0,
                "num_keypoints": int((clean[:, 2] > 0).sum()),
                "keypoints": noisy.reshape(-1).tolist(),
                "keypoints_clean": clean.reshape(-1).tolist(),
            })  # fmt: skip
    from posereg.skeletons import COCO17

    cat = {"id": 1, "name": "person", "keypoints": list(COCO17.keypoint_names), "skeleton": []}
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [cat]}))
    return path


def _result(keypoints: np.ndarray, region: np.ndarray | None, scores: list[float]):
    """A PoseResult whose boxes are (min x, min y, 40, 80) of its keypoints: the truth's box
    (_coco_json) for keypoints on the truth."""
    from posereg.result import PoseResult

    n = len(keypoints)
    boxes = np.concatenate([keypoints.min(axis=1), np.tile([40.0, 80.0], (n, 1))], axis=1)
    region_p = None if region is None else 0.9
    return PoseResult(keypoints, np.ones_like(keypoints), np.full((n, K), 0.9), boxes,
                      np.asarray(scores, dtype=float), region, region_p)  # fmt: skip


def test_score_predictions_on_a_real_coco_json(tmp_path):
    a, b, c = _person(10, 10), _person(150, 10), _person(60, 120)
    b[15] = 0.0  # unlabelled: counted nowhere
    b[16, 2] = 1  # labelled, occluded: in "labelled" only
    ann = _coco_json(tmp_path / "val.json", {1: [a, b], 2: [c]}, offset=3.0)
    shift = np.array([0.5, 0.0])  # every prediction 0.5 px right of the clean truth
    small = np.tile(np.array([1.0, 1.0]), (K, 1))
    small[8:] = (0.25, 1.0)  # keypoints 8-16: the 0.5 px lies outside a 0.25 px semi-axis
    far = a[:, :2] + 300.0  # a spurious person, scored last: matches nobody
    r1 = _result(np.stack([a[:, :2] + shift, b[:, :2] + shift, far]),
                 np.stack([small, small, small]), [0.9, 0.8, 0.1])  # fmt: skip
    r2 = _result((c[:, :2] + shift)[None], np.full((1, K, 2), 5.0), [0.7])
    out = bm.score_predictions(ann, [1, 2], [r1, r2])
    assert out["people_predicted"] == 4
    assert out["ap_clean"] > 0.99  # every person found, the spurious one ranked last
    assert out["ap_labels"] < out["ap_clean"] - 0.1  # 3 px from the labels
    assert out["people"] == 3 and out["found"] == 1.0
    assert math.isclose(out["err_sqrt_area"], 0.5 / math.sqrt(3200.0))
    cov = out["coverage"]
    assert cov["matched_people"] == 3
    # a: 17 labelled, 8 inside; b: 16 labelled (15 visible), 8 inside; c: 17, all inside
    assert cov["labelled_n"] == 50 and math.isclose(cov["labelled"], 33 / 50)
    assert cov["visible_n"] == 49 and math.isclose(cov["visible"], 33 / 49)
    no_region = _result(c[None, :, :2], None, [0.7])
    assert bm.score_predictions(ann, [2], [no_region])["coverage"] is None


def test_saved_results_are_scored_the_same(tmp_path):
    """evaluate_arm's predictions file: the PoseResults come back as they were (people per
    image, regions, an image without people) and give the same scores."""
    a, b, c = _person(10, 10), _person(150, 10), _person(60, 120)
    ann = _coco_json(tmp_path / "val.json", {1: [a, b], 2: [c], 3: []}, offset=3.0)
    r1 = _result(np.stack([a[:, :2] + 1.0, b[:, :2]]), np.full((2, K, 2), 2.0), [0.9, 0.4])
    r2 = _result((c[:, :2] - 2.0)[None], np.full((1, K, 2), 1.0), [0.7])
    r3 = _result(np.zeros((0, K, 2)), np.zeros((0, K, 2)), [])
    path = tmp_path / "bench_predictions.npz"
    bm.save_results(path, [1, 2, 3], [r1, r2, r3])
    ids, back = bm.load_results(path)
    assert ids == [1, 2, 3] and [len(r.scores) for r in back] == [2, 1, 0]
    for x, y in zip([r1, r2, r3], back, strict=True):
        for name in ("keypoints", "confidence", "boxes", "scores", "sigma", "region"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name))
        assert y.region_p == 0.9
    assert bm.score_predictions(ann, ids, back) == bm.score_predictions(
        ann, [1, 2, 3], [r1, r2, r3]
    )
    bm.save_results(path, [2], [_result((c[:, :2])[None], None, [0.7])])  # no regions
    _, (only,) = bm.load_results(path)
    assert only.region is None and only.region_p is None
