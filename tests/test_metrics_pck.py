"""PCK / PCKh / AUC values, and the official MPII ground-truth .mat layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.io import savemat

from _real_data import real
from posereg.data.badinput import BadInputError
from posereg.data.mpii import load_mpii_instances
from posereg.metrics.pck import evaluate_mpii, head_size_from_joints, load_mpii_gt_mat, pck, pckh
from posereg.skeletons import MPII16


def shifted(target: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """target moved by the given distances (N, K) along a random direction per keypoint."""
    rng = np.random.default_rng(0)
    angle = rng.uniform(0, 2 * np.pi, distances.shape)
    return target + distances[..., None] * np.stack([np.cos(angle), np.sin(angle)], -1)


def test_pck_counts_visible_keypoints_within_the_threshold():
    target = np.zeros((2, 4, 2))
    ref = np.array([10.0, 20.0])
    dist = np.array([[0.0, 4.9, 4.99, 5.01], [9.0, 11.0, 0.0, 100.0]])  # normalized: /10, /20
    visible = np.array([[1, 1, 1, 1], [1, 1, 0, 1]], dtype=bool)
    res = pck(shifted(target, dist), target, visible, ref, 0.5)
    assert res.value == pytest.approx(4 / 7) and res.num_counted == 7
    np.testing.assert_allclose(res.per_joint, [1.0, 0.5, 1.0, 0.0])
    exact = pck(
        np.array([[[3.0, 4.0]]]), np.zeros((1, 1, 2)), np.ones((1, 1), bool), np.array([10.0]), 0.5
    )
    assert exact.value == 1.0  # a distance of exactly 0.5 x reference counts (<=, as MPII)


def test_pckh_and_auc_for_a_known_error_distribution():
    target = np.zeros((1, 100, 2))
    dist = np.full((1, 100), 2.45)  # every error = 0.245 head sizes
    res = pckh(shifted(target, dist), target, np.ones((1, 100), bool), np.array([10.0]))
    assert res.pckh_05 == 1.0 and res.pckh_01 == 0.0
    # PCKh(a) = 0 up to 0.24, 1 from 0.25: trapezoid on 0:0.01:0.5 -> (0.005 + 0.25) / 0.5
    assert res.auc == pytest.approx(0.51)
    perfect = pckh(target, target, np.ones((1, 100), bool), np.array([10.0]))
    assert perfect.auc == 1.0 and perfect.pckh_01 == 1.0


def write_gt_mat(path, keypoints_1based, missing, headboxes_1based):
    """The official gt_valid.mat layout: (16, N), (16, 2, N), (2, 2, N), (1, 16) names."""
    names = np.empty((1, 16), dtype=object)
    for i, name in enumerate(MPII16.keypoint_names):
        names[0, i] = np.array([name.replace("_", " ")])
    savemat(
        path,
        {
            "jnt_missing": missing.T.astype(np.uint8),
            "pos_gt_src": keypoints_1based.transpose(1, 2, 0),
            "headboxes_src": headboxes_1based.transpose(1, 2, 0),
            "dataset_joints": names,
        },
    )


def test_mpii_gt_mat_reader_and_pckh(tmp_path):
    table, _ = load_mpii_instances(real("mpii", "test_mpii.json"), real("mpii"))
    gt0 = table.keypoints[..., :2]  # 0-based
    n = len(gt0)
    missing = table.keypoints[..., 2] == 0
    top, neck = gt0[:, MPII16.index("head_top")], gt0[:, MPII16.index("upper_neck")]
    side = np.linalg.norm(top - neck, axis=-1)
    mid = (top + neck) / 2
    boxes0 = np.stack([mid - side[:, None] / 2, mid + side[:, None] / 2], 1)  # (N, 2 corners, xy)
    write_gt_mat(tmp_path / "gt_valid.mat", gt0 + 1.0, missing, boxes0 + 1.0)

    gt = load_mpii_gt_mat(tmp_path / "gt_valid.mat")
    np.testing.assert_allclose(gt.keypoints, gt0)
    np.testing.assert_array_equal(gt.missing, missing)
    np.testing.assert_allclose(gt.head_size, 0.6 * np.sqrt(2) * side)
    assert gt.joint_names[MPII16.index("head_top")] == "head top"

    # errors of 0.3 x head size for joints 0..7, 0.05 for the rest (visible ones only count)
    frac = np.where(np.arange(16) < 8, 0.3, 0.05)[None].repeat(n, 0)
    pred = shifted(gt0, frac * gt.head_size[:, None])
    res = evaluate_mpii(pred, gt=gt)
    visible = ~missing
    assert res.pckh_05 == 1.0
    assert res.pckh_01 == pytest.approx(visible[:, 8:].sum() / visible.sum())
    assert res.head_size_source == "headboxes"
    np.testing.assert_array_equal(res.per_joint_01[8:][visible[:, 8:].any(0)], 1.0)


def test_mpii_fallback_head_size_is_reported():
    table, _ = load_mpii_instances(real("mpii", "test_mpii.json"), real("mpii"))
    gt0, visible = table.keypoints[..., :2], table.keypoints[..., 2] > 0
    head = head_size_from_joints(gt0)
    entries = json.loads(real("mpii", "test_mpii.json").read_text())
    j = np.asarray(entries[0]["joints"])
    assert head[0] == pytest.approx(np.linalg.norm(j[9] - j[8]))
    res = evaluate_mpii(gt0, gt0, visible)
    assert res.pckh_05 == 1.0 and res.head_size_source == "joints"
    assert "not comparable" in str(res)


def test_bad_mat_is_a_clear_error(tmp_path):
    savemat(tmp_path / "bad.mat", {"jnt_missing": np.zeros((16, 3))})
    with pytest.raises(BadInputError, match=r"bad\.mat: missing fields \['pos_gt_src'"):
        load_mpii_gt_mat(tmp_path / "bad.mat")
    with pytest.raises(BadInputError, match="not found"):
        load_mpii_gt_mat(tmp_path / "absent.mat")
