"""A kinematic human body: proportions, joint angles within anatomical limits, pose classes.

Everything here is vectorised over N people (numpy, no Python loop over people). Lengths are
in millimetres. The body frame is x to the person's right, y forward (where the person faces),
z up. Segment proportions are fractions of standing height H, after Winter, *Biomechanics and
Motor Control of Human Movement* (4th ed., 2009, Fig. 4.1) and Drillis & Contini (1966),
cross-checked against Human3.6M bone lengths (pelvis-thorax 0.28 H, thigh 0.25 H, shin 0.26 H,
upper arm 0.16 H, forearm 0.14 H).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from posereg.skeletons import SKELETONS, Skeleton

__all__ = [
    "CLEARANCE",
    "JOINT_NAMES",
    "PARENTS",
    "DOF_NAMES",
    "DOF_LIMITS",
    "POSE_CLASSES",
    "Bodies",
    "joint_index",
    "skeleton_joint_indices",
    "skeleton_keypoint_map",
    "keypoint_sets",
    "KeypointMap",
    "sample_shapes",
    "sample_angles",
    "forward_kinematics",
    "sample_bodies",
    "pose_bodies",
    "shoulder_elevation_cap",
]

# The model's joints: a superset of COCO-17, MPII-16 and Human3.6M-17, plus three render-only
# points per side (hand tip, toe) and the head centre. Listed parents-first.
JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "spine", "thorax", "neck", "head", "head_top",
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
    "left_hip", "right_hip", "left_knee", "right_knee",
    "left_ankle", "right_ankle", "left_toe", "right_toe",
)  # fmt: skip
_J = {name: i for i, name in enumerate(JOINT_NAMES)}
NUM_JOINTS = len(JOINT_NAMES)

PARENTS: np.ndarray = np.array(
    [
        -1, 0, 1, 2, 3, 4,  # pelvis, spine, thorax, neck, head, head_top
        4, 4, 4, 4, 4,  # face points hang off the head centre
        2, 2, 11, 12, 13, 14, 15, 16,  # shoulders, elbows, wrists, hand tips
        0, 0, 19, 20, 21, 22, 23, 24,  # hips, knees, ankles, toes
    ]
)  # fmt: skip

# Rest offsets from the parent joint, in units of standing height H, in the frame of the bone
# that ends at the joint (standing straight, arms hanging, facing +y). Left is -x.
_REST = np.zeros((NUM_JOINTS, 3))
_REST[_J["spine"]] = (0.0, -0.005, 0.130)
_REST[_J["thorax"]] = (0.0, 0.005, 0.145)
_REST[_J["neck"]] = (0.0, 0.008, 0.065)  # upper neck (MPII "upper_neck"), under the chin
_REST[_J["head"]] = (0.0, 0.008, 0.055)  # head centre
_REST[_J["head_top"]] = (0.0, -0.008, 0.066)
_REST[_J["nose"]] = (0.0, 0.058, -0.008)
_REST[_J["left_eye"]] = (-0.018, 0.048, 0.010)
_REST[_J["right_eye"]] = (0.018, 0.048, 0.010)
_REST[_J["left_ear"]] = (-0.046, 0.0, 0.0)
_REST[_J["right_ear"]] = (0.046, 0.0, 0.0)
_REST[_J["left_shoulder"]] = (-0.090, -0.010, -0.010)
_REST[_J["right_shoulder"]] = (0.090, -0.010, -0.010)
_REST[_J["left_elbow"]] = (0.0, 0.0, -0.170)
_REST[_J["right_elbow"]] = (0.0, 0.0, -0.170)
_REST[_J["left_wrist"]] = (0.0, 0.0, -0.150)
_REST[_J["right_wrist"]] = (0.0, 0.0, -0.150)
_REST[_J["left_hand"]] = (0.0, 0.010, -0.080)
_REST[_J["right_hand"]] = (0.0, 0.010, -0.080)
_REST[_J["left_hip"]] = (-0.065, 0.0, -0.010)
_REST[_J["right_hip"]] = (0.065, 0.0, -0.010)
_REST[_J["left_knee"]] = (0.0, 0.0, -0.245)
_REST[_J["right_knee"]] = (0.0, 0.0, -0.245)
_REST[_J["left_ankle"]] = (0.0, 0.0, -0.250)
_REST[_J["right_ankle"]] = (0.0, 0.0, -0.250)
_REST[_J["left_toe"]] = (0.0, 0.120, -0.035)
_REST[_J["right_toe"]] = (0.0, 0.120, -0.035)

# Segment groups that share one per-person length factor (left and right together).
_SEGMENT_GROUPS: dict[str, tuple[str, ...]] = {
    "trunk": ("spine", "thorax"),
    "neck": ("neck",),
    "head": ("head", "head_top", "nose", "left_eye", "right_eye", "left_ear", "right_ear"),
    "shoulder_width": ("left_shoulder", "right_shoulder"),
    "upper_arm": ("left_elbow", "right_elbow"),
    "forearm": ("left_wrist", "right_wrist"),
    "hand": ("left_hand", "right_hand"),
    "hip_width": ("left_hip", "right_hip"),
    "thigh": ("left_knee", "right_knee"),
    "shin": ("left_ankle", "right_ankle"),
    "foot": ("left_toe", "right_toe"),
}
# Relative standard deviation of each group's length factor (adults; inter-individual spread of
# segment-to-height ratios is a few percent, widths vary more).
_SEGMENT_SPREAD = {
    "trunk": 0.04, "neck": 0.08, "head": 0.04, "shoulder_width": 0.06, "upper_arm": 0.04,
    "forearm": 0.04, "hand": 0.05, "hip_width": 0.08, "thigh": 0.04, "shin": 0.04, "foot": 0.05,
}  # fmt: skip

# Degrees of freedom. Left/right DOFs are defined mirror-symmetrically, so swapping the l_ and r_
# columns (and negating the side/twist of the trunk and neck) mirrors a pose.
DOF_NAMES: tuple[str, ...] = (
    "lumbar_flex", "lumbar_side", "lumbar_twist",
    "chest_flex", "chest_side", "chest_twist",
    "neck_flex", "neck_side", "neck_twist",
    "l_sh_plane", "l_sh_elev", "l_sh_twist", "l_elbow", "l_wrist",
    "r_sh_plane", "r_sh_elev", "r_sh_twist", "r_elbow", "r_wrist",
    "l_hip_flex", "l_hip_abd", "l_hip_twist", "l_knee", "l_ankle",
    "r_hip_flex", "r_hip_abd", "r_hip_twist", "r_knee", "r_ankle",
)  # fmt: skip
_D = {name: i for i, name in enumerate(DOF_NAMES)}
NUM_DOFS = len(DOF_NAMES)

# Anatomical limits in degrees (active range of motion; AAOS / Norkin & White). Shoulder:
# plane of elevation (0 = sideways, 90 = forward) and elevation (0 = hanging, 180 = overhead).
_SIDE_LIMITS = {
    "sh_plane": (-90.0, 150.0), "sh_elev": (0.0, 180.0), "sh_twist": (-90.0, 90.0),
    "elbow": (0.0, 150.0), "wrist": (-60.0, 60.0),
    "hip_flex": (-25.0, 130.0), "hip_abd": (-25.0, 50.0), "hip_twist": (-40.0, 45.0),
    "knee": (0.0, 155.0), "ankle": (-40.0, 35.0),
}  # fmt: skip
DOF_LIMITS: dict[str, tuple[float, float]] = {
    "lumbar_flex": (-20.0, 60.0), "lumbar_side": (-25.0, 25.0), "lumbar_twist": (-30.0, 30.0),
    "chest_flex": (-15.0, 40.0), "chest_side": (-20.0, 20.0), "chest_twist": (-30.0, 30.0),
    "neck_flex": (-45.0, 60.0), "neck_side": (-35.0, 35.0), "neck_twist": (-75.0, 75.0),
    **{f"{s}_{k}": v for s in ("l", "r") for k, v in _SIDE_LIMITS.items()},
}  # fmt: skip
_LO = np.array([DOF_LIMITS[n][0] for n in DOF_NAMES])
_HI = np.array([DOF_LIMITS[n][1] for n in DOF_NAMES])


def _mirror_name(name: str) -> str:
    side = name[:2]
    return {"l_": "r_", "r_": "l_"}.get(side, side) + name[2:]


_MIRROR_PERM = np.array([_D[_mirror_name(n)] for n in DOF_NAMES])
_MIRROR_SIGN = np.array(
    [
        -1.0 if n.endswith(("_side", "_twist")) and n[:2] not in ("l_", "r_") else 1.0
        for n in DOF_NAMES
    ]
)

# Clearance from each joint to the body surface below it (units of H): people are lifted so
# that min_j (z_j - CLEARANCE_j * H) = 0, i.e. the lowest body surface touches the floor.
CLEARANCE = np.full(NUM_JOINTS, 0.03)
CLEARANCE[[_J["pelvis"], _J["spine"], _J["thorax"]]] = 0.06
CLEARANCE[[_J["head"]]] = 0.055
CLEARANCE[[_J["left_toe"], _J["right_toe"]]] = 0.005
CLEARANCE[[_J["left_ankle"], _J["right_ankle"]]] = 0.04
CLEARANCE[[_J["left_knee"], _J["right_knee"]]] = 0.03


def joint_index(name: str) -> int:
    """Index of a model joint by name; ValueError listing the valid names if unknown."""
    try:
        return _J[name]
    except KeyError:
        raise ValueError(f"unknown body joint {name!r}; valid: {', '.join(JOINT_NAMES)}") from None


# How a keypoint set's names map to model joints where the names differ. Per set, because the
# same name means different points: Human3.6M's "neck" is the model's upper neck (it is labelled
# "neck/nose" in some releases), CrowdPose's, AI Challenger's and Halpe's "neck" the base of the
# neck between the shoulders (the model's thorax).
_ALIASES: dict[str, dict[str, str]] = {
    "mpii16": {"upper_neck": "neck"},
    "h36m17": {"head": "head_top"},  # Human3.6M's "head" joint is the top of the head
    "crowdpose14": {"top_head": "head_top", "neck": "thorax"},
    "aic14": {"neck": "thorax"},
    "posetrack17": {"head_bottom": "neck"},  # the bottom of the head: the upper neck
    "halpe26": {"head": "head_top", "neck": "thorax"},
    "humanart21": {"left_finger": "left_hand", "right_finger": "right_hand"},  # the hand tips
}


def _feet() -> dict[str, tuple[str, tuple[tuple[str, float], ...]]]:
    """Halpe's foot points from the ankle, toe, knee and hips (rest offsets in units of H: the
    toe tip is 0.12 ahead of the ankle and 0.035 below it, the hips 0.13 apart).

    heel = ankle + 0.14 (ankle - knee) - 0.25 (toe - ankle): 0.03 behind, 0.026 below the ankle.
    big toe = toe + 0.15 (other hip - hip): 0.02 to the inside of the toe tip.
    small toe = 0.8 toe + 0.2 ankle - 0.12 (other hip - hip): 0.016 to the outside, 0.024 back.
    """
    out = {}
    for side, other in (("left", "right"), ("right", "left")):
        ankle, knee, toe = f"{side}_ankle", f"{side}_knee", f"{side}_toe"
        hip, other_hip = f"{side}_hip", f"{other}_hip"
        out[f"{side}_heel"] = (ankle, ((ankle, 1.39), (knee, -0.14), (toe, -0.25)))
        out[f"{side}_big_toe"] = (toe, ((toe, 1.0), (hip, -0.15), (other_hip, 0.15)))
        out[f"{side}_small_toe"] = (
            toe,
            ((toe, 0.8), (ankle, 0.2), (hip, 0.12), (other_hip, -0.12)),
        )
    return out


# Keypoints that are no model joint: name -> (the joint whose visibility it takes, its position
# as an affine combination of model joints, weights summing to 1 so it moves with the body).
_DERIVED: dict[str, tuple[str, tuple[tuple[str, float], ...]]] = {
    "hip": ("pelvis", (("left_hip", 0.5), ("right_hip", 0.5))),  # Halpe's mid-hip
    **_feet(),
}


@dataclass(frozen=True)
class KeypointMap:
    """How a dataset skeleton's K keypoints come from the model's J joints.

    Arguments:
        joint: (K,) the model joint each keypoint is; for a derived keypoint, the joint whose
            visibility it takes.
        weights: (K, J) each keypoint as an affine combination of model joints (rows sum to 1;
            one-hot where the keypoint is a model joint).
        derived: (K,) True where the keypoint is no model joint (Halpe's hip and feet).
    """

    joint: np.ndarray
    weights: np.ndarray
    derived: np.ndarray

    def points(self, joints: np.ndarray) -> np.ndarray:
        """The keypoints (..., K, D) of model joints (..., J, D); a model joint is copied as is."""
        out = joints[..., self.joint, :]
        if self.derived.any():
            w = self.weights[self.derived]
            out[..., self.derived, :] = np.einsum("kj,...jd->...kd", w, joints)
        return out


def skeleton_keypoint_map(skeleton: Skeleton) -> KeypointMap:
    """The :class:`KeypointMap` of a dataset skeleton: each keypoint is a model joint of the same
    name, or of its alias in that set (``_ALIASES``), or derived from model joints (``_DERIVED``).

    Raises:
        ValueError: a keypoint name that is none of these, listing the model's joints.
    """
    aliases = _ALIASES.get(skeleton.name, {})
    k = skeleton.num_keypoints
    joint = np.zeros(k, dtype=np.int64)
    weights = np.zeros((k, NUM_JOINTS))
    derived = np.zeros(k, dtype=bool)
    for i, name in enumerate(skeleton.keypoint_names):
        name = aliases.get(name, name)
        if name not in _J and name in _DERIVED:
            proxy, combination = _DERIVED[name]
            joint[i], derived[i] = _J[proxy], True
            for j, w in combination:
                weights[i, _J[j]] += w
        else:
            joint[i] = joint_index(name)
            weights[i, joint[i]] = 1.0
    return KeypointMap(joint, weights, derived)


def keypoint_sets() -> tuple[str, ...]:
    """The built-in skeletons (``posereg.skeletons.SKELETONS``) the generator can label: those
    whose every keypoint maps to the model (:func:`skeleton_keypoint_map`)."""
    out = []
    for name, skeleton in SKELETONS.items():
        try:
            skeleton_keypoint_map(skeleton)
        except ValueError:
            continue
        out.append(name)
    return tuple(out)


def skeleton_joint_indices(skeleton: Skeleton) -> np.ndarray:
    """Model joint index (K,) for each keypoint of a dataset skeleton whose keypoints are all
    model joints (see :func:`skeleton_keypoint_map` for the names each set maps).

    Raises:
        ValueError: a keypoint that is derived from several joints (use skeleton_keypoint_map).
    """
    kmap = skeleton_keypoint_map(skeleton)
    if kmap.derived.any():
        names = [n for n, d in zip(skeleton.keypoint_names, kmap.derived, strict=True) if d]
        raise ValueError(
            f"{skeleton.name}: {names} are derived from several model joints; "
            "use skeleton_keypoint_map"
        )
    return kmap.joint


# ----------------------------------------------------------------------------------------------
# Shapes


@dataclass
class Bodies:
    """N people: their shape, pose and world placement.

    Arguments:
        height: standing height (N,), mm.
        girth: limb thickness factor (N,), 1 = average build.
        angles: joint angles (N, NUM_DOFS), degrees, in ``DOF_NAMES`` order.
        pose_class: index into ``POSE_CLASSES`` (N,).
        joints: joint positions (N, J, 3), mm, world frame (z up, floor at z = 0).
        head_rot: rotation of the head frame (N, 3, 3); columns are the head's right, forward
            and up axes in world coordinates.
    """

    height: np.ndarray
    girth: np.ndarray
    angles: np.ndarray
    pose_class: np.ndarray
    joints: np.ndarray
    head_rot: np.ndarray

    def __len__(self) -> int:
        return len(self.height)


def sample_shapes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample body sizes.

    Adult stature is about normal with mean 1700 mm and sd 90 mm pooled over sexes (NCD-RisC
    2016 world averages are 1710 mm for men and 1590 mm for women); we clip to 1450..2000 mm.

    Returns:
        height (N,) mm, girth (N,) thickness factor, offsets (N, J, 3) rest bone offsets in mm.
    """
    height = np.clip(rng.normal(1700.0, 90.0, n), 1450.0, 2000.0)
    girth = np.clip(rng.normal(1.0, 0.12, n), 0.75, 1.35)
    scale = np.ones((n, NUM_JOINTS))
    for group, joints in _SEGMENT_GROUPS.items():
        f = np.clip(rng.normal(1.0, _SEGMENT_SPREAD[group], n), 0.85, 1.15)
        scale[:, [_J[j] for j in joints]] = f[:, None]
    offsets = _REST[None] * (height[:, None, None] * scale[..., None])
    return height, girth, offsets


# ----------------------------------------------------------------------------------------------
# Rotations


def _rot(axis: int, deg: np.ndarray) -> np.ndarray:
    """Rotation matrices (N, 3, 3) about a coordinate axis (0 = x, 1 = y, 2 = z) by deg (N,)."""
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    r = np.zeros((len(a), 3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r[:, axis, axis] = 1.0
    r[:, i, i] = c
    r[:, j, j] = c
    r[:, i, j] = -s
    r[:, j, i] = s
    return r


_MIRROR = np.diag([-1.0, 1.0, 1.0])


def _trunk_rot(flex: np.ndarray, side: np.ndarray, twist: np.ndarray) -> np.ndarray:
    # Forward flexion tilts the segment's up axis toward +y: R_x(-flex).
    return _rot(2, twist) @ _rot(1, side) @ _rot(0, -flex)


def _local_rotations(angles: np.ndarray) -> dict[int, np.ndarray]:
    """Rotation of each articulated bone relative to its parent bone, from joint angles.

    Returns:
        joint index -> rotation (N, 3, 3); bones not listed do not rotate (identity).
    """
    a = {name: angles[:, i] for i, name in enumerate(DOF_NAMES)}
    local = {
        _J["spine"]: _trunk_rot(a["lumbar_flex"], a["lumbar_side"], a["lumbar_twist"]),
        _J["thorax"]: _trunk_rot(a["chest_flex"], a["chest_side"], a["chest_twist"]),
        # The neck takes 40 % of the head-neck motion, the head the rest.
        _J["neck"]: _trunk_rot(0.4 * a["neck_flex"], 0.4 * a["neck_side"], 0.4 * a["neck_twist"]),
        _J["head"]: _trunk_rot(0.6 * a["neck_flex"], 0.6 * a["neck_side"], 0.6 * a["neck_twist"]),
    }
    for side, s in (("l", "left"), ("r", "right")):
        # Shoulder, ISB-style: plane of elevation phi, elevation theta, axial twist tau; for the
        # left arm R_z(-phi) R_y(theta) R_z(phi + tau), the right arm is its mirror image.
        phi, theta, tau = a[f"{side}_sh_plane"], a[f"{side}_sh_elev"], a[f"{side}_sh_twist"]
        shoulder = _rot(2, -phi) @ _rot(1, theta) @ _rot(2, phi + tau)
        hip = (
            _rot(0, a[f"{side}_hip_flex"])
            @ _rot(1, a[f"{side}_hip_abd"])
            @ _rot(2, -a[f"{side}_hip_twist"])
        )
        if side == "r":
            shoulder = _MIRROR @ shoulder @ _MIRROR
            hip = _MIRROR @ hip @ _MIRROR
        local[_J[f"{s}_elbow"]] = shoulder
        local[_J[f"{s}_wrist"]] = _rot(0, a[f"{side}_elbow"])  # flexion brings the forearm forward
        local[_J[f"{s}_hand"]] = _rot(0, a[f"{side}_wrist"])
        local[_J[f"{s}_knee"]] = hip
        local[_J[f"{s}_ankle"]] = _rot(0, -a[f"{side}_knee"])  # the shin folds backward
        local[_J[f"{s}_toe"]] = _rot(0, a[f"{side}_ankle"])  # dorsiflexion lifts the toes
    return local


def forward_kinematics(
    offsets: np.ndarray, local: dict[int, np.ndarray], root: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Joint positions from bone offsets and rotations.

    The bone ending at joint j has frame ``G_j = G_parent @ local_j`` and
    ``P_j = P_parent + G_j @ offset_j``; the pelvis sits at the origin with frame ``root``.

    Arguments:
        offsets: rest bone offsets (N, J, 3).
        local: joint index -> bone rotation relative to the parent bone (N, 3, 3); missing
            joints do not rotate.
        root: global rotation of the pelvis (N, 3, 3).

    Returns:
        joints (N, J, 3) and the list of J bone frames, each (N, 3, 3).
    """
    n = len(offsets)
    frames = [root]
    points = [np.zeros((n, 3))]
    for j in range(1, NUM_JOINTS):
        p = PARENTS[j]
        frame = frames[p] @ local[j] if j in local else frames[p]
        frames.append(frame)
        points.append(points[p] + np.einsum("nij,nj->ni", frame, offsets[:, j]))
    return np.stack(points, axis=1), frames


# ----------------------------------------------------------------------------------------------
# Pose classes: each returns angles (N, NUM_DOFS) in degrees, before clipping to the limits;
# `spread` scales the random variation around the class's typical posture.

_PoseFn = Callable[[np.random.Generator, int, float], np.ndarray]


def _base(rng: np.random.Generator, n: int, s: float) -> np.ndarray:
    """A relaxed upright posture with small random variation (every class starts here)."""
    a = np.zeros((n, NUM_DOFS))

    def set_(name: str, mean: float | np.ndarray, sd: float) -> None:
        a[:, _D[name]] = mean + sd * s * rng.standard_normal(n)

    set_("lumbar_flex", 3.0, 4.0)
    set_("lumbar_side", 0.0, 3.0)
    set_("lumbar_twist", 0.0, 5.0)
    set_("chest_flex", 2.0, 4.0)
    set_("chest_side", 0.0, 3.0)
    set_("chest_twist", 0.0, 5.0)
    set_("neck_flex", 5.0, 12.0)
    set_("neck_side", 0.0, 8.0)
    set_("neck_twist", 0.0, 25.0)
    for side in ("l", "r"):
        set_(f"{side}_sh_plane", 15.0, 20.0)
        a[:, _D[f"{side}_sh_elev"]] = np.abs(10.0 + 8.0 * s * rng.standard_normal(n))
        set_(f"{side}_sh_twist", 0.0, 20.0)
        a[:, _D[f"{side}_elbow"]] = np.abs(12.0 + 15.0 * s * rng.standard_normal(n))
        set_(f"{side}_wrist", 0.0, 10.0)
        set_(f"{side}_hip_flex", 0.0, 4.0)
        set_(f"{side}_hip_abd", 4.0, 3.0)
        set_(f"{side}_hip_twist", 5.0, 8.0)
        a[:, _D[f"{side}_knee"]] = np.abs(4.0 + 5.0 * s * rng.standard_normal(n))
        set_(f"{side}_ankle", 0.0, 5.0)
    return a


def _arms(
    rng: np.random.Generator, a: np.ndarray, side: str, s: float, **ranges: tuple[float, float]
) -> None:
    """Overwrite one arm's DOFs with uniform draws from the given (low, high) ranges."""
    n = len(a)
    for key, (lo, hi) in ranges.items():
        a[:, _D[f"{side}_{key}"]] = rng.uniform(lo, hi, n) if s > 0 else 0.5 * (lo + hi)


def _standing(rng: np.random.Generator, n: int, s: float) -> np.ndarray:
    a = _base(rng, n, s)
    # A third hold something in front of the body (hands at chest or waist height).
    front = rng.random(n) < 0.3
    if front.any():
        b = a[front]
        for side in ("l", "r"):
            _arms(
                rng,
                b,
                side,
                s,
                sh_plane=(60, 100),
                sh_elev=(15, 45),
                elbow=(60, 110),
                sh_twist=(-20, 20),
            )
        a[front] = b
    # Weight on one leg: that hip adducts, the other knee bends a little.
    shift = rng.random(n) < 0.4
    a[shift, _D["l_hip_abd"]] -= 6.0
    a[shift, _D["r_knee"]] += rng.uniform(5, 20, shift.sum())
    return a


def _gait(rng: np.random.Generator, n: int, s: float, running: bool) -> np.ndarray:
    a = _base(rng, n, s)
    phase = rng.uniform(0, 2 * np.pi, n)
    hip_amp = rng.uniform(30, 50, n) if running else rng.uniform(15, 30, n)
    arm_amp = rng.uniform(25, 50, n) if running else rng.uniform(10, 30, n)
    hip_mean, knee_amp, knee_rest = (15.0, 85.0, 20.0) if running else (5.0, 50.0, 6.0)
    for side, ph in (("l", phase), ("r", phase + np.pi)):
        a[:, _D[f"{side}_hip_flex"]] = hip_mean + hip_amp * np.sin(ph)
        # The knee flexes most in mid-swing, while the hip moves forward (cos > 0).
        a[:, _D[f"{side}_knee"]] = knee_rest + knee_amp * np.clip(np.cos(ph), 0, None) ** 1.5
        a[:, _D[f"{side}_ankle"]] = 10.0 * np.cos(ph)
        # Arms swing opposite to the leg on the same side, in the sagittal plane (plane 90).
        a[:, _D[f"{side}_sh_plane"]] = 90.0 + 10.0 * s * rng.standard_normal(n)
        a[:, _D[f"{side}_sh_elev"]] = -arm_amp * np.sin(ph) + (10.0 if running else 0.0)
        a[:, _D[f"{side}_elbow"]] = rng.uniform(70, 100, n) if running else rng.uniform(10, 35, n)
    a[:, _D["lumbar_twist"]] += 6.0 * np.sin(phase)
    if running:
        a[:, _D["lumbar_flex"]] += rng.uniform(5, 15, n)
    return a


def _walking(rng: np.random.Generator, n: int, s: float) -> np.ndarray:
    return _gait(rng, n, s, running=False)


def _running(rng: np.random.Generator, n: int, s: float) -> np.ndarray:
    return _gait(rng, n, s, running=True)


def _sitting(rng: np.random.Generator, n: int, s: float) -> np.ndarray:
    a = _base(rng, n, s)
    for side in ("l", "r"):
        a[:, _D[f"{side}_hip_flex"]] = rng.uniform(70, 100, n)
        a[:, _D[f"{side}_hip_abd"]] = rng.uniform(0, 20, n)
        a[:, _D[f"{side}_hip_twist"]] = rng.uniform(-10, 20, n)
        a[:, _D[f"{side}_knee"]] = rng.uniform(60, 115, n)
        a[:, _D[f"{side}_ankle"]] = rng.uniform(-15, 15, n)
        _arms(rng, a, side, s, sh_plane=(40, 100), sh_elev=(10, 50), elbow=(20, 100))
    a[:, _D["lumbar_flex"]] += rng.uniform(-10, 20, n)
    return a


def _crouching(rng: np.random.Generator, n: int, s: float) -> np.ndarray:
    a = _base(rng, n, s)
    for side in ("l", "r"):
        a[:, _D[f"{side}_hip_flex"]] = rng.uniform(90, 125, n)
        a[:, _D[f"{side}_hip_abd"]] = rng.uniform(5, 30, n)
        a[:, _D[f"{side}_knee"]] = rng.uniform(110, 150, n)
        a[:, _D[f"{side}_ankle"]] = rng.uniform(15, 35, n)
        _arms(rng, a, side, s, sh_plane=(60, 110), sh_elev=(20, 80), elbow=(10, 90))
    a[:, _D["lumbar_flex"]] = rng.uniform(20, 45, n)
    a[:, _D["chest_flex"]] = rng.uniform(5, 25, n)
    a[:, _D["neck_flex"]] = rng.uniform(-40, 10, n)  # looking forward, not at the floor
    # Kneeling on one knee: the left thigh vertical, its shin on the floor.
    kneel = rng.random(n) < 0.3
    k = kneel.sum()
    a[kneel, _D["l_hip_flex"]] = rng.uniform(-5, 15, k)
    a[kneel, _D["l_knee"]] = rng.uniform(85, 110, k)
    a[kneel, _D["r_hip_flex"]] = rng.uniform(80, 100, k)
    a[kneel, _D["r_knee"]] = rng.uniform(80, 100, k)
    a[kneel, _D["lumbar_flex"]] = rng.uniform(0, 20, k)
    return a


def _reaching(rng: np.random.Generator, n: int, s: float) -> np.ndarray:
    a = _base(rng, n, s)
    _arms(rng, a, "l", s, sh_plane=(20, 120), sh_elev=(50, 150), elbow=(0, 35), sh_twist=(-30, 30))
    a[:, _D["lumbar_twist"]] += rng.uniform(0, 25, n)
    a[:, _D["lumbar_side"]] += rng.uniform(-10, 5, n)
    a[:, _D["neck_twist"]] = rng.uniform(-20, 30, n)
    a[:, _D["neck_flex"]] = rng.uniform(-30, 10, n)
    # A third bend down to reach low, knees slightly bent.
    low = rng.random(n) < 0.35
    m = low.sum()
    a[low, _D["lumbar_flex"]] = rng.uniform(30, 60, m)
    a[low, _D["chest_flex"]] = rng.uniform(10, 35, m)
    a[low, _D["l_sh_plane"]] = rng.uniform(60, 110, m)
    a[low, _D["l_sh_elev"]] = rng.uniform(50, 110, m)
    a[low, _D["r_sh_plane"]] = rng.uniform(40, 100, m)
    a[low, _D["r_sh_elev"]] = rng.uniform(20, 80, m)
    a[low, _D["neck_flex"]] = rng.uniform(-40, 0, m)
    for side in ("l", "r"):
        a[low, _D[f"{side}_knee"]] = rng.uniform(0, 40, m)
        a[low, _D[f"{side}_hip_flex"]] = rng.uniform(0, 30, m)
    # Step toward the target with one leg.
    step = rng.random(n) < 0.4
    a[step, _D["l_hip_flex"]] += rng.uniform(15, 35, step.sum())
    a[step, _D["l_knee"]] += rng.uniform(5, 30, step.sum())
    return a


def _arms_raised(rng: np.random.Generator, n: int, s: float) -> np.ndarray:
    a = _base(rng, n, s)
    for side in ("l", "r"):
        _arms(
            rng,
            a,
            side,
            s,
            sh_plane=(-20, 100),
            sh_elev=(110, 175),
            elbow=(0, 45),
            sh_twist=(-30, 30),
        )
    # A third in the "surrender / cheering" posture: upper arms out, forearms up.
    cheer = rng.random(n) < 0.35
    m = cheer.sum()
    for side in ("l", "r"):
        a[cheer, _D[f"{side}_sh_plane"]] = rng.uniform(-15, 30, m)
        a[cheer, _D[f"{side}_sh_elev"]] = rng.uniform(70, 110, m)
        a[cheer, _D[f"{side}_sh_twist"]] = rng.uniform(60, 90, m)
        a[cheer, _D[f"{side}_elbow"]] = rng.uniform(60, 110, m)
    a[:, _D["neck_flex"]] = rng.uniform(-35, 10, n)
    return a


def _lying(rng: np.random.Generator, n: int, s: float) -> np.ndarray:
    a = _base(rng, n, s)
    for side in ("l", "r"):
        a[:, _D[f"{side}_hip_flex"]] = rng.uniform(-5, 50, n)
        a[:, _D[f"{side}_hip_abd"]] = rng.uniform(0, 25, n)
        a[:, _D[f"{side}_knee"]] = rng.uniform(0, 80, n)
        _arms(
            rng,
            a,
            side,
            s,
            sh_plane=(-30, 120),
            sh_elev=(0, 170),
            elbow=(0, 120),
            sh_twist=(-60, 60),
        )
    a[:, _D["neck_twist"]] = rng.uniform(-60, 60, n)
    return a


POSE_CLASSES: dict[str, _PoseFn] = {
    "standing": _standing,
    "walking": _walking,
    "running": _running,
    "sitting": _sitting,
    "crouching": _crouching,
    "reaching": _reaching,
    "arms_raised": _arms_raised,
    "lying": _lying,
}
_CLASS_INDEX = {name: i for i, name in enumerate(POSE_CLASSES)}


def _normalise_and_clip(a: np.ndarray) -> np.ndarray:
    """Turn signed shoulder elevations into (plane, elevation) form, then clip to the limits."""
    for side in ("l", "r"):
        plane, elev = _D[f"{side}_sh_plane"], _D[f"{side}_sh_elev"]
        neg = a[:, elev] < 0
        a[neg, elev] = -a[neg, elev]
        a[neg, plane] += 180.0
        a[:, plane] = (a[:, plane] + 180.0) % 360.0 - 180.0
    a = np.clip(a, _LO, _HI)
    for side in ("l", "r"):
        plane, elev = _D[f"{side}_sh_plane"], _D[f"{side}_sh_elev"]
        a[:, elev] = np.minimum(a[:, elev], shoulder_elevation_cap(a[:, plane]))
    return a


def shoulder_elevation_cap(plane: np.ndarray) -> np.ndarray:
    """The highest shoulder elevation (N,) in degrees for a plane of elevation (N,) in degrees.

    A pose-dependent limit: arms behind the back (plane toward -90) cannot rise above about 60
    degrees; from plane -30 on, the full 180.
    """
    return 60.0 + 120.0 * np.clip((plane + 90.0) / 60.0, 0.0, 1.0)


def sample_angles(
    rng: np.random.Generator, n: int, classes: tuple[str, ...], spread: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Sample joint angles from a uniform mixture of pose classes, mirrored at random.

    Arguments:
        rng: random generator.
        n: number of poses.
        classes: names from ``POSE_CLASSES``.
        spread: scales the random variation (0 gives each class's typical posture).

    Returns:
        angles (N, NUM_DOFS) in degrees, within ``DOF_LIMITS``; class index (N,).
    """
    for c in classes:
        if c not in POSE_CLASSES:
            raise ValueError(f"unknown pose class {c!r}; valid: {', '.join(POSE_CLASSES)}")
    pick = rng.integers(0, len(classes), n)
    angles = np.empty((n, NUM_DOFS))
    for k, name in enumerate(classes):
        idx = np.flatnonzero(pick == k)
        if len(idx):
            angles[idx] = POSE_CLASSES[name](rng, len(idx), spread)
    mirror = rng.random(n) < 0.5
    angles[mirror] = angles[mirror][:, _MIRROR_PERM] * _MIRROR_SIGN
    class_index = np.array([_CLASS_INDEX[c] for c in classes])[pick]
    return _normalise_and_clip(angles), class_index


def sample_bodies(
    rng: np.random.Generator, n: int, classes: tuple[str, ...], spread: float = 1.0
) -> Bodies:
    """Sample N people standing (or sitting, lying...) on the floor at the world origin.

    Each person gets a shape (``sample_shapes``), a pose (``sample_angles``), a random heading
    about the vertical and, for the "lying" class, a body rolled onto the back, front or side.
    The body is then lifted so that its lowest surface point touches the floor z = 0, and
    centred horizontally on the pelvis.

    Returns:
        ``Bodies`` with joints (N, J, 3) in mm, world frame.
    """
    height, girth, offsets = sample_shapes(rng, n)
    angles, pose_class = sample_angles(rng, n, classes, spread)
    root = _rot(2, rng.uniform(0.0, 360.0, n))
    lying = pose_class == _CLASS_INDEX["lying"]
    if lying.any():
        m = int(lying.sum())
        # 0: on the back (face up), 1: on the front, 2/3: on either side.
        how = rng.integers(0, 4, m)
        on_back_or_front = _rot(0, np.where(how == 0, 90.0, -90.0))
        on_side = _rot(1, np.where(how == 2, 90.0, -90.0))
        lie = np.where((how < 2)[:, None, None], on_back_or_front, on_side)
        root[lying] = root[lying] @ lie
    return pose_bodies(height, girth, offsets, angles, pose_class, root)


def pose_bodies(
    height: np.ndarray,
    girth: np.ndarray,
    offsets: np.ndarray,
    angles: np.ndarray,
    pose_class: np.ndarray,
    root: np.ndarray,
) -> Bodies:
    """Pose N people and put them on the floor: forward kinematics of ``angles`` (N, NUM_DOFS)
    with rest ``offsets`` (N, J, 3) and pelvis rotation ``root`` (N, 3, 3), then lift each so
    that its lowest body surface (``CLEARANCE``) touches z = 0. The pelvis stays at x = y = 0.
    """
    joints, frames = forward_kinematics(offsets, _local_rotations(angles), root)
    floor = (joints[..., 2] - CLEARANCE * height[:, None]).min(axis=1)
    joints[..., 2] -= floor[:, None]
    return Bodies(
        height=height,
        girth=girth,
        angles=angles,
        pose_class=pose_class,
        joints=joints,
        head_rot=frames[_J["head"]],
    )
