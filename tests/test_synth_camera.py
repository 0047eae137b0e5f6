"""Cameras: look-at geometry, framing, and the real Human3.6M calibrations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from posereg.synth.body import sample_bodies
from posereg.synth.camera import (
    frame_person,
    load_h36m_calibrations,
    look_at,
    project,
)


def test_look_at_puts_the_target_on_the_optical_axis_with_a_level_horizon() -> None:
    rng = np.random.default_rng(0)
    pos = rng.uniform(-3000, 3000, (50, 3))
    target = rng.uniform(-500, 500, (50, 3))
    R, t = look_at(pos, target, np.zeros(50))
    np.testing.assert_allclose(
        R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12
    )
    np.testing.assert_allclose(np.linalg.det(R), 1.0)
    cam_target = np.einsum("nij,nj->ni", R, target) + t
    np.testing.assert_allclose(cam_target[:, :2], 0.0, atol=1e-9)
    assert np.all(cam_target[:, 2] > 0)
    np.testing.assert_allclose(R[:, 0, 2], 0.0, atol=1e-12)  # image x axis is horizontal
    assert np.all(R[:, 1, 2] < 0)  # image y points down in the world (z up)


def test_framed_people_are_in_front_of_the_camera_and_in_the_image() -> None:
    rng = np.random.default_rng(1)
    bodies = sample_bodies(rng, 300, ("standing", "walking", "sitting"), 1.0)
    cams = frame_person(rng, bodies.joints, (256, 192), (40, 70), (-10, 40), 5.0, (0.5, 0.8), 0.0)
    pc = cams.to_camera(bodies.joints)
    assert np.all(pc[..., 2] > 0)
    uv = project(pc, cams.K)
    inside = (uv[..., 0] >= 0) & (uv[..., 0] < 192) & (uv[..., 1] >= 0) & (uv[..., 1] < 256)
    assert inside.mean() > 0.97
    assert inside.all(axis=1).mean() > 0.85  # most people entirely inside
    extent = np.ptp(uv[..., 1], axis=1) / 256  # vertical size of standing people
    assert 0.3 < np.median(extent) < 0.85
    # Cameras stay above the floor.
    centres = -np.einsum("nji,nj->ni", cams.R, cams.t)
    assert centres[:, 2].min() >= 199.0


def test_truncation_puts_part_of_the_person_outside() -> None:
    rng = np.random.default_rng(2)
    bodies = sample_bodies(rng, 300, ("standing",), 1.0)
    cams = frame_person(rng, bodies.joints, (256, 256), (40, 70), (0, 30), 0.0, (0.5, 0.8), 1.0)
    uv = project(cams.to_camera(bodies.joints), cams.K)
    inside = (uv[..., 0] >= 0) & (uv[..., 0] < 256) & (uv[..., 1] >= 0) & (uv[..., 1] < 256)
    cut = (inside.mean(axis=1) < 1.0) & (inside.mean(axis=1) > 0.0)
    assert cut.mean() > 0.95


def test_h36m_calibrations_look_at_the_capture_area() -> None:
    cal = load_h36m_calibrations()
    assert len(cal.names) == 44 and cal.names[0] == "S1/54138969"
    centres = -np.einsum("nji,nj->ni", cal.R, cal.t)  # mm, world z up
    assert np.all((centres[:, 2] > 1000) & (centres[:, 2] < 2200))
    assert np.all(np.linalg.norm(centres[:, :2], axis=1) > 3000)
    # The optical axis points at the middle of the room, horizontally within ~20 degrees.
    axis = cal.R[:, 2]
    to_origin = -centres / np.linalg.norm(centres, axis=1, keepdims=True)
    assert np.all(np.einsum("ni,ni->n", axis, to_origin) > np.cos(np.deg2rad(20)))
    # Resized intrinsics: a native pixel (u, v) maps to ((u + 0.5) s - 0.5).
    cams = cal.sample(np.random.default_rng(0), 20, (256, 256))
    x = np.array([[[300.0, -200.0, 4000.0]]]).repeat(20, 0)
    k_native = np.array([cal.K[np.flatnonzero((cal.R == r).all(axis=(1, 2)))[0]] for r in cams.R])
    size = np.array([cal.size[np.flatnonzero((cal.R == r).all(axis=(1, 2)))[0]] for r in cams.R])
    native = project(x, k_native)[:, 0]
    resized = project(x, cams.K)[:, 0]
    np.testing.assert_allclose(resized, (native + 0.5) * (256 / size[:, ::-1]) - 0.5, atol=1e-9)


def test_missing_h36m_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_h36m_calibrations(missing)
