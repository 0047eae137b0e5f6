"""2D-3D pairs for two-stage lifting: synthetic (posereg.synth), Human3.6M (VideoPose3D, MMPose).

Conventions (docs/lifting.md): ``keypoints_2d`` are pixels of the native camera image, in the
input skeleton's order; ``joints_3d`` are Human3.6M-17 joints in the camera frame, in mm, relative
to the pelvis (joint 0, which is therefore exactly zero). What the model sees of both is decided
by :class:`posereg.models.lifter.LiftNormalizer`, not here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from posereg.data.badinput import BadInputError
from posereg.data.h36m import (
    H36M_CAMERA_IDS,
    load_h36m_body3d,
    load_videopose3d_2d,
    load_videopose3d_3d,
)
from posereg.skeletons import H36M17, get_skeleton
from posereg.synth.body import skeleton_joint_indices
from posereg.synth.camera import Cameras, load_h36m_calibrations, project_distorted
from posereg.synth.noise import NoiseConfig, apply_label_noise
from posereg.synth.prior import POSE_LABELS, PosePrior, sample_prior_bodies

__all__ = [
    "LiftSet",
    "NOISE_SETTINGS",
    "synthetic_pairs",
    "h36m_videopose3d_pairs",
    "h36m_body3d_pairs",
    "root_relative",
]

#: 2D input noise that imitates a 2D detector, from the annotator noise model (synth/noise.py):
#: ``none``; ``coco``: the COCO-derived model (spread k_i s, 3 % gross errors, 1 % left/right
#: swaps); ``heavy``: twice the spread, 15 % gross errors of 8 x the spread, 5 % swaps.
#: ``coco`` keeps ``scale=1`` (k_i s per axis), the label model's default when docs/lifting.md
#: was measured; the label model's default is now COCO's literal reading, ``COCO_SCALE`` ~ 0.354.
NOISE_SETTINGS: dict[str, NoiseConfig] = {
    "none": NoiseConfig.off(),
    "coco": NoiseConfig(scale=1.0),
    "heavy": NoiseConfig(scale=2.0, outlier_prob=0.15, outlier_scale=8.0, swap_prob=0.05),
}

# The synthetic person's box: silhouette area ~ 0.6 x the box around the projected keypoints
# (posereg.synth.generate.AREA_PER_KEYPOINT_BOX), the s^2 of the noise model.
_AREA_PER_BOX = 0.6


@dataclass
class LiftSet:
    """N 2D-3D pairs.

    Attributes:
        keypoints_2d: (N, K_in, 2) pixels, in ``input_skeleton`` order.
        joints_3d: (N, 17, 3) Human3.6M-17 camera-frame joints, mm, pelvis at 0.
        input_skeleton: name of the 2D skeleton (``h36m17`` or ``coco17``).
        actions: (N,) action names, or None.
        subjects: (N,) subject names, or None.
    """

    keypoints_2d: np.ndarray
    joints_3d: np.ndarray
    input_skeleton: str = "h36m17"
    actions: np.ndarray | None = None
    subjects: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.joints_3d)


def root_relative(joints: np.ndarray) -> np.ndarray:
    """Joints (..., 17, 3) minus their pelvis (joint 0)."""
    return joints - joints[..., :1, :]


def _noise(name: str) -> NoiseConfig:
    try:
        return NOISE_SETTINGS[name]
    except KeyError:
        raise ValueError(f"unknown 2D noise {name!r}; valid: {', '.join(NOISE_SETTINGS)}") from None


def synthetic_pairs(
    num: int,
    seed: int = 0,
    split: str = "train",
    noise: str = "coco",
    input_skeleton: str = "h36m17",
    camera_file: str | None = None,
    pose_classes: tuple[str, ...] | None = None,
    noise_scale: float | None = None,
    prior: PosePrior = "classes",
) -> LiftSet:
    """Synthetic pairs from the generator's bodies seen by the real Human3.6M cameras.

    Each body (posereg.synth.body, the generator's 3D-only sampler) stands on the capture floor
    where its pelvis projects into the central 80 % of a randomly drawn Human3.6M camera (the
    generator's placement); its joints are projected at the camera's native resolution with the
    calibration's lens distortion; the 2D input then gets the detector-like noise ``noise``
    (:data:`NOISE_SETTINGS`). Deterministic in (num, seed, split, settings).

    Arguments:
        num: number of pairs.
        seed, split: the random stream is ``default_rng([seed, crc(split), 11])``.
        noise: ``none``, ``coco`` or ``heavy``.
        input_skeleton: skeleton of the 2D keypoints (``h36m17`` or ``coco17``); the 3D joints
            are always Human3.6M-17.
        camera_file: ``cameras.json`` (None: the one in posereg/samples/h36m).
        pose_classes: pose classes to draw from (posereg.synth.body.POSE_CLASSES; None: the
            generator's default, every class but lying).
        noise_scale: replaces the setting's ``NoiseConfig.scale`` (the spread multiplier; None:
            the setting's own). Ignored for ``none``.
        prior: the 3D poses (:data:`posereg.synth.prior.PosePrior`): ``classes`` draws from
            ``pose_classes``; ``wide`` every joint within its limits, any orientation; ``mixed``
            half of each. The pairs' ``actions`` are the class names, ``wide`` for wide poses.
    """
    import zlib

    from posereg.synth.generate import SynthConfig, _place_in_capture_area  # its placement

    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    config = _noise(noise)
    if noise_scale is not None and noise != "none":
        config = replace(config, scale=float(noise_scale))
        config.validate()
    skel_in = get_skeleton(input_skeleton)
    rng = np.random.default_rng([seed, zlib.crc32(split.encode()), 11])
    calib = load_h36m_calibrations(camera_file)
    classes = tuple(pose_classes or SynthConfig().pose_classes)
    bodies = sample_prior_bodies(rng, num, prior, classes)
    idx = rng.integers(0, len(calib.names), num)
    cams = Cameras(K=calib.K[idx], R=calib.R[idx], t=calib.t[idx])
    h, w = int(calib.size[0, 0]), int(calib.size[0, 1])  # all Human3.6M cameras are ~1000 px
    _place_in_capture_area(rng, bodies, np.arange(num), cams, (h, w))
    world = bodies.joints
    joints_3d = cams.to_camera(world[:, skeleton_joint_indices(H36M17)])
    seen = cams.to_camera(world[:, skeleton_joint_indices(skel_in)])
    uv = project_distorted(seen, cams.K, calib.radial[idx], calib.tangential[idx])
    area = _AREA_PER_BOX * np.prod(np.ptp(uv, axis=1), axis=1)
    labels = apply_label_noise(
        rng, uv, np.full(uv.shape[:2], 2), area, skel_in.oks_k, skel_in.flip_pairs, config
    )
    return LiftSet(
        keypoints_2d=labels.keypoints,
        joints_3d=root_relative(joints_3d),
        input_skeleton=input_skeleton,
        actions=np.asarray(POSE_LABELS)[bodies.pose_class],
    )


def h36m_videopose3d_pairs(
    positions_3d: str,
    positions_2d: str | None = None,
    subjects: tuple[str, ...] = ("S9", "S11"),
    camera_file: str | None = None,
    stride: int = 1,
) -> LiftSet:
    """Pairs from the VideoPose3D archives, one per (subject, action, camera, frame).

    The world joints (``data_3d_h36m.npz``) go to each of the subject's four cameras with the
    ``cameras.json`` extrinsics, become root-relative mm; the 2D input is the matching camera's
    entry of ``positions_2d`` (ground truth or detections such as CPN; a detection sequence
    longer than its 3D sequence is cut to it, as VideoPose3D does) or, when no 2D file is
    given, the projection of the 3D joints with the calibration's distortion.

    Arguments:
        positions_3d, positions_2d: archive paths.
        subjects: e.g. :data:`posereg.data.h36m.TRAIN_SUBJECTS` or ``TEST_SUBJECTS``.
        camera_file: ``cameras.json`` (None: posereg/samples/h36m).
        stride: keep every ``stride``-th frame.

    Raises:
        BadInputError: a subject missing from a file, or a 2D sequence shorter than its 3D one.
    """
    calib = load_h36m_calibrations(camera_file)
    world = load_videopose3d_3d(positions_3d)
    kp2d = load_videopose3d_2d(positions_2d)[0] if positions_2d is not None else None
    xs, ys, acts, subs = [], [], [], []
    for subject in subjects:
        if subject not in world:
            raise BadInputError(
                positions_3d, f"positions_3d[{subject!r}]", f"missing; found {sorted(world)}"
            )
        if kp2d is not None and subject not in kp2d:
            raise BadInputError(
                positions_2d or "", f"positions_2d[{subject!r}]", f"missing; found {sorted(kp2d)}"
            )
        for action, joints in world[subject].items():
            joints = joints[::stride]
            for c, cam_id in enumerate(H36M_CAMERA_IDS):
                i = calib.index(f"{subject}/{cam_id}")
                cam = joints @ calib.R[i].T + calib.t[i]  # (T, 17, 3) camera frame, mm
                if kp2d is None:
                    uv = project_distorted(
                        cam[None], calib.K[i : i + 1], calib.radial[i : i + 1],
                        calib.tangential[i : i + 1],
                    )[0]  # fmt: skip
                else:
                    if action not in kp2d[subject]:
                        raise BadInputError(
                            positions_2d or "", f"positions_2d[{subject!r}][{action!r}]", "missing"
                        )
                    full = kp2d[subject][action][c][::stride]
                    if len(full) < len(cam):
                        raise BadInputError(
                            positions_2d or "",
                            f"positions_2d[{subject!r}][{action!r}][{c}]",
                            f"{len(full)} frames (after stride), fewer than the 3D sequence's {len(cam)}",
                        )
                    uv = full[: len(cam)]
                xs.append(uv)
                ys.append(root_relative(cam))
                acts += [action.split(" ")[0]] * len(cam)
                subs += [subject] * len(cam)
    if not xs:
        raise BadInputError(positions_3d, "positions_3d", f"no frames for subjects {subjects}")
    return LiftSet(
        np.concatenate(xs), np.concatenate(ys), "h36m17", np.asarray(acts), np.asarray(subs)
    )


def h36m_body3d_pairs(path: str) -> LiftSet:
    """Pairs from an MMPose-style ``*_body3d.npz``: ``part`` 2D, ``S`` 3D (metres or mm -> mm).

    The unit of ``S`` is metres when the pelvis depths are below 100 (MMPose writes metres),
    else mm. Subject and action come from ``imgname`` (``S1/S1_Directions_1.54138969/...``).

    Raises:
        BadInputError: a missing field, a wrong shape (naming the field) or a NaN.
    """
    frames = load_h36m_body3d(path)
    for name, arr in (("part", frames.keypoints), ("S", frames.joints_3d)):
        if not np.isfinite(arr).all():
            row = int(np.argwhere(~np.isfinite(arr))[0][0])
            raise BadInputError(
                path, f"field {name}", f"non-finite value (NaN or inf) in frame #{row}"
            )
    joints = frames.joints_3d[..., :3]
    unit = 1000.0 if np.abs(joints[:, 0, 2]).max() < 100.0 else 1.0
    base = [n.split("/")[-1] for n in frames.image_names]
    subjects = np.asarray([b.split("_")[0] for b in base])
    actions = np.asarray([b.split("_", 1)[1].split(".")[0].split("_")[0] for b in base])
    return LiftSet(
        keypoints_2d=frames.keypoints[..., :2],
        joints_3d=root_relative(joints * unit),
        input_skeleton="h36m17",
        actions=actions,
        subjects=subjects,
    )
