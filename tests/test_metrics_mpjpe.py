"""3D metrics: MPJPE, PA-MPJPE (similarity Procrustes without reflections), N-MPJPE, PCK, AUC."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from posereg.metrics.mpjpe import (
    auc_3d,
    evaluate_3d,
    mpjpe,
    n_mpjpe,
    pa_mpjpe,
    pck_3d,
    procrustes_align,
)


def _poses(n=5, k=17, seed=0):
    return np.random.default_rng(seed).normal(0.0, 300.0, (n, k, 3))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pa_mpjpe_of_a_rotated_scaled_translated_copy_is_zero(seed):
    rng = np.random.default_rng(seed)
    target = _poses(seed=seed)
    rot = Rotation.random(len(target), random_state=seed).as_matrix()
    scale = rng.uniform(0.3, 3.0, len(target))
    shift = rng.normal(0.0, 1000.0, (len(target), 1, 3))
    pred = scale[:, None, None] * np.einsum("nij,nkj->nki", rot, target) + shift
    assert mpjpe(pred, target) > 100.0
    assert pa_mpjpe(pred, target) == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(procrustes_align(pred, target), target, atol=1e-6)


def test_pa_mpjpe_of_a_mirror_image_is_not_zero():
    target = _poses()
    mirror = target * np.array([-1.0, 1.0, 1.0])  # a reflection: no rotation reaches it
    assert pa_mpjpe(mirror, target) > 50.0
    # a rotated mirror image too (the SVD's best orthogonal fit is a reflection there)
    rot = Rotation.from_euler("z", 40, degrees=True).as_matrix()
    assert pa_mpjpe(mirror @ rot.T, target) > 50.0
    # the aligned prediction is a proper similarity of the input: distances keep their ratios
    aligned = procrustes_align(mirror, target)
    ratio = np.linalg.norm(aligned[:, 0] - aligned[:, 1], axis=-1) / np.linalg.norm(
        mirror[:, 0] - mirror[:, 1], axis=-1
    )
    other = np.linalg.norm(aligned[:, 2] - aligned[:, 5], axis=-1) / np.linalg.norm(
        mirror[:, 2] - mirror[:, 5], axis=-1
    )
    np.testing.assert_allclose(ratio, other, rtol=1e-9)


def test_pa_mpjpe_is_at_most_mpjpe_and_n_mpjpe_is_between():
    target = _poses(n=50, seed=3)
    pred = target + np.random.default_rng(4).normal(0.0, 40.0, target.shape)
    assert pa_mpjpe(pred, target) <= n_mpjpe(pred, target) + 1e-9
    assert n_mpjpe(pred, target) <= mpjpe(pred, target) + 1e-9


def test_mpjpe_of_known_offsets_equals_the_offset():
    target = _poses()
    direction = np.random.default_rng(1).normal(size=(5, 17, 3))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    assert mpjpe(target + 37.5 * direction, target) == pytest.approx(37.5, rel=1e-12)
    offsets = np.arange(17, dtype=float)  # joint k off by k mm along x
    pred = target + offsets[None, :, None] * np.array([1.0, 0.0, 0.0])
    assert mpjpe(pred, target) == pytest.approx(offsets.mean())
    m = evaluate_3d(pred, target, joint_names=tuple(f"j{k}" for k in range(17)))
    assert m.per_joint["j5"] == pytest.approx(5.0)
    assert m.mpjpe == pytest.approx(8.0)


def test_n_mpjpe_removes_a_global_scale_only():
    target = _poses()
    assert n_mpjpe(1.7 * target, target) == pytest.approx(0.0, abs=1e-9)
    rot = Rotation.from_euler("y", 30, degrees=True).as_matrix()
    assert n_mpjpe(target @ rot.T, target) > 10.0


def test_pck_and_auc_count_joints_below_thresholds():
    errors = np.array([[0.0, 10.0, 149.0, 151.0]])
    assert pck_3d(errors) == 0.75
    # AUC: thresholds 0, 5, ..., 150; an error e counts at every threshold > e
    expected = np.mean([(errors < t).mean() for t in np.linspace(0, 150, 31)])
    assert auc_3d(errors) == pytest.approx(expected)
    assert auc_3d(np.zeros((2, 3))) == pytest.approx(30 / 31)  # 0 < 0 fails at threshold 0


def test_per_action_breakdown():
    target = _poses(n=4)
    pred = target.copy()
    pred[2:] += np.array([0.0, 0.0, 20.0])
    m = evaluate_3d(pred, target, actions=["Walk", "Walk", "Sit", "Sit"])
    assert m.per_action["Walk"] == (0.0, pytest.approx(0.0, abs=1e-9))
    assert m.per_action["Sit"][0] == pytest.approx(20.0)
    assert m.per_action["Sit"][1] == pytest.approx(0.0, abs=1e-9)  # a translation aligns away


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"\(N, K, 3\)"):
        mpjpe(np.zeros((2, 17, 2)), np.zeros((2, 17, 2)))
