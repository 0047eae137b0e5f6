"""3D pose priors: the pose classes, or every joint anywhere within its anatomical limits.

The pose classes (:data:`posereg.synth.body.POSE_CLASSES`) are postures people hold in photos;
motion outside them (acrobatics, crawling, getting up, kicks) is not in them. The *wide* prior
draws each degree of freedom uniformly within its limit, independently of the others, and the
whole body in any orientation, so a lifter trained on it has seen every joint configuration the
body model allows. Everything is vectorised over N people (numpy) and seeded by the caller's
generator.

Joint limits (degrees; ``posereg.synth.body.DOF_LIMITS``, one table for both priors): active
range of motion from the American Academy of Orthopaedic Surgeons, *Joint Motion: Method of
Measuring and Recording* (1965), and Norkin & White, *Measurement of Joint Motion: A Guide to
Goniometry*; the range of motion of healthy adults, not of trained acrobats. Two limits depend
on another joint, in the spirit of Akhter & Black, "Pose-conditioned joint angle limits for 3D
human pose reconstruction" (CVPR 2015):

- shoulder elevation behind the back (plane of elevation toward -90) stops at about 60
  (:func:`posereg.synth.body.shoulder_elevation_cap`, shared with the classes);
- hip flexion with the knee straight stops at about 90 (the hamstrings; the straight-leg raise
  of Norkin & White is 80-90), rising to the full 130 once the knee is bent 90 or more
  (:func:`hip_flexion_cap`).

Whole-body orientation: a share :data:`UPRIGHT_SHARE` of wide poses stands upright (the trunk
tilted by |N(0, 10 deg)|); the rest has a uniformly random rotation (Haar measure on SO(3)):
lying, inverted, on the side, head-down, every heading.
"""

from __future__ import annotations

from typing import get_args

import numpy as np

from posereg.config import PosePrior
from posereg.synth.body import (
    _D,
    _HI,
    _LO,
    NUM_DOFS,
    POSE_CLASSES,
    Bodies,
    _rot,
    pose_bodies,
    sample_bodies,
    sample_shapes,
    shoulder_elevation_cap,
)

__all__ = [
    "PosePrior",
    "POSE_PRIORS",
    "POSE_LABELS",
    "WIDE",
    "UPRIGHT_SHARE",
    "MIXED_WIDE_SHARE",
    "hip_flexion_cap",
    "sample_wide_angles",
    "sample_orientations",
    "sample_wide_bodies",
    "sample_prior_bodies",
]

#: Which 3D poses (``PosePrior``, a Literal defined with the configs): ``classes`` the pose
#: classes (as before this module), ``wide`` every joint uniform within its limits and any
#: whole-body orientation, ``mixed`` a random half of each.
POSE_PRIORS: tuple[str, ...] = get_args(PosePrior)

#: ``Bodies.pose_class`` of a wide-prior pose (one past the pose classes); names by index.
WIDE = len(POSE_CLASSES)
POSE_LABELS: tuple[str, ...] = (*POSE_CLASSES, "wide")

UPRIGHT_SHARE = 0.5  # of wide poses; the rest is uniformly oriented
UPRIGHT_TILT_SD = 10.0  # degrees, trunk tilt of the upright ones
MIXED_WIDE_SHARE = 0.5  # of ``mixed`` poses drawn from the wide prior


def hip_flexion_cap(knee: np.ndarray) -> np.ndarray:
    """The highest hip flexion (N,) in degrees for a knee flexion (N,) in degrees: 90 with the
    knee straight (hamstrings), rising linearly to the hip's limit (130) at 90 of knee flexion."""
    full = _HI[_D["l_hip_flex"]]
    return 90.0 + (full - 90.0) * np.clip(knee / 90.0, 0.0, 1.0)


def sample_wide_angles(rng: np.random.Generator, n: int) -> np.ndarray:
    """Joint angles (N, NUM_DOFS) in degrees, each uniform within its limit (``DOF_LIMITS``)
    and, for shoulder elevation and hip flexion, uniform below their pose-dependent caps."""
    u = rng.random((n, NUM_DOFS))
    a = _LO + u * (_HI - _LO)
    for side in ("l", "r"):
        plane, elev = _D[f"{side}_sh_plane"], _D[f"{side}_sh_elev"]
        a[:, elev] = _LO[elev] + u[:, elev] * (shoulder_elevation_cap(a[:, plane]) - _LO[elev])
        hip, knee = _D[f"{side}_hip_flex"], _D[f"{side}_knee"]
        a[:, hip] = _LO[hip] + u[:, hip] * (hip_flexion_cap(a[:, knee]) - _LO[hip])
    return a


def sample_orientations(rng: np.random.Generator, n: int) -> np.ndarray:
    """Pelvis rotations (N, 3, 3): R_z(heading) R_x(tilt) R_z(spin).

    With heading and spin uniform and cos(tilt) uniform in [-1, 1] this is the uniform (Haar)
    distribution on SO(3); a share ``UPRIGHT_SHARE`` instead gets tilt = |N(0, 10 deg)|.
    """
    heading = rng.uniform(0.0, 360.0, n)
    spin = rng.uniform(0.0, 360.0, n)
    tilt = np.rad2deg(np.arccos(rng.uniform(-1.0, 1.0, n)))
    upright = rng.random(n) < UPRIGHT_SHARE
    tilt[upright] = np.abs(UPRIGHT_TILT_SD * rng.standard_normal(int(upright.sum())))
    return _rot(2, heading) @ _rot(0, tilt) @ _rot(2, spin)


def sample_wide_bodies(rng: np.random.Generator, n: int) -> Bodies:
    """N people from the wide prior, on the floor at the world origin (``pose_class`` =
    :data:`WIDE`); shapes and bone lengths from :func:`posereg.synth.body.sample_shapes`."""
    height, girth, offsets = sample_shapes(rng, n)
    angles = sample_wide_angles(rng, n)
    root = sample_orientations(rng, n)
    return pose_bodies(height, girth, offsets, angles, np.full(n, WIDE), root)


def _merge(take_b: np.ndarray, a: Bodies, b: Bodies) -> Bodies:
    """People of ``a`` where ``take_b`` (N,) is False and of ``b`` where it is True, in order."""

    def one(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = np.empty((len(take_b), *x.shape[1:]), dtype=np.result_type(x, y))
        out[~take_b], out[take_b] = x, y
        return out

    return Bodies(
        height=one(a.height, b.height), girth=one(a.girth, b.girth),
        angles=one(a.angles, b.angles), pose_class=one(a.pose_class, b.pose_class),
        joints=one(a.joints, b.joints), head_rot=one(a.head_rot, b.head_rot),
    )  # fmt: skip


def sample_prior_bodies(
    rng: np.random.Generator,
    n: int,
    prior: PosePrior,
    classes: tuple[str, ...],
    spread: float = 1.0,
) -> Bodies:
    """N people from a pose prior, on the floor at the world origin.

    ``classes`` is exactly :func:`posereg.synth.body.sample_bodies` (same draws for the same
    generator state); ``wide`` is :func:`sample_wide_bodies`; ``mixed`` draws who is which
    first (a share :data:`MIXED_WIDE_SHARE` wide), then the class poses, then the wide ones.

    Raises:
        ValueError: an unknown prior, listing the valid ones.
    """
    if prior == "classes":
        return sample_bodies(rng, n, classes, spread)
    if prior == "wide":
        return sample_wide_bodies(rng, n)
    if prior == "mixed":
        wide = rng.random(n) < MIXED_WIDE_SHARE
        a = sample_bodies(rng, int((~wide).sum()), classes, spread)
        return _merge(wide, a, sample_wide_bodies(rng, int(wide.sum())))
    raise ValueError(f"unknown pose prior {prior!r}; valid: {', '.join(POSE_PRIORS)}")
