"""Pinhole cameras: random look-at cameras framed on a person, or real Human3.6M calibrations.

Conventions (also in docs/synth.md): the world frame has z up and the floor at z = 0, in mm.
A camera maps a world point X to camera coordinates ``X_cam = R @ X + t`` (OpenCV axes: x right,
y down, z forward) and to pixels ``(u, v) = (K @ X_cam)[:2] / X_cam[2]``. Pixel centres sit at
integer coordinates: pixel (row r, column c) covers u in [c - 0.5, c + 0.5), v in [r - 0.5, r + 0.5).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posereg.samples import SAMPLES_DIR

__all__ = [
    "Cameras",
    "H36MCalibrations",
    "DEFAULT_H36M_CAMERAS",
    "project",
    "project_distorted",
    "look_at",
    "frame_person",
    "load_h36m_calibrations",
]

# The real Human3.6M calibrations carried in posereg/samples (see its README).
DEFAULT_H36M_CAMERAS = SAMPLES_DIR / "h36m" / "cameras.json"


@dataclass
class Cameras:
    """N pinhole cameras (no lens distortion).

    Arguments:
        K: intrinsics (N, 3, 3), pixels.
        R: world-to-camera rotation (N, 3, 3).
        t: world-to-camera translation (N, 3), mm; the camera centre is ``-R.T @ t``.
    """

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray

    def __len__(self) -> int:
        return len(self.K)

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points (N, P, 3) to camera coordinates (N, P, 3)."""
        return np.einsum("nij,npj->npi", self.R, points) + self.t[:, None, :]


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Perspective projection of camera-frame points (N, P, 3) with intrinsics (N, 3, 3) to pixels (N, P, 2)."""
    z = points[..., 2]
    u = (
        K[:, None, 0, 0] * points[..., 0] / z
        + K[:, None, 0, 1] * points[..., 1] / z
        + K[:, None, 0, 2]
    )
    v = K[:, None, 1, 1] * points[..., 1] / z + K[:, None, 1, 2]
    return np.stack([u, v], axis=-1)


def project_distorted(
    points: np.ndarray, K: np.ndarray, radial: np.ndarray, tangential: np.ndarray
) -> np.ndarray:
    """Projection with the Human3.6M lens model: camera-frame points (N, P, 3) to pixels (N, P, 2).

    The model of the Human3.6M calibration code, as 3d-pose-baseline (cameras.py,
    ``project_point_radial``) and MMPose's ``SimpleCamera`` implement it. With x = X/Z, y = Y/Z,
    r^2 = x^2 + y^2, radial = 1 + k1 r^2 + k2 r^4 + k3 r^6:

        x_d = x (radial + p1 y + p2 x) + p2 r^2
        y_d = y (radial + p1 y + p2 x) + p1 r^2

    then (u, v) = (f_x x_d + c_x, f_y y_d + c_y) (K's skew is used as in :func:`project`). This
    is not OpenCV's tangential term (2 p1 x y + p2 (r^2 + 2 x^2)); on the Human3.6M fixtures it
    reproduces the dataset's 2D keypoints to 1e-4 px, OpenCV's form to about 0.1 px.

    Arguments:
        points: camera-frame points (N, P, 3), z > 0.
        K: intrinsics (N, 3, 3).
        radial: (k1, k2, k3) per camera (N, 3).
        tangential: (p1, p2) per camera (N, 2).
    """
    xy = points[..., :2] / points[..., 2:3]  # (N, P, 2)
    r2 = (xy**2).sum(-1, keepdims=True)  # (N, P, 1)
    k = radial[:, None, :]
    p1, p2 = tangential[:, None, 0:1], tangential[:, None, 1:2]
    scale = 1 + k[..., 0:1] * r2 + k[..., 1:2] * r2**2 + k[..., 2:3] * r2**3
    scale = scale + p1 * xy[..., 1:2] + p2 * xy[..., 0:1]
    distorted = xy * scale + np.concatenate([p2, p1], axis=-1) * r2
    ones = np.ones_like(distorted[..., :1])
    return project(np.concatenate([distorted, ones], axis=-1), K)


def _normalise(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def look_at(
    position: np.ndarray, target: np.ndarray, roll_deg: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera (R, t) of cameras at ``position`` (N, 3) looking at ``target`` (N, 3).

    The image x axis stays horizontal (then turned by ``roll_deg`` (N,) about the optical axis);
    the camera must not look straight up or down.

    Returns:
        R (N, 3, 3), t (N, 3).
    """
    z = _normalise(target - position)
    x = _normalise(np.cross(z, np.array([0.0, 0.0, 1.0])))
    y = np.cross(z, x)
    R = np.stack([x, y, z], axis=1)  # rows are the camera axes in world coordinates
    a = np.deg2rad(roll_deg)
    c, s = np.cos(a), np.sin(a)
    roll = np.zeros_like(R)
    roll[:, 0, 0], roll[:, 0, 1], roll[:, 1, 0], roll[:, 1, 1], roll[:, 2, 2] = c, -s, s, c, 1.0
    R = roll @ R
    return R, -np.einsum("nij,nj->ni", R, position)


def _rotation_from_z(d: np.ndarray) -> np.ndarray:
    """The smallest rotations (N, 3, 3) taking the unit z axis to unit vectors d (N, 3)."""
    d = _normalise(d)
    k = np.cross(np.array([0.0, 0.0, 1.0]), d)  # axis * sin(angle)
    c = d[:, 2]
    kx = np.zeros((len(d), 3, 3))
    kx[:, 0, 1], kx[:, 0, 2], kx[:, 1, 0] = -k[:, 2], k[:, 1], k[:, 2]
    kx[:, 1, 2], kx[:, 2, 0], kx[:, 2, 1] = -k[:, 0], -k[:, 1], k[:, 0]
    # Rodrigues: I + [k]x + [k]x^2 / (1 + cos); d never points backwards here.
    return np.eye(3) + kx + kx @ kx / (1.0 + c)[:, None, None]


def frame_person(
    rng: np.random.Generator,
    joints: np.ndarray,
    image_size: tuple[int, int],
    fov_deg: tuple[float, float],
    elevation_deg: tuple[float, float],
    roll_std_deg: float,
    height_frac: tuple[float, float],
    truncation_prob: float,
) -> Cameras:
    """Random perspective cameras, one per person, framing that person.

    Each camera gets a horizontal field of view from ``fov_deg``, looks at the person's centre
    from a random azimuth and an elevation from ``elevation_deg`` (kept at least 200 mm above the
    floor), with a roll ~ N(0, roll_std_deg). Its distance makes the largest side of the box
    around the person (joints + 100 mm) span about a fraction ``height_frac`` of the image
    height; the camera is then turned so
    that the person's centre lands at a random image position that keeps the person inside the
    image or, with probability ``truncation_prob``, leaves 10-50 % of its box (width or height)
    outside one border.

    Arguments:
        rng: random generator.
        joints: world joints (N, J, 3), mm.
        image_size: (h, w) pixels.

    Returns:
        ``Cameras`` with principal points at the image centre and square pixels.
    """
    n = len(joints)
    h, w = image_size
    fov = np.deg2rad(rng.uniform(*fov_deg, n))
    f = 0.5 * w / np.tan(0.5 * fov)
    K = np.zeros((n, 3, 3))
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = (
        f,
        f,
        0.5 * (w - 1),
        0.5 * (h - 1),
        1.0,
    )

    lo, hi = joints.min(axis=1), joints.max(axis=1)
    centre = 0.5 * (lo + hi)
    size = (hi - lo).max(axis=1) + 100.0  # joints sit inside the body surface
    truncated = rng.random(n) < truncation_prob
    frac = rng.uniform(*height_frac, n)
    frac = np.where(truncated, frac * rng.uniform(1.0, 1.4, n), frac)
    dist = f * size / (frac * h)
    # Keep the camera at least 300 mm outside the sphere around the centre holding all joints.
    reach = np.linalg.norm(joints - centre[:, None], axis=2).max(axis=1)
    dist = np.maximum(dist, reach + 300.0)

    azimuth = rng.uniform(0.0, 2 * np.pi, n)
    elev = np.deg2rad(rng.uniform(*elevation_deg, n))
    min_elev = np.arcsin(np.clip((200.0 - centre[:, 2]) / dist, -1.0, 1.0))
    elev = np.maximum(elev, min_elev)
    direction = np.stack(
        [np.cos(elev) * np.cos(azimuth), np.cos(elev) * np.sin(azimuth), np.sin(elev)], axis=1
    )
    position = centre + dist[:, None] * direction
    R, _ = look_at(position, centre, rng.normal(0.0, roll_std_deg, n))

    # Where the centre lands: anywhere that keeps the person's box (joints as seen from the
    # look-at camera, grown by 4 % for the body surface) inside, or past one border.
    t = -np.einsum("nij,nj->ni", R, position)
    uv = project(np.einsum("nij,npj->npi", R, joints) + t[:, None], K)
    c = K[:, :2, 2]
    margin = 0.04 * np.ptp(uv, axis=1).max(axis=1, keepdims=True)
    lo = uv.min(axis=1) - margin - c  # (n, 2) box relative to the centre's image position
    hi = uv.max(axis=1) + margin - c
    size = np.array([w - 1.0, h - 1.0])
    free_lo, free_hi = -lo, size - hi  # centre positions keeping the box inside
    squeezed = free_lo > free_hi
    pos = np.where(squeezed, c, free_lo + rng.random((n, 2)) * (free_hi - free_lo))
    axis = rng.integers(0, 2, n)  # truncate across x (0) or y (1)
    side = rng.integers(0, 2, n)  # at the low (0) or high (1) border
    outside = rng.uniform(0.1, 0.5, n) * (hi - lo)[np.arange(n), axis]  # pixels beyond it
    cut = np.where(
        side == 0, -outside - lo[np.arange(n), axis], size[axis] + outside - hi[np.arange(n), axis]
    )
    pos[np.arange(n), axis] = np.where(truncated, cut, pos[np.arange(n), axis])
    u0, v0 = pos[:, 0], pos[:, 1]
    ray = np.stack([(u0 - K[:, 0, 2]) / f, (v0 - K[:, 1, 2]) / f, np.ones(n)], axis=1)
    R = _rotation_from_z(ray) @ R
    t = -np.einsum("nij,nj->ni", R, position)
    return Cameras(K=K, R=R, t=t)


@dataclass
class H36MCalibrations:
    """The Human3.6M camera calibrations (4 cameras x 11 subjects).

    Arguments:
        names: "S1/54138969"-style keys (C,).
        K: intrinsics at the native resolution (C, 3, 3).
        R: world-to-camera rotations (C, 3, 3).
        t: world-to-camera translations (C, 3), mm.
        size: native (h, w) per camera (C, 2).
        radial: lens distortion (k1, k2, k3) per camera (C, 3); zeros when the file has no ``k``.
        tangential: lens distortion (p1, p2) per camera (C, 2); zeros when the file has no ``p``.
            See :func:`project_distorted` for the model.
    """

    names: tuple[str, ...]
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    size: np.ndarray
    radial: np.ndarray | None = None
    tangential: np.ndarray | None = None

    def index(self, name: str) -> int:
        """Row of camera ``name`` ("S1/54138969"); KeyError listing a few valid names if unknown."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(
                f"no Human3.6M camera {name!r}; valid names look like {', '.join(self.names[:3])}"
            ) from None

    def sample(self, rng: np.random.Generator, n: int, image_size: tuple[int, int]) -> Cameras:
        """N cameras drawn uniformly from the calibrations, intrinsics rescaled to ``image_size`` (h, w).

        The native image is resized (not cropped) to ``image_size``, so pixels may become
        slightly non-square; lens distortion is ignored.
        """
        idx = rng.integers(0, len(self.names), n)
        scale = np.asarray(image_size, dtype=np.float64)[None] / self.size[idx]  # (n, 2): (sy, sx)
        K = self.K[idx].copy()
        K[:, 0] *= scale[:, 1:2]
        K[:, 1] *= scale[:, 0:1]
        # Pixel centres at integer coordinates: resizing maps u to (u + 0.5) * s - 0.5.
        K[:, 0, 2] += 0.5 * scale[:, 1] - 0.5
        K[:, 1, 2] += 0.5 * scale[:, 0] - 0.5
        return Cameras(K=K, R=self.R[idx].copy(), t=self.t[idx].copy())


def load_h36m_calibrations(path: str | Path | None = None) -> H36MCalibrations:
    """Read Human3.6M calibrations from ``cameras.json`` (keys "S1/54138969": R, T, f, c, w, h and the
    optional lens distortion k (k1, k2, k3) and p (p1, p2)).

    The file follows the MMPose/3d-pose-baseline convention ``X_cam = R.T @ (X_world - T)``, with
    T the camera centre. Its T values (about 1.5-5.5) are in metres, although the accompanying
    README says mm; they are converted to mm here when every |T| is below 100.

    Raises:
        FileNotFoundError: the file does not exist (the message says where it was looked for).
    """
    path = Path(path) if path is not None else DEFAULT_H36M_CAMERAS
    if not path.is_file():
        raise FileNotFoundError(
            f"Human3.6M camera file not found: {path.resolve()} "
            "(set camera_file to the path of h36m/cameras.json)"
        )
    data = json.loads(path.read_text())
    names = tuple(sorted(data))
    Rs, ts, Ks, sizes, radial, tangential = [], [], [], [], [], []
    centres = np.array([np.asarray(data[k]["T"], dtype=np.float64).reshape(3) for k in names])
    unit = 1000.0 if np.abs(centres).max() < 100.0 else 1.0
    for name, centre in zip(names, centres, strict=True):
        cam = data[name]
        R_w2c = np.asarray(cam["R"], dtype=np.float64).reshape(3, 3).T
        f = np.asarray(cam["f"], dtype=np.float64).reshape(2)
        c = np.asarray(cam["c"], dtype=np.float64).reshape(2)
        Rs.append(R_w2c)
        ts.append(-R_w2c @ (centre * unit))
        Ks.append(np.array([[f[0], 0.0, c[0]], [0.0, f[1], c[1]], [0.0, 0.0, 1.0]]))
        sizes.append((float(cam["h"]), float(cam["w"])))
        radial.append(np.asarray(cam.get("k", [0.0] * 3), dtype=np.float64).reshape(3))
        tangential.append(np.asarray(cam.get("p", [0.0] * 2), dtype=np.float64).reshape(2))
    return H36MCalibrations(
        names=names, K=np.array(Ks), R=np.array(Rs), t=np.array(ts), size=np.array(sizes),
        radial=np.array(radial), tangential=np.array(tangential),
    )  # fmt: skip
