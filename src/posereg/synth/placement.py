"""Placement sampling: the people and the camera of each image, vectorised per chunk of
``CHUNK_SIZE`` images, before anything is drawn.

Chunk c draws from ``np.random.default_rng([seed, crc32(split), c])`` (:func:`_sample_chunk`),
so the scenes depend on (seed, split, settings) only. The 3D-only mode and the lifting data
(``posereg.data.lift``) reuse the Human3.6M placement (:func:`_place_in_capture_area`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posereg.synth.body import Bodies, sample_bodies
from posereg.synth.camera import Cameras, H36MCalibrations, frame_person, project
from posereg.synth.settings import CHUNK_SIZE, SynthConfig, _split_key

NEAR_MM = 200.0  # people with a joint nearer to the camera than this are not placed


@dataclass
class _ScenePlan:
    """The people and camera of one image, before rendering."""

    bodies: Bodies  # (P,) people; joints already placed in the world
    camera: Cameras  # (1,)


def _place_in_view(
    rng: np.random.Generator,
    bodies: Bodies,
    cams: Cameras,
    counts: np.ndarray,
    image_size: tuple[int, int],
) -> None:
    """Move every image's extra people to floor spots in its camera's view, in place.

    The first person of each image stays where the camera framed it. Each extra person stands at
    a depth of 0.6-1.8 times the first person's and anywhere across the view; half of them stand
    within a metre of the first person, so people overlap. Spots closer than 500 mm to someone
    already placed are re-drawn (up to 8 times).
    """
    h, w = image_size
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for i, (s, n) in enumerate(zip(start, counts, strict=True)):
        R, t, K = cams.R[i], cams.t[i], cams.K[i]
        centre = -R.T @ t
        fwd = R[2].copy()
        fwd[2] = 0.0
        fwd /= max(np.linalg.norm(fwd), 1e-9)
        right = np.array([fwd[1], -fwd[0], 0.0])
        main = bodies.joints[s, 0, :2]
        depth = float(fwd[:2] @ (main - centre[:2]))
        half_width = 0.5 * w / K[0, 0]  # tan of half the horizontal field of view
        placed = [main]
        for q in range(s + 1, s + n):
            for _ in range(8):
                if rng.random() < 0.5:  # next to the framed person
                    d = depth + rng.uniform(-0.4, 1.2) * 1000.0
                    side = 1.0 if rng.random() < 0.5 else -1.0
                    lateral = float(right[:2] @ (main - centre[:2])) + side * rng.uniform(300, 1000)
                else:  # anywhere in view
                    d = depth * rng.uniform(0.6, 1.8)
                    lateral = rng.uniform(-1.0, 1.0) * 0.9 * d * half_width
                d = max(d, 0.5 * depth, 800.0)
                spot = centre[:2] + fwd[:2] * d + right[:2] * lateral
                if min(np.linalg.norm(spot - p) for p in placed) >= 500.0:
                    break
            placed.append(spot)
            bodies.joints[q, :, :2] += spot - bodies.joints[q, 0, :2]


def _sample_chunk(
    config: SynthConfig, seed: int, split: str, chunk: int, calib: H36MCalibrations | None
) -> list[_ScenePlan]:
    """People and cameras of the CHUNK_SIZE images of one chunk (``calib``: the Human3.6M
    calibrations when ``config.camera == "h36m"``, else None)."""
    rng = np.random.default_rng([seed, _split_key(split), chunk])
    n = CHUNK_SIZE
    lo, hi = config.people_per_image
    counts = rng.integers(lo, hi + 1, n)
    bodies = sample_bodies(rng, int(counts.sum()), config.pose_classes, config.pose_spread)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    if calib is None:  # camera == "random"
        cams = frame_person(
            rng, bodies.joints[first], config.image_size, config.fov_deg, config.elevation_deg,
            config.roll_std_deg, config.person_height_frac, config.truncation_prob,
        )  # fmt: skip
    else:  # camera == "h36m"
        cams = calib.sample(rng, n, config.image_size)
        _place_in_capture_area(rng, bodies, first, cams, config.image_size)
    _place_in_view(rng, bodies, cams, counts, config.image_size)
    plans = []
    for i, (s, c) in enumerate(zip(first, counts, strict=True)):
        # People reaching closer than NEAR_MM to the camera are left out of the image.
        z = np.einsum("j,pqj->pq", cams.R[i, 2], bodies.joints[s : s + c]) + cams.t[i, 2]
        sl = s + np.flatnonzero(z.min(axis=1) >= NEAR_MM)
        b = Bodies(
            height=bodies.height[sl], girth=bodies.girth[sl], angles=bodies.angles[sl],
            pose_class=bodies.pose_class[sl], joints=bodies.joints[sl], head_rot=bodies.head_rot[sl],
        )  # fmt: skip
        plans.append(
            _ScenePlan(
                bodies=b,
                camera=Cameras(K=cams.K[i : i + 1], R=cams.R[i : i + 1], t=cams.t[i : i + 1]),
            )
        )
    return plans


def _place_in_capture_area(
    rng: np.random.Generator,
    bodies: Bodies,
    first: np.ndarray,
    cams: Cameras,
    image_size: tuple[int, int],
) -> None:
    """Put each image's first person on the Human3.6M floor (within 2 m of the origin) where its
    pelvis projects into the central 80 % of the image (rejection sampling)."""
    h, w = image_size
    todo = np.arange(len(first))
    spots = np.zeros((len(first), 2))
    for _ in range(50):
        if len(todo) == 0:
            break
        cand = rng.uniform(-2000.0, 2000.0, (len(todo), 2))
        pelvis = np.concatenate([cand, bodies.joints[first[todo], 0, 2:3]], axis=1)[:, None]
        sub = Cameras(K=cams.K[todo], R=cams.R[todo], t=cams.t[todo])
        pc = sub.to_camera(pelvis)
        uv = project(pc, sub.K)[:, 0]
        ok = (
            (pc[:, 0, 2] > 1000.0)
            & (np.abs(uv[:, 0] / w - 0.5) < 0.4)
            & (np.abs(uv[:, 1] / h - 0.5) < 0.4)
        )
        spots[todo[ok]] = cand[ok]
        todo = todo[~ok]
    for i, s in enumerate(first):
        bodies.joints[s, :, :2] += spots[i] - bodies.joints[s, 0, :2]
