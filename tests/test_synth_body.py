"""The kinematic body model: rigid bones, anatomical limits, left/right, floor contact."""

from __future__ import annotations

import numpy as np
import pytest

from posereg.skeletons import COCO17, H36M17, MPII16, Skeleton
from posereg.synth import body as B


def _mirror(angles: np.ndarray) -> np.ndarray:
    """Swap left and right DOFs and negate the trunk's and neck's side bend and twist."""
    names = B.DOF_NAMES
    out = np.empty_like(angles)
    for i, n in enumerate(names):
        other = {"l_": "r_", "r_": "l_"}.get(n[:2], n[:2]) + n[2:]
        sign = -1.0 if n[:2] not in ("l_", "r_") and n.endswith(("_side", "_twist")) else 1.0
        out[:, names.index(other)] = sign * angles[:, i]
    return out


def test_forward_kinematics_keeps_bone_lengths() -> None:
    rng = np.random.default_rng(0)
    _, _, offsets = B.sample_shapes(rng, 500)
    angles, _ = B.sample_angles(rng, 500, tuple(B.POSE_CLASSES), 1.5)
    root = B._rot(2, rng.uniform(0, 360, 500))
    joints, _ = B.forward_kinematics(offsets, B._local_rotations(angles), root)
    for j in range(1, B.NUM_JOINTS):
        bone = np.linalg.norm(joints[:, j] - joints[:, B.PARENTS[j]], axis=1)
        np.testing.assert_allclose(bone, np.linalg.norm(offsets[:, j], axis=1), rtol=1e-9)


@pytest.mark.parametrize("pose_class", list(B.POSE_CLASSES))
def test_sampled_angles_stay_within_anatomical_limits(pose_class: str) -> None:
    angles, cls = B.sample_angles(np.random.default_rng(1), 2000, (pose_class,), 2.0)
    for i, name in enumerate(B.DOF_NAMES):
        lo, hi = B.DOF_LIMITS[name]
        assert angles[:, i].min() >= lo and angles[:, i].max() <= hi, name
    assert np.all(cls == list(B.POSE_CLASSES).index(pose_class))
    # Poses are diverse: every DOF that the class moves varies.
    assert angles.std(axis=0).max() > 5.0


def test_mirrored_angles_give_the_mirror_image() -> None:
    rng = np.random.default_rng(2)
    _, _, offsets = B.sample_shapes(rng, 200)
    names = B.JOINT_NAMES
    swap = [
        names.index(n.replace("left", "right") if "left" in n else n.replace("right", "left"))
        for n in names
    ]
    sym = offsets[:, swap] * np.array([-1.0, 1.0, 1.0])  # a left/right symmetric body
    offsets = 0.5 * (offsets + sym)
    angles, _ = B.sample_angles(rng, 200, tuple(B.POSE_CLASSES), 1.0)
    eye = np.broadcast_to(np.eye(3), (200, 3, 3))
    a, _ = B.forward_kinematics(offsets, B._local_rotations(angles), eye)
    b, _ = B.forward_kinematics(offsets, B._local_rotations(_mirror(angles)), eye)
    np.testing.assert_allclose(b, a[:, swap] * np.array([-1.0, 1.0, 1.0]), atol=1e-6)


def test_rest_pose_faces_forward_with_left_on_minus_x() -> None:
    _, _, offsets = B.sample_shapes(np.random.default_rng(3), 1)
    joints, _ = B.forward_kinematics(
        offsets, B._local_rotations(np.zeros((1, B.NUM_DOFS))), np.eye(3)[None]
    )
    j = {n: joints[0, i] for i, n in enumerate(B.JOINT_NAMES)}
    for part in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle", "eye", "ear"):
        assert j[f"left_{part}"][0] < 0 < j[f"right_{part}"][0]
    assert j["nose"][1] > j["head"][1] and j["left_toe"][1] > j["left_ankle"][1]  # facing +y
    assert j["head_top"][2] > j["head"][2] > j["neck"][2] > j["thorax"][2] > j["pelvis"][2]
    assert j["pelvis"][2] > j["left_knee"][2] > j["left_ankle"][2]
    # Elbow flexion brings the forearm forward; knee flexion folds the shin backward.
    angles = np.zeros((1, B.NUM_DOFS))
    angles[0, B.DOF_NAMES.index("l_elbow")] = 90.0
    angles[0, B.DOF_NAMES.index("l_knee")] = 90.0
    bent, _ = B.forward_kinematics(offsets, B._local_rotations(angles), np.eye(3)[None])
    i = B.joint_index
    assert bent[0, i("left_wrist"), 1] - bent[0, i("left_elbow"), 1] > 0.9 * 0.15 * 1450
    assert bent[0, i("left_ankle"), 1] - bent[0, i("left_knee"), 1] < -0.9 * 0.25 * 1450


def test_people_stand_on_the_floor_at_their_height() -> None:
    bodies = B.sample_bodies(np.random.default_rng(4), 400, ("standing",), 0.5)
    z = bodies.joints[..., 2]
    assert z.min() >= 0.0
    # The lowest body surface touches the floor; the head top is about the stature.
    surface = z - B.CLEARANCE[None] * bodies.height[:, None]
    np.testing.assert_allclose(surface.min(axis=1), 0.0, atol=1e-6)
    toes = [B.joint_index("left_toe"), B.joint_index("right_toe")]
    assert np.mean(np.argmin(surface, axis=1)[:, None] == toes) > 0.4  # mostly on the toes
    top = z[:, B.joint_index("head_top")]
    # (Segment lengths vary independently by a few percent, so the stature does too.)
    np.testing.assert_allclose(np.median(top / bodies.height), 1.0, atol=0.02)
    np.testing.assert_allclose(top / bodies.height, 1.0, atol=0.1)
    assert 1450 <= bodies.height.min() and bodies.height.max() <= 2000


def test_lying_people_are_horizontal() -> None:
    bodies = B.sample_bodies(np.random.default_rng(5), 300, ("lying",), 1.0)
    spine = bodies.joints[:, B.joint_index("thorax")] - bodies.joints[:, B.joint_index("pelvis")]
    vertical = np.abs(spine[:, 2]) / np.linalg.norm(spine, axis=1)
    assert np.median(vertical) < 0.3
    assert bodies.joints[..., 2].max(axis=1).mean() < 0.6 * bodies.height.mean()


@pytest.mark.parametrize("skeleton", [COCO17, MPII16, H36M17])
def test_every_dataset_keypoint_maps_to_a_model_joint(skeleton: Skeleton) -> None:
    idx = B.skeleton_joint_indices(skeleton)
    assert len(idx) == skeleton.num_keypoints and len(set(idx.tolist())) == len(idx)
    names = [B.JOINT_NAMES[i] for i in idx]
    for a, b in skeleton.flip_pairs:  # left/right pairs map to left/right model joints
        assert {names[a].split("_")[0], names[b].split("_")[0]} == {"left", "right"}


def test_unknown_pose_class_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid: standing, walking"):
        B.sample_angles(np.random.default_rng(0), 3, ("dancing",))
