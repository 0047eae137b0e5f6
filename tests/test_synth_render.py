"""Rendering: visibility codes agree with the part-id buffer and the painter's order; boxes and
areas come from the silhouette."""

from __future__ import annotations

import numpy as np
import pytest

from posereg.synth.body import JOINT_NAMES, NUM_JOINTS
from posereg.synth.generate import CHUNK_SIZE, SynthConfig, _sample_chunk, render_scene
from posereg.synth.render import (
    OCCLUDER_ID,
    PARTS_PER_PERSON,
    SURFACE_JOINTS,
    PersonView,
    ellipsoid_outline,
    own_part_ids,
    painter_order,
    part_id,
)
from posereg.synth.scene import build_texture_bank


@pytest.fixture(scope="module", params=["medium", "hard"])
def scenes(request: pytest.FixtureRequest) -> list:
    config = SynthConfig.preset(request.param)
    bank = build_texture_bank(0, 384, 4)
    out = []
    for chunk in range(2):
        for i, plan in enumerate(_sample_chunk(config, 7, "test", chunk, None)):
            rng = np.random.default_rng([7, chunk, i])
            out.append(render_scene(plan, config, bank, rng))
    assert len(out) == 2 * CHUNK_SIZE
    return out


def _pixels(view: PersonView) -> tuple[np.ndarray, np.ndarray]:
    cols = np.floor(view.joints_2d[:, 0] + 0.5).astype(int)
    rows = np.floor(view.joints_2d[:, 1] + 0.5).astype(int)
    return rows, cols


def test_v0_exactly_outside_the_image(scenes: list) -> None:
    for scene in scenes:
        h, w = scene.part_ids.shape
        for p, view in enumerate(scene.views):
            u, v = view.joints_2d[:, 0], view.joints_2d[:, 1]
            inside = (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
            np.testing.assert_array_equal(scene.visibility[p] == 0, ~inside)


def test_visible_joints_show_their_own_part_and_occluded_ones_do_not(scenes: list) -> None:
    counts = {1: 0, 2: 0}
    for scene in scenes:
        for p, view in enumerate(scene.views):
            rows, cols = _pixels(view)
            own = own_part_ids(p)
            for j in range(NUM_JOINTS):
                vis = scene.visibility[p, j]
                if vis == 0:
                    continue
                counts[vis] += 1
                shown = int(scene.part_ids[rows[j], cols[j]])
                if vis == 2:
                    assert shown in own[j], f"{JOINT_NAMES[j]} marked visible but shows id {shown}"
                elif j not in SURFACE_JOINTS:
                    assert shown not in own[j], f"{JOINT_NAMES[j]} marked occluded but shows itself"
    # Both codes occur in realistic proportions (a broken rule gives all-2 or all-1).
    frac_occluded = counts[1] / (counts[1] + counts[2])
    assert 0.05 < frac_occluded < 0.6, counts


def test_occluded_joints_are_covered_by_something_painted_nearer(scenes: list) -> None:
    """The cover of an occluded joint was painted after every part the joint belongs to."""
    checked = 0
    for scene in scenes:
        order = {pp: k for k, pp in enumerate(painter_order(scene.views))}
        for p, view in enumerate(scene.views):
            rows, cols = _pixels(view)
            own = own_part_ids(p)
            for j in np.flatnonzero(scene.visibility[p] == 1):
                shown = int(scene.part_ids[rows[j], cols[j]])
                if shown in own[j]:
                    assert j in SURFACE_JOINTS  # only face points can hide behind their own head
                    continue
                if shown == OCCLUDER_ID:
                    continue  # occluders are drawn after all people
                assert shown != 0, f"occluded {JOINT_NAMES[j]} shows background"
                cover = divmod(shown - 1, PARTS_PER_PERSON)
                last_own = max(order[(p, (i - 1) % PARTS_PER_PERSON)] for i in own[j])
                assert order[cover] > last_own, (
                    f"{JOINT_NAMES[j]} covered by a part painted earlier"
                )
                checked += 1
    assert checked > 20


def test_face_points_on_the_far_side_of_the_head_are_occluded(scenes: list) -> None:
    for scene in scenes:
        for p, view in enumerate(scene.views):
            head = view.joints_cam[JOINT_NAMES.index("head")]
            for j in SURFACE_JOINTS:
                facing = (view.joints_cam[j] - head) @ (-view.joints_cam[j]) > 0
                if not facing and scene.visibility[p, j] > 0:
                    assert scene.visibility[p, j] == 1


def test_area_and_box_come_from_the_silhouette(scenes: list) -> None:
    for scene in scenes:
        for p, view in enumerate(scene.views):
            ids = scene.part_ids
            mask = (ids >= part_id(p, 0)) & (ids < part_id(p, 0) + PARTS_PER_PERSON)
            assert scene.area[p] == mask.sum()
            if mask.sum() == 0:
                continue
            rows, cols = np.nonzero(mask)
            x, y, w, h = scene.bbox[p]
            assert x == cols.min() and y == rows.min()
            assert x + w == cols.max() + 1 and y + h == rows.max() + 1
            # Every visible keypoint's pixel is inside the box.
            r, c = _pixels(view)
            vis = scene.visibility[p] == 2
            assert np.all((c[vis] >= x) & (c[vis] < x + w) & (r[vis] >= y) & (r[vis] < y + h))


def test_people_are_drawn_in_the_image(scenes: list) -> None:
    """Pixels of people differ from the plain background render: the image shows them."""
    for scene in scenes[:8]:
        people = (scene.part_ids > 0) & (scene.part_ids < OCCLUDER_ID)
        assert people.sum() > 100
        # The person pixels' colours are not a single flat colour (shading, several parts).
        assert scene.image[people].std(axis=0).max() > 5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ellipsoid_outline_is_the_exact_perspective_silhouette(seed: int) -> None:
    rng = np.random.default_rng(seed)
    K = np.array([[400.0, 0.0, 120.0], [0.0, 410.0, 90.0], [0.0, 0.0, 1.0]])
    axes = rng.normal(size=(3, 3)) * 60.0
    centre = np.array([*rng.uniform(-200, 200, 2), 900.0])
    (cu, cv), (a, b), angle = ellipsoid_outline(centre, axes, K)
    y = rng.normal(size=(100_000, 3))
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    x = (centre + y @ axes.T) @ K.T
    uv = x[:, :2] / x[:, 2:]
    t = np.deg2rad(angle)
    rot = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    q = (uv - (cu, cv)) @ rot.T
    r = (q[:, 0] / a) ** 2 + (q[:, 1] / b) ** 2
    # Every surface point projects inside the outline, and the outline touches the surface.
    assert r.max() <= 1.0 + 1e-9
    assert r.max() > 0.999
    assert a >= b
