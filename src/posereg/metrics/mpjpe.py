"""3D pose metrics: MPJPE, PA-MPJPE (similarity Procrustes), N-MPJPE, 3D PCK and AUC.

Conventions: poses are (N, K, 3) arrays in mm, usually root-relative (the Human3.6M protocols
subtract the pelvis). MPJPE is the mean Euclidean joint error (protocol #1); PA-MPJPE aligns each
prediction to its ground truth by the similarity transform (rotation, scale, translation) that
minimises the squared error before measuring (protocol #2; Umeyama 1991 / the orthogonal
Procrustes solution, with the reflection removed: a mirror image is not a valid alignment);
N-MPJPE aligns the scale only (Rhodin et al. 2018). 3D PCK counts joints within 150 mm and AUC
averages PCK over the thresholds 0, 5, ..., 150 mm, as MPI-INF-3DHP reports them (Mehta et al.
2017).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Pose3DMetrics",
    "mpjpe",
    "pa_mpjpe",
    "n_mpjpe",
    "procrustes_align",
    "joint_errors",
    "pck_3d",
    "auc_3d",
    "evaluate_3d",
    "back_project",
    "PCK3D_THRESHOLD_MM",
    "AUC_THRESHOLDS_MM",
]

PCK3D_THRESHOLD_MM = 150.0
AUC_THRESHOLDS_MM = np.linspace(0.0, 150.0, 31)  # 0, 5, ..., 150 mm (MPI-INF-3DHP)


def _check(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(
            f"pred and target must both be (N, K, 3), got {pred.shape} and {target.shape}"
        )
    return pred, target


def joint_errors(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Euclidean distance per joint: pred, target (N, K, 3) -> (N, K)."""
    pred, target = _check(pred, target)
    return np.linalg.norm(pred - target, axis=-1)


def mpjpe(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean per-joint position error (same unit as the inputs): pred, target (N, K, 3)."""
    return float(joint_errors(pred, target).mean())


def procrustes_align(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Each prediction moved by the similarity transform that best fits its target.

    Solves min over s > 0, R in SO(3), t of sum_k ||s R p_k + t - g_k||^2 in closed form: with the
    centred point sets P, G (K, 3) and the SVD G^T P = U S V^T, R = U D V^T where
    D = diag(1, 1, det(U V^T)) makes R a rotation (without D a reflection would fit a mirror
    image), s = tr(S D) / ||P||^2 and t = mean(g) - s R mean(p).

    Arguments:
        pred, target: (N, K, 3).

    Returns:
        The aligned predictions (N, K, 3).
    """
    pred, target = _check(pred, target)
    mu_p, mu_g = pred.mean(1, keepdims=True), target.mean(1, keepdims=True)
    p, g = pred - mu_p, target - mu_g  # (N, K, 3)
    u, s, vt = np.linalg.svd(np.einsum("nki,nkj->nij", g, p))  # G^T P = U S V^T
    d = np.sign(np.linalg.det(u @ vt))  # -1: the best orthogonal fit is a reflection
    d = np.where(d == 0, 1.0, d)
    u[:, :, 2] *= d[:, None]
    s[:, 2] *= d
    r = u @ vt  # (N, 3, 3), det +1
    norm_p = (p**2).sum(axis=(1, 2))
    scale = s.sum(1) / np.maximum(norm_p, 1e-12)  # tr(S D) / ||P||^2
    return scale[:, None, None] * np.einsum("nij,nkj->nki", r, p) + mu_g


def pa_mpjpe(pred: np.ndarray, target: np.ndarray) -> float:
    """MPJPE after similarity Procrustes alignment (protocol #2): pred, target (N, K, 3)."""
    return mpjpe(procrustes_align(pred, target), target)


def n_mpjpe(pred: np.ndarray, target: np.ndarray) -> float:
    """MPJPE after the least-squares scale s = <p, g> / <p, p> per pose (Rhodin et al. 2018)."""
    pred, target = _check(pred, target)
    scale = (pred * target).sum(axis=(1, 2)) / np.maximum((pred**2).sum(axis=(1, 2)), 1e-12)
    return mpjpe(scale[:, None, None] * pred, target)


def back_project(uv: np.ndarray, depth: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Image points with their camera depth -> camera-frame 3D points (the pinhole inverse).

    ``X = Z K^-1 (u, v, 1)^T``. Single-stage 3D evaluation (Sun et al. 2018; the official RLE
    ``H36m.evaluate``) calls it with the predicted (u, v) and ``Z = Z_root (ground truth) +
    predicted root-relative depth``, then measures root-relative errors.

    Arguments:
        uv: (N, K, 2) image pixels.
        depth: (N, K) camera depth Z, mm.
        intrinsics: (N, 3, 3) or (3, 3) camera matrices K.

    Returns:
        (N, K, 3) camera-frame points, mm.

    Example:
        >>> k = np.array([[500.0, 0, 100], [0, 500, 50], [0, 0, 1]])
        >>> back_project(np.array([[[600.0, 50.0]]]), np.array([[2000.0]]), k).tolist()
        [[[2000.0, 0.0, 2000.0]]]
    """
    uv, depth = np.asarray(uv, dtype=np.float64), np.asarray(depth, dtype=np.float64)
    k_inv = np.linalg.inv(np.asarray(intrinsics, dtype=np.float64))
    if k_inv.ndim == 2:
        k_inv = np.broadcast_to(k_inv, (uv.shape[0], 3, 3))
    homogeneous = np.concatenate([uv, np.ones_like(uv[..., :1])], axis=-1)  # (N, K, 3)
    rays = np.einsum("nij,nkj->nki", k_inv, homogeneous)  # z component 1 for a pinhole K
    return rays / rays[..., 2:3] * depth[..., None]


def pck_3d(errors: np.ndarray, threshold: float = PCK3D_THRESHOLD_MM) -> float:
    """Fraction of joints whose error (N, K) is below ``threshold`` (mm)."""
    return float((np.asarray(errors) < threshold).mean())


def auc_3d(errors: np.ndarray, thresholds: np.ndarray = AUC_THRESHOLDS_MM) -> float:
    """Mean 3D PCK over ``thresholds`` (default 0, 5, ..., 150 mm): errors (N, K) -> [0, 1]."""
    return float(np.mean([pck_3d(errors, t) for t in thresholds]))


@dataclass
class Pose3DMetrics:
    """3D pose errors of a set of predictions (mm; PCK and AUC as fractions).

    Attributes:
        mpjpe, pa_mpjpe, n_mpjpe: the three protocol errors, mm.
        pck: 3D PCK at 150 mm; auc: AUC over 0..150 mm.
        per_joint: joint name -> MPJPE.
        per_action: action -> (MPJPE, PA-MPJPE), when actions are known (else empty).
        num_poses: N.
    """

    mpjpe: float
    pa_mpjpe: float
    n_mpjpe: float
    pck: float
    auc: float
    num_poses: int
    per_joint: dict[str, float] = field(default_factory=dict)
    per_action: dict[str, tuple[float, float]] = field(default_factory=dict)

    primary: str = "MPJPE"  # the metric that picks a run's best checkpoint (lower is better)

    def summary(self) -> dict[str, float]:
        """The headline numbers as a flat dict (``MPJPE``, ``PA-MPJPE``, ...)."""
        return {
            "MPJPE": self.mpjpe, "PA-MPJPE": self.pa_mpjpe, "N-MPJPE": self.n_mpjpe,
            "PCK3D_150": self.pck, "AUC3D": self.auc, "num_poses": float(self.num_poses),
        }  # fmt: skip


def evaluate_3d(
    pred: np.ndarray,
    target: np.ndarray,
    joint_names: tuple[str, ...] | None = None,
    actions: list[str] | np.ndarray | None = None,
) -> Pose3DMetrics:
    """All 3D metrics of predictions (N, K, 3) against targets (N, K, 3), in mm.

    Per-action numbers average over poses within each action (the Human3.6M tables average the
    per-action numbers in turn; :attr:`Pose3DMetrics.mpjpe` averages over all poses).
    """
    pred, target = _check(pred, target)
    err = joint_errors(pred, target)
    names = joint_names or tuple(f"joint_{k}" for k in range(pred.shape[1]))
    if len(names) != pred.shape[1]:
        raise ValueError(f"{len(names)} joint names for {pred.shape[1]} joints")
    aligned = procrustes_align(pred, target)
    per_action: dict[str, tuple[float, float]] = {}
    if actions is not None:
        actions = np.asarray(actions)
        if len(actions) != len(pred):
            raise ValueError(f"{len(actions)} actions for {len(pred)} poses")
        for a in sorted(set(actions.tolist())):
            m = actions == a
            per_action[str(a)] = (mpjpe(pred[m], target[m]), mpjpe(aligned[m], target[m]))
    return Pose3DMetrics(
        mpjpe=float(err.mean()),
        pa_mpjpe=mpjpe(aligned, target),
        n_mpjpe=n_mpjpe(pred, target),
        pck=pck_3d(err),
        auc=auc_3d(err),
        num_poses=len(pred),
        per_joint={n: float(e) for n, e in zip(names, err.mean(0), strict=True)},
        per_action=per_action,
    )
