"""Temporal smoothing of keypoint tracks: the One-Euro filter (Casiez et al., CHI 2012) and an
uncertainty-aware Kalman filter + Rauch-Tung-Striebel smoother that takes each keypoint's sigma
as its measurement noise.

Notation: a track is ``z (T, ...)``: T frames of any number of independent coordinates (a
pose track is ``(T, K, 2)``: each keypoint's x and y are smoothed on their own). A missing
measurement is NaN. Time is counted in frames (``dt = 1``).

The Kalman model, per coordinate, with state ``s = (p, v)`` (position in pixels, velocity in
pixels per frame), is the constant-velocity model driven by white acceleration noise::

    s_t = F s_{t-1} + w_t,   F = [[1, 1], [0, 1]],   w_t ~ N(0, q [[1/3, 1/2], [1/2, 1]])
    z_t = p_t + e_t,         e_t ~ N(0, r_t),        r_t = sigma_t^2

``q`` (``process_noise``, pixels^2 / frame^3) is the spectral density of the acceleration: the
velocity's variance grows by q each frame, so sqrt(q) is the typical change of velocity per
frame in pixels/frame. A confident keypoint (small sigma) is followed closely; an uncertain one
(large sigma) leans on the motion model, i.e. on its neighbours in time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["one_euro", "kalman_smooth", "Smoothed", "SMOOTHERS", "DEFAULT_PROCESS_NOISE"]

# (pixels/frame)^2 per frame: sqrt(q) = 1 px/frame of velocity change per frame, about a wrist
# swinging 40 px at 1 Hz in a 30 frames/s video (acceleration A w^2 = 1.75 px/frame^2 peak).
DEFAULT_PROCESS_NOISE = 1.0


def one_euro(
    z: np.ndarray,
    fps: float = 30.0,
    min_cutoff: float = 1.0,
    beta: float = 0.1,
    d_cutoff: float = 1.0,
) -> np.ndarray:
    """The One-Euro filter: an exponential low-pass whose cutoff rises with the speed.

    Per coordinate: ``fc = min_cutoff + beta |dx/dt|`` (Hz), the speed itself low-passed at
    ``d_cutoff``; slow motion is smoothed hard (less jitter), fast motion little (less lag).
    Causal (uses past frames only). A NaN measurement is passed through as NaN and the filter
    keeps its state.

    Arguments:
        z: (T, ...) measurements in pixels.
        fps: frames per second (the cutoffs are in Hz, the speed in pixels/s).
        min_cutoff: cutoff at rest (Hz).
        beta: cutoff increase per pixel/s of speed.
        d_cutoff: cutoff of the speed estimate (Hz).

    Returns:
        (T, ...) filtered positions.

    Example:
        >>> t = np.arange(100.0)
        >>> noisy = 0.5 * t + np.random.default_rng(0).normal(0, 2, 100)
        >>> bool(np.abs(one_euro(noisy)[50:] - 0.5 * t[50:]).mean() < np.abs(noisy - 0.5 * t)[50:].mean())
        True
    """
    z = np.asarray(z, dtype=np.float64)
    te = 1.0 / fps

    def alpha(cutoff: np.ndarray | float) -> np.ndarray | float:
        tau = 1.0 / (2 * math.pi * np.asarray(cutoff))
        return 1.0 / (1.0 + tau / te)

    out = np.full_like(z, np.nan)
    x_hat = np.full(z.shape[1:], np.nan)  # last filtered position
    dx_hat = np.zeros(z.shape[1:])  # last filtered speed (pixels/s)
    for t in range(len(z)):
        seen = np.isfinite(z[t])
        first = seen & ~np.isfinite(x_hat)
        x_hat = np.where(first, z[t], x_hat)
        dx = np.where(seen & ~first, (z[t] - x_hat) / te, 0.0)
        a_d = alpha(d_cutoff)
        dx_hat = np.where(seen, a_d * dx + (1 - a_d) * dx_hat, dx_hat)
        a = alpha(min_cutoff + beta * np.abs(dx_hat))
        x_hat = np.where(seen, a * z[t] + (1 - a) * x_hat, x_hat)
        out[t] = np.where(seen, x_hat, np.nan)
    return out


@dataclass
class Smoothed:
    """A smoothed track.

    Attributes:
        x: (T, ...) smoothed positions (pixels).
        sigma: (T, ...) their posterior standard deviation (pixels).
    """

    x: np.ndarray
    sigma: np.ndarray


def kalman_smooth(
    z: np.ndarray, sigma: np.ndarray, process_noise: float = DEFAULT_PROCESS_NOISE
) -> Smoothed:
    """Kalman filter + Rauch-Tung-Striebel smoother, measurement noise = each frame's sigma.

    Per coordinate, the constant-velocity model of the module docstring. Every frame has its own
    measurement variance ``sigma_t^2``; a NaN measurement or a non-finite sigma is a missing
    frame (predicted from its neighbours). Before a coordinate's first measurement the prior is
    diffuse. Non-causal: the smoother uses the whole track (for a recorded video).

    Arguments:
        z: (T, ...) measured positions in pixels.
        sigma: (T, ...) the measurements' standard deviations in pixels (> 0).
        process_noise: q in pixels^2 / frame^3 (see the module docstring).

    Returns:
        :class:`Smoothed` with x and sigma (T, ...).

    Example:
        >>> truth = np.linspace(0, 50, 200)
        >>> noise = np.where(np.arange(200) % 20 < 10, 1.0, 10.0)  # calm, then jittery frames
        >>> z = truth + noise * np.random.default_rng(0).normal(size=200)
        >>> s = kalman_smooth(z, noise, process_noise=0.01)
        >>> bool(np.abs(s.x - truth).mean() < np.abs(z - truth).mean() / 2)
        True
    """
    z = np.asarray(z, dtype=np.float64)
    sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), z.shape)
    if process_noise <= 0:
        raise ValueError(f"process_noise must be > 0, got {process_noise}")
    shape = z.shape
    n_frames = shape[0]
    z = z.reshape(n_frames, -1)  # (T, N)
    r = sigma.reshape(n_frames, -1) ** 2
    seen = np.isfinite(z) & np.isfinite(r) & (r > 0)
    n = z.shape[1]
    q = process_noise
    F = np.array([[1.0, 1.0], [0.0, 1.0]])
    Q = q * np.array([[1 / 3, 1 / 2], [1 / 2, 1.0]])
    m_pred = np.zeros((n_frames, n, 2))  # predicted state before frame t's measurement
    P_pred = np.zeros((n_frames, n, 2, 2))
    m_filt = np.zeros((n_frames, n, 2))
    P_filt = np.zeros((n_frames, n, 2, 2))
    m = np.zeros((n, 2))
    P = np.tile(np.diag([1e8, 1e4]), (n, 1, 1))  # diffuse: the first measurement decides
    for t in range(n_frames):
        if t > 0:
            m = m @ F.T
            P = F @ P @ F.T + Q
        m_pred[t], P_pred[t] = m, P
        s = P[:, 0, 0] + np.where(seen[t], r[t], 1.0)  # innovation variance
        gain = np.where(seen[t, :, None], P[:, :, 0] / s[:, None], 0.0)  # (N, 2)
        innovation = np.where(seen[t], z[t] - m[:, 0], 0.0)
        m = m + gain * innovation[:, None]
        P = P - gain[:, :, None] * P[:, None, 0, :]  # (I - K H) P
        m_filt[t], P_filt[t] = m, P
    m_s, P_s = m_filt.copy(), P_filt.copy()
    for t in range(n_frames - 2, -1, -1):  # Rauch-Tung-Striebel
        G = P_filt[t] @ F.T @ np.linalg.inv(P_pred[t + 1])  # (N, 2, 2)
        m_s[t] = m_filt[t] + (G @ (m_s[t + 1] - m_pred[t + 1])[:, :, None])[:, :, 0]
        P_s[t] = P_filt[t] + G @ (P_s[t + 1] - P_pred[t + 1]) @ G.transpose(0, 2, 1)
    x = m_s[:, :, 0].reshape(shape)
    std = np.sqrt(np.maximum(P_s[:, :, 0, 0], 0.0)).reshape(shape)
    return Smoothed(x, std)


# --smooth choices of `posereg predict VIDEO`
SMOOTHERS = ("one-euro", "kalman")
