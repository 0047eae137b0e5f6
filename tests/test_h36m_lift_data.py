"""Human3.6M for lifting: camera projection on the fixtures, VideoPose3D archives, bad input, pairs."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from tests._real_data import real

from posereg.config import LiftDataConfig
from posereg.data.badinput import BadInputError
from posereg.data.h36m import (
    H36M32_TO_17,
    H36M_CAMERA_IDS,
    TEST_SUBJECTS,
    TRAIN_SUBJECTS,
    load_videopose3d_2d,
    load_videopose3d_3d,
)
from posereg.data.lift import h36m_body3d_pairs, h36m_videopose3d_pairs, synthetic_pairs
from posereg.synth.camera import load_h36m_calibrations, project, project_distorted

BODY3D = real("h36m", "test_h36m_body3d.npz")


def _fixture_frames():
    data = np.load(BODY3D)
    calib = load_h36m_calibrations(real("h36m", "cameras.json"))
    idx = []
    for name in data["imgname"]:
        subject, rest = str(name).split("/")[:2]
        idx.append(calib.index(f"{subject}/{rest.split('.')[-1]}"))
    return data, calib, np.array(idx)


def _pixel_errors(distorted: bool) -> np.ndarray:
    data, calib, idx = _fixture_frames()
    cam_mm = data["S"][..., :3] * 1000.0  # the fixture's joints are metres, camera frame
    if distorted:
        uv = project_distorted(cam_mm, calib.K[idx], calib.radial[idx], calib.tangential[idx])
    else:
        uv = project(cam_mm, calib.K[idx])
    return np.linalg.norm(uv - data["part"][..., :2], axis=-1)


def test_projection_with_the_fixture_cameras_reproduces_the_fixture_keypoints():
    with_distortion = _pixel_errors(distorted=True)
    without = _pixel_errors(distorted=False)
    # measured: with the lens model mean 1.5e-5 px, max 3.7e-5 px (float rounding of the
    # fixture); pinhole only: mean 0.82 px, max 3.4 px (docs/lifting.md)
    assert with_distortion.max() < 1e-3
    assert 0.3 < without.mean() < 2.0 and without.max() > 2.0


def test_world_joints_go_to_the_fixture_camera_frame_with_the_calibration():
    coco = json.loads(real("h36m", "h36m_coco.json").read_text())
    data, calib, idx = _fixture_frames()
    for ann, i, cam in zip(coco["annotations"], range(4), idx, strict=True):
        world = np.asarray(ann["keypoints_3d"]).reshape(17, 4)[:, :3] * 1000.0
        np.testing.assert_allclose(
            world @ calib.R[cam].T + calib.t[cam], data["S"][i, :, :3] * 1000.0, atol=1e-3
        )


# --- VideoPose3D archives (tiny fixtures written here, in the archive's layout) -----------------


def _world_sequence(t=6, seed=0):
    """(T, 32, 3) metres: a person near the capture-area origin."""
    rng = np.random.default_rng(seed)
    base = np.array([0.2, -0.1, 0.9]) + rng.normal(0, 0.3, (32, 3))
    return base[None] + rng.normal(0, 0.01, (t, 32, 3))


def _write_archives(tmp_path, subjects=("S9", "S11")):
    calib = load_h36m_calibrations()
    pos3d, pos2d = {}, {}
    for s, subject in enumerate(subjects):
        pos3d[subject], pos2d[subject] = {}, {}
        for a, action in enumerate(("Walking 1", "Sitting")):
            world = _world_sequence(seed=10 * s + a)
            pos3d[subject][action] = world
            cams = []
            for cam_id in H36M_CAMERA_IDS:
                i = calib.index(f"{subject}/{cam_id}")
                cam = world[:, H36M32_TO_17] * 1000.0 @ calib.R[i].T + calib.t[i]
                uv = project_distorted(
                    cam[None], calib.K[i : i + 1], calib.radial[i : i + 1],
                    calib.tangential[i : i + 1],
                )[0]  # fmt: skip
                cams.append(np.concatenate([uv, uv[-1:]]).astype(np.float32))  # 1 frame longer
            pos2d[subject][action] = cams
    p3, p2 = tmp_path / "data_3d_h36m.npz", tmp_path / "data_2d_h36m_gt.npz"
    np.savez_compressed(p3, positions_3d=pos3d)
    meta = {"layout_name": "h36m", "num_joints": 17, "keypoints_symmetry": [[4, 5, 6], [1, 2, 3]]}
    np.savez_compressed(p2, positions_2d=pos2d, metadata=meta)
    return p3, p2, pos3d


def test_videopose3d_3d_selects_17_of_32_joints_in_mm(tmp_path):
    p3, _, pos3d = _write_archives(tmp_path)
    loaded = load_videopose3d_3d(p3)
    assert sorted(loaded) == ["S11", "S9"]
    a = loaded["S9"]["Walking 1"]
    assert a.shape == (6, 17, 3)
    np.testing.assert_allclose(a[:, 11], pos3d["S9"]["Walking 1"][:, 17] * 1000.0)  # l shoulder
    np.testing.assert_allclose(a[:, 16], pos3d["S9"]["Walking 1"][:, 27] * 1000.0)  # r wrist


def test_videopose3d_pairs_from_gt_2d_equal_the_projection(tmp_path):
    p3, p2, _ = _write_archives(tmp_path)
    positions, meta = load_videopose3d_2d(p2)
    assert meta["num_joints"] == 17 and len(positions["S9"]["Sitting"]) == 4
    with_2d = h36m_videopose3d_pairs(str(p3), str(p2), subjects=("S9", "S11"))
    projected = h36m_videopose3d_pairs(str(p3), None, subjects=("S9", "S11"))
    assert len(with_2d) == 2 * 2 * 4 * 6  # subjects x actions x cameras x frames
    np.testing.assert_allclose(with_2d.keypoints_2d, projected.keypoints_2d, atol=1e-3)  # float32
    assert np.all(with_2d.joints_3d[:, 0] == 0.0)  # root-relative
    assert set(with_2d.actions) == {"Walking", "Sitting"} and set(with_2d.subjects) == {"S9", "S11"}
    strided = h36m_videopose3d_pairs(str(p3), str(p2), subjects=("S9",), stride=2)
    assert len(strided) == 2 * 4 * 3


def test_a_subject_missing_from_the_archive_is_named(tmp_path):
    p3, p2, _ = _write_archives(tmp_path, subjects=("S9",))
    with pytest.raises(BadInputError, match=r"positions_3d\['S11'\]: missing"):
        h36m_videopose3d_pairs(str(p3), str(p2), subjects=("S9", "S11"))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"other": {"S1": {}}}, r"data_3d_h36m.npz: field positions_3d: missing"),
        (
            {"positions_3d": {"S1": {"Walk": np.zeros((5, 30, 3))}}},
            r"positions_3d\['S1'\]\['Walk'\]: shape \(5, 30, 3\), expected \(T, 32, 3\)",
        ),
        (
            {"positions_3d": {"S1": {"Walk": np.full((5, 32, 3), np.nan)}}},
            r"positions_3d\['S1'\]\['Walk'\]: non-finite value \(NaN or inf\) at frame 0",
        ),
        ({"positions_3d": np.zeros((3, 32, 3))}, r"expected a pickled dict"),
    ],
)
def test_bad_3d_archives_name_the_file_and_field(tmp_path, content, match):
    path = tmp_path / "data_3d_h36m.npz"
    np.savez(path, **content)
    with pytest.raises(BadInputError, match=match):
        load_videopose3d_3d(path)


def test_bad_2d_archives_name_the_field(tmp_path):
    path = tmp_path / "data_2d_h36m_cpn.npz"
    np.savez(path, positions_2d={"S9": {"Walk": [np.zeros((4, 17, 2))] * 3}})
    with pytest.raises(BadInputError, match=r"positions_2d\['S9'\]\['Walk'\]: 3 cameras"):
        load_videopose3d_2d(path)
    np.savez(path, positions_2d={"S9": {"Walk": [np.zeros((4, 16, 2))] * 4}})
    with pytest.raises(BadInputError, match=r"\['Walk'\]\[0\]: shape \(4, 16, 2\)"):
        load_videopose3d_2d(path)


def test_bad_2d_archives_missing_field_nan_and_joint_layout_are_named(tmp_path):
    path = tmp_path / "data_2d_h36m_cpn.npz"
    np.savez(path, other={"S9": {}})
    with pytest.raises(BadInputError, match=r"data_2d_h36m_cpn.npz: field positions_2d: missing"):
        load_videopose3d_2d(path)
    cams = [np.zeros((4, 17, 2)) for _ in range(4)]
    cams[2][3, 5, 1] = np.nan
    np.savez(path, positions_2d={"S9": {"Walk": cams}})
    with pytest.raises(
        BadInputError, match=r"positions_2d\['S9'\]\['Walk'\]\[2\]: non-finite .* at frame 3"
    ):
        load_videopose3d_2d(path)
    np.savez(path, positions_2d={"S9": {}}, metadata={"num_joints": 16})
    with pytest.raises(BadInputError, match=r"field metadata: num_joints 16, expected 17"):
        load_videopose3d_2d(path)


def test_protocol_splits_are_the_standard_ones():
    assert TRAIN_SUBJECTS == ("S1", "S5", "S6", "S7", "S8")
    assert TEST_SUBJECTS == ("S9", "S11")
    data = LiftDataConfig()
    assert tuple(data.train_subjects) == TRAIN_SUBJECTS
    assert tuple(data.test_subjects) == TEST_SUBJECTS


class _Evil:
    def __reduce__(self):
        return (print, ("this must not run",))


def test_archive_pickles_cannot_run_code(tmp_path, capsys):
    path = tmp_path / "data_3d_h36m.npz"
    arr = np.empty((), dtype=object)
    arr[()] = {"S1": {"Walk": _Evil()}}
    np.savez(path, positions_3d=arr)
    with pytest.raises(BadInputError, match="refusing to load builtins.print"):
        load_videopose3d_3d(path)
    assert "must not run" not in capsys.readouterr().out
    assert pickle  # the module the restricted unpickler subclasses


def test_body3d_pairs_are_root_relative_mm_with_subjects_and_actions():
    pairs = h36m_body3d_pairs(str(BODY3D))
    raw = np.load(BODY3D)["S"][..., :3] * 1000.0
    np.testing.assert_allclose(pairs.joints_3d, raw - raw[:, :1])
    assert list(pairs.subjects) == ["S1", "S5", "S7", "S8"]
    assert list(pairs.actions) == ["Directions", "SittingDown", "Greeting", "WalkDog"]


def test_body3d_nan_names_the_field(tmp_path):
    data = dict(np.load(BODY3D))
    data["S"] = data["S"].copy()
    data["S"][2, 3, 0] = np.nan
    path = tmp_path / "bad_body3d.npz"
    np.savez(path, **data)
    with pytest.raises(
        BadInputError, match=r"bad_body3d.npz: field S: non-finite value .* frame #2"
    ):
        h36m_body3d_pairs(str(path))


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("S", None, r"bad_body3d.npz: missing fields \['S'\]"),
        ("part", np.zeros((4, 16, 3)), r"bad_body3d.npz: field part: shape \(4, 16, 3\), expected"),
    ],
)
def test_body3d_missing_field_and_wrong_shape_are_named(tmp_path, field, value, match):
    data = dict(np.load(BODY3D))
    if value is None:
        del data[field]
    else:
        data[field] = value
    path = tmp_path / "bad_body3d.npz"
    np.savez(path, **data)
    with pytest.raises(BadInputError, match=match):
        h36m_body3d_pairs(str(path))


# --- synthetic pairs -------------------------------------------------------------------------


def test_synthetic_pairs_are_deterministic_and_noise_changes_only_the_2d():
    clean = synthetic_pairs(300, seed=1, noise="none")
    again = synthetic_pairs(300, seed=1, noise="none")
    coco = synthetic_pairs(300, seed=1, noise="coco")
    heavy = synthetic_pairs(300, seed=1, noise="heavy")
    np.testing.assert_array_equal(clean.keypoints_2d, again.keypoints_2d)
    np.testing.assert_array_equal(clean.joints_3d, coco.joints_3d)
    assert np.all(clean.joints_3d[:, 0] == 0.0)
    err_coco = np.linalg.norm(coco.keypoints_2d - clean.keypoints_2d, axis=-1)
    err_heavy = np.linalg.norm(heavy.keypoints_2d - clean.keypoints_2d, axis=-1)
    assert 0 < np.median(err_coco) < np.median(err_heavy)
    assert np.percentile(err_heavy, 99) > 2 * np.percentile(err_coco, 99)  # outliers
    other = synthetic_pairs(300, seed=1, noise="none", split="val")
    assert not np.allclose(other.joints_3d, clean.joints_3d)


def test_noise_scale_replaces_the_spread_of_the_setting():
    clean = synthetic_pairs(200, seed=5, noise="none")
    base = synthetic_pairs(200, seed=5, noise="coco", noise_scale=1.0)
    coco = synthetic_pairs(200, seed=5, noise="coco", noise_scale=0.354)
    err_base = base.keypoints_2d - clean.keypoints_2d
    err_coco = coco.keypoints_2d - clean.keypoints_2d
    # the same random draws: every noise offset shrinks by 0.354, except where a left/right pair
    # swapped (a swap moves a label by the person's width, not by the spread)
    ratio = np.linalg.norm(err_coco, axis=-1) / np.linalg.norm(err_base, axis=-1)
    assert np.median(ratio) == pytest.approx(0.354, rel=1e-9)
    assert np.mean(np.isclose(ratio, 0.354)) > 0.9
    off = synthetic_pairs(200, seed=5, noise="none", noise_scale=3.0)  # none stays noise-free
    np.testing.assert_array_equal(off.keypoints_2d, clean.keypoints_2d)
    with pytest.raises(ValueError, match=r"noise.scale: -1.0 is out of range; allowed: >= 0"):
        synthetic_pairs(10, noise="coco", noise_scale=-1.0)


def test_synthetic_2d_is_the_distorted_projection_of_the_3d():
    pairs = synthetic_pairs(50, seed=2, noise="none")
    # the clean 2D of a standing person spans a plausible image height at ~1000 px cameras
    height = np.ptp(pairs.keypoints_2d[..., 1], axis=1)
    assert 50 < np.median(height) < 900
    # a COCO-17 input sees the same bodies and cameras
    coco = synthetic_pairs(50, seed=2, noise="none", input_skeleton="coco17")
    np.testing.assert_array_equal(coco.joints_3d, pairs.joints_3d)
    # the COCO left hip (11) is the Human3.6M left hip (4)
    np.testing.assert_allclose(coco.keypoints_2d[:, 11], pairs.keypoints_2d[:, 4])
