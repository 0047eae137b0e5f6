"""The wide 3D pose prior (posereg.synth.prior): limits, bone lengths, coverage, seeds, and the
pose classes drawing exactly as before the prior existed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from posereg.config import ConfigError, LiftConfig, LiftDataConfig, load_lift_config
from posereg.data.lift import synthetic_pairs
from posereg.engine.lift import build_lift_data
from posereg.synth.body import (
    DOF_LIMITS,
    DOF_NAMES,
    JOINT_NAMES,
    PARENTS,
    POSE_CLASSES,
    sample_bodies,
    sample_shapes,
    shoulder_elevation_cap,
)
from posereg.synth.prior import (
    MIXED_WIDE_SHARE,
    POSE_PRIORS,
    UPRIGHT_SHARE,
    WIDE,
    hip_flexion_cap,
    sample_orientations,
    sample_prior_bodies,
    sample_wide_bodies,
)
from posereg.synth.settings import SynthConfig

N = 20000
LO = np.array([DOF_LIMITS[n][0] for n in DOF_NAMES])
HI = np.array([DOF_LIMITS[n][1] for n in DOF_NAMES])
DEFAULT_CLASSES = SynthConfig().pose_classes  # every class but lying


def _trunk_up_z(joints: np.ndarray) -> np.ndarray:
    """z of the unit vector pelvis -> neck (N,): 1 upright, 0 horizontal, -1 head down."""
    up = joints[:, JOINT_NAMES.index("neck")] - joints[:, JOINT_NAMES.index("pelvis")]
    return up[:, 2] / np.linalg.norm(up, axis=1)


@pytest.fixture(scope="module")
def wide():
    return sample_wide_bodies(np.random.default_rng(5), N)


def test_wide_angles_within_limits_and_pose_dependent_caps_and_span_the_ranges(wide):
    a = wide.angles
    assert (a >= LO - 1e-9).all() and (a <= HI + 1e-9).all()
    for side in ("l", "r"):
        plane, elev = DOF_NAMES.index(f"{side}_sh_plane"), DOF_NAMES.index(f"{side}_sh_elev")
        assert (a[:, elev] <= shoulder_elevation_cap(a[:, plane]) + 1e-9).all()
        hip, knee = DOF_NAMES.index(f"{side}_hip_flex"), DOF_NAMES.index(f"{side}_knee")
        assert (a[:, hip] <= hip_flexion_cap(a[:, knee]) + 1e-9).all()
        straight = a[:, knee] < 10.0
        assert a[straight, hip].max() < 95.0  # hamstrings: no straight-leg raise past ~90
    # Uniform within the limits: each range is reached at both ends (within 3 % of its width)
    width = HI - LO
    assert (a.min(axis=0) < LO + 0.03 * width).all()
    assert (a.max(axis=0) > HI - 0.03 * width).all()
    assert (wide.pose_class == WIDE).all()


def test_wide_bone_lengths_are_the_body_models(wide):
    _, _, offsets = sample_shapes(np.random.default_rng(5), N)  # the prior's first draw
    bone = wide.joints[:, 1:] - wide.joints[:, PARENTS[1:]]
    np.testing.assert_allclose(
        np.linalg.norm(bone, axis=-1), np.linalg.norm(offsets[:, 1:], axis=-1), rtol=1e-9
    )


def test_wide_covers_orientations_the_classes_never_produce(wide):
    classes = sample_bodies(np.random.default_rng(5), N, tuple(POSE_CLASSES))
    default = sample_bodies(np.random.default_rng(5), N, DEFAULT_CLASSES)
    up_wide, up_classes = _trunk_up_z(wide.joints), _trunk_up_z(classes.joints)
    # Head down (trunk more than 30 degrees below horizontal): no class, lying included.
    assert (up_classes < -0.5).mean() == 0.0
    assert 0.10 < (up_wide < -0.5).mean() < 0.20  # Haar half: P(up_z < -0.5) = 1/4
    # Torso near horizontal (within ~17 degrees): the default classes almost never.
    assert (np.abs(_trunk_up_z(default.joints)) < 0.3).mean() < 0.01
    assert (np.abs(up_wide) < 0.3).mean() > 0.10
    # Pelvis above the top of the head by more than half a metre (bending over in the reaching
    # class puts the head up to ~0.4 m below the pelvis; more is upside down).
    head_top = JOINT_NAMES.index("head_top")
    above = wide.joints[:, 0, 2] - wide.joints[:, head_top, 2] > 500.0
    assert above.mean() > 0.05
    assert not (classes.joints[:, 0, 2] - classes.joints[:, head_top, 2] > 500.0).any()
    # Everyone is on the floor, however rotated.
    assert wide.joints[..., 2].min() >= 0.0


def test_orientations_are_rotations_half_upright_half_uniform():
    r = sample_orientations(np.random.default_rng(0), N)
    np.testing.assert_allclose(
        r @ r.transpose(0, 2, 1), np.broadcast_to(np.eye(3), r.shape), atol=1e-12
    )
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
    up_z = r[:, 2, 2]  # z of the pelvis's up axis
    # Upright: tilt |N(0, 10)| is within 25 degrees 98.8 % of the time; uniform: (1 - cos 25) / 2.
    within = UPRIGHT_SHARE * 0.988 + (1 - UPRIGHT_SHARE) * (1 - np.cos(np.deg2rad(25))) / 2
    assert abs((up_z > np.cos(np.deg2rad(25))).mean() - within) < 0.015
    # The uniform half has cos(tilt) uniform in [-1, 1]: a quarter of all point down.
    assert abs((up_z < 0).mean() - (1 - UPRIGHT_SHARE) / 2) < 0.015
    heading = np.arctan2(r[:, 1, 2], r[:, 0, 2])[up_z < 0.5]  # direction the tilt leans to
    assert np.histogram(heading, 4, (-np.pi, np.pi))[0].min() > 0.2 * len(heading)


@pytest.mark.parametrize("prior", ["wide", "mixed"])
def test_seeds_reproduce_and_differ(prior):
    a = synthetic_pairs(200, seed=3, noise="coco", prior=prior)
    b = synthetic_pairs(200, seed=3, noise="coco", prior=prior)
    c = synthetic_pairs(200, seed=4, noise="coco", prior=prior)
    np.testing.assert_array_equal(a.joints_3d, b.joints_3d)
    np.testing.assert_array_equal(a.keypoints_2d, b.keypoints_2d)
    assert np.abs(a.joints_3d - c.joints_3d).mean() > 50.0


def test_classes_prior_draws_exactly_as_before_the_prior_existed():
    # Fingerprints computed on main at 346d034, before posereg.synth.prior.
    p = synthetic_pairs(64, seed=7, noise="coco", split="train", prior="classes")
    np.testing.assert_allclose(p.joints_3d[:, 1:].sum(), -130197.47822313898, rtol=1e-12)
    np.testing.assert_allclose(np.abs(p.joints_3d).sum(), 667096.209475565, rtol=1e-12)
    np.testing.assert_allclose(p.keypoints_2d.sum(), 967664.3535801903, rtol=1e-12)
    assert list(p.actions[:4]) == ["arms_raised", "running", "sitting", "crouching"]
    b = sample_prior_bodies(np.random.default_rng(3), 50, "classes", tuple(POSE_CLASSES))
    np.testing.assert_allclose(b.joints.sum(), 1206980.8070840843, rtol=1e-12)
    np.testing.assert_allclose(np.abs(b.joints).sum(), 1711185.9516884214, rtol=1e-12)
    assert b.pose_class[:10].tolist() == [0, 5, 7, 4, 7, 7, 5, 1, 3, 2]


def test_mixed_is_half_wide_and_the_rest_from_the_given_classes():
    p = synthetic_pairs(4000, seed=2, noise="none", prior="mixed", pose_classes=("sitting",))
    share = (p.actions == "wide").mean()
    assert abs(share - MIXED_WIDE_SHARE) < 4 * np.sqrt(0.25 / 4000)  # 4 sigma of a binomial
    assert set(p.actions) == {"wide", "sitting"}


def test_wide_sampling_is_fast():
    seconds = []
    for i in range(3):  # the best of three: the machine may be busy
        t0 = time.perf_counter()
        sample_wide_bodies(np.random.default_rng(i), 10000)
        seconds.append(time.perf_counter() - t0)
    assert 10000 / min(seconds) >= 10000, f"{10000 / min(seconds):.0f} poses/s"


def test_unknown_prior_is_an_error_listing_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown pose prior 'upside'.*classes, wide, mixed"):
        sample_prior_bodies(np.random.default_rng(0), 3, "upside", DEFAULT_CLASSES)  # type: ignore[arg-type]
    cfg = tmp_path / "lift.yaml"
    cfg.write_text("task: lift\ndata:\n  prior: upside\n")
    with pytest.raises(ConfigError, match="prior") as err:
        load_lift_config(cfg)
    assert all(p in str(err.value) for p in POSE_PRIORS)


def test_lift_config_prior_reaches_the_pairs():
    cfg = LiftConfig(data=LiftDataConfig(prior="wide", num_val=30, noise="none"))
    _, val = build_lift_data(cfg, train=False)
    assert (val.actions == "wide").all()
    default = build_lift_data(LiftConfig(data=LiftDataConfig(num_val=30, noise="none")), False)[1]
    assert set(default.actions) <= set(DEFAULT_CLASSES)
    real = LiftConfig(data=LiftDataConfig(source="h36m", prior="wide", positions_3d="x.npz"))
    with pytest.raises(ConfigError, match="data.prior: h36m data has its own poses; 'wide'"):
        build_lift_data(real, train=False)
