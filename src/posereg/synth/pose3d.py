"""3D pose sampling: (2D, 3D, camera) samples without images, for 2D-to-3D lifting.

The people and cameras come from the same samplers as :func:`posereg.synth.generate` (one
person per camera). Chunk c of 8192 poses draws from ``default_rng([seed, crc32(split), c,
3])``, so N poses are a prefix of M > N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posereg.skeletons import get_skeleton
from posereg.synth.body import POSE_CLASSES, sample_bodies, skeleton_keypoint_map
from posereg.synth.camera import frame_person, load_h36m_calibrations, project
from posereg.synth.noise import apply_label_noise
from posereg.synth.placement import _place_in_capture_area
from posereg.synth.settings import (
    SynthConfig,
    _check_counts,
    _check_split,
    _check_writable,
    _split_key,
)

__all__ = ["AREA_PER_KEYPOINT_BOX", "PoseSamples", "sample_poses", "generate_3d"]

# Silhouette area / area of the box around the projected keypoints, measured on 300 rendered
# single, unoccluded, untruncated people (medium preset): median 0.61 for COCO-17, 0.57 for
# H36M-17, 10-90 % range 0.4-0.9. The 3D-only mode's stand-in for the rendered area when it
# draws noisy 2D labels.
AREA_PER_KEYPOINT_BOX = 0.6


@dataclass
class PoseSamples:
    """N single-person samples without images (for 2D-to-3D lifting).

    Arguments:
        keypoints_2d: clean projections (N, K, 2), pixels (also for points outside the image).
        keypoints_2d_noisy: annotator-style labels (N, K, 2) from the noise model, with every
            in-image keypoint treated as visible and s^2 = ``AREA_PER_KEYPOINT_BOX`` x the area
            of the box around the projected keypoints (no silhouette is rendered here).
        visible: keypoint inside the image (N, K) bool (no occlusion reasoning here).
        joints_3d: camera-frame joints (N, K, 3), mm.
        K: intrinsics (N, 3, 3).
        R: world-to-camera rotations (N, 3, 3).
        t: world-to-camera translations (N, 3), mm.
        pose_class: pose class index (N,) into ``body.POSE_CLASSES``.
        keypoint_names: names of the K keypoints.
    """

    keypoints_2d: np.ndarray
    keypoints_2d_noisy: np.ndarray
    visible: np.ndarray
    joints_3d: np.ndarray
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    pose_class: np.ndarray
    keypoint_names: tuple[str, ...]


_CHUNK_3D = 8192


def sample_poses(
    num_poses: int, seed: int = 0, config: SynthConfig | None = None, split: str = "train"
) -> PoseSamples:
    """Sample (2D, 3D, camera) for ``num_poses`` people, vectorised, without rendering.

    People and cameras come from the same samplers as ``generate`` (one person per camera);
    the keypoint set is ``config.keypoint_set``. Deterministic in (seed, split, config): poses
    are drawn in chunks of 8192, so a run of N poses is a prefix of a run of M > N.
    """
    config = config if config is not None else SynthConfig()
    config.validate()
    _check_split(split)
    _check_counts(num_poses, seed, None, "num_poses")
    skel = get_skeleton(config.keypoint_set)
    kmap = skeleton_keypoint_map(skel)
    calib = load_h36m_calibrations(config.camera_file) if config.camera == "h36m" else None
    h, w = config.image_size
    k = skel.num_keypoints
    out = PoseSamples(
        keypoints_2d=np.zeros((num_poses, k, 2)), keypoints_2d_noisy=np.zeros((num_poses, k, 2)),
        visible=np.zeros((num_poses, k), bool), joints_3d=np.zeros((num_poses, k, 3)),
        K=np.zeros((num_poses, 3, 3)), R=np.zeros((num_poses, 3, 3)), t=np.zeros((num_poses, 3)),
        pose_class=np.zeros(num_poses, np.int64), keypoint_names=skel.keypoint_names,
    )  # fmt: skip
    for chunk in range(math.ceil(num_poses / _CHUNK_3D)):
        sl = slice(chunk * _CHUNK_3D, min((chunk + 1) * _CHUNK_3D, num_poses))
        n = _CHUNK_3D  # always a full chunk, so fewer poses are a prefix of more
        rng = np.random.default_rng([seed, _split_key(split), chunk, 3])
        bodies = sample_bodies(rng, n, config.pose_classes, config.pose_spread)
        if calib is None:
            cams = frame_person(
                rng, bodies.joints, config.image_size, config.fov_deg, config.elevation_deg,
                config.roll_std_deg, config.person_height_frac, config.truncation_prob,
            )  # fmt: skip
        else:
            cams = calib.sample(rng, n, config.image_size)
            _place_in_capture_area(rng, bodies, np.arange(n), cams, config.image_size)
        joints = cams.to_camera(kmap.points(bodies.joints))
        uv = project(joints, cams.K)
        visible = (
            (uv[..., 0] >= 0) & (uv[..., 0] <= w - 1) & (uv[..., 1] >= 0) & (uv[..., 1] <= h - 1)
        )
        area = AREA_PER_KEYPOINT_BOX * np.prod(np.ptp(uv, axis=1), axis=1)
        noisy = apply_label_noise(
            rng, uv, np.where(visible, 2, 0), area, skel.oks_k, skel.flip_pairs, config.noise
        )
        m = sl.stop - sl.start
        out.keypoints_2d[sl], out.keypoints_2d_noisy[sl] = uv[:m], noisy.keypoints[:m]
        out.visible[sl], out.joints_3d[sl] = visible[:m], joints[:m]
        out.K[sl], out.R[sl], out.t[sl] = cams.K[:m], cams.R[:m], cams.t[:m]
        out.pose_class[sl] = bodies.pose_class[:m]
    return out


def generate_3d(
    out_dir: str | Path,
    split: str = "train",
    num_poses: int = 100_000,
    seed: int = 0,
    config: SynthConfig | None = None,
) -> Path:
    """Write ``sample_poses`` arrays to ``out_dir/poses3d_<split>.npz`` and return its path.

    The npz holds keypoints_2d, keypoints_2d_noisy, visible, joints_3d (mm, camera frame), K, R,
    t, pose_class, keypoint_names, pose_class_names and image_size.
    """
    config = config if config is not None else SynthConfig()
    config.validate()
    _check_counts(num_poses, seed, None, "num_poses")
    out = Path(out_dir)
    _check_writable(out)
    s = sample_poses(num_poses, seed, config, split)
    path = out / f"poses3d_{split}.npz"
    np.savez(
        path,
        keypoints_2d=s.keypoints_2d.astype(np.float32),
        keypoints_2d_noisy=s.keypoints_2d_noisy.astype(np.float32),
        visible=s.visible,
        joints_3d=s.joints_3d.astype(np.float32),
        K=s.K.astype(np.float32),
        R=s.R.astype(np.float32),
        t=s.t.astype(np.float32),
        pose_class=s.pose_class,
        keypoint_names=np.array(s.keypoint_names),
        pose_class_names=np.array(tuple(POSE_CLASSES)),
        image_size=np.array(config.image_size),
    )
    return path
