"""Pose on video: ``posereg predict VIDEO --checkpoint CK [--smooth one-euro|kalman]``.

Each frame goes through :class:`posereg.predict.Predictor` (the one inference path), with the
whole frame as one person box or the boxes of a :class:`posereg.detect.PersonDetector`. People
are linked from frame to frame by box overlap (greedy IoU) into tracks; a track's keypoints are
then optionally smoothed over time (:mod:`posereg.smoothing`): the One-Euro filter, or the Kalman
smoother that takes each keypoint's sigma (in pixels, times the checkpoint's
``sigma_calibration``) as its measurement noise. Outputs: ``<stem>_pose.mp4`` (the frames with
the poses drawn) and ``<stem>_predictions.json`` (COCO-results entries with ``frame`` and
``track_id``).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from posereg.smoothing import DEFAULT_PROCESS_NOISE, SMOOTHERS, kalman_smooth, one_euro

if TYPE_CHECKING:
    from posereg.detect import PersonDetector
    from posereg.predict import PoseResult

__all__ = ["VIDEO_SUFFIXES", "is_video", "predict_video", "VideoSummary", "link_tracks"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


def is_video(path: str | Path) -> bool:
    """A video file by its suffix (:data:`VIDEO_SUFFIXES`)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass
class VideoSummary:
    """What ``posereg predict VIDEO`` did.

    Attributes:
        video: the annotated video written (None with ``draw=False``).
        predictions: the per-frame json written.
        num_frames: frames read.
        num_instances: poses written.
        num_tracks: people tracks.
        fps: frames per second of the prediction pass (decoding, detection and pose).
    """

    video: Path | None
    predictions: Path
    num_frames: int = 0
    num_instances: int = 0
    num_tracks: int = 0
    fps: float = 0.0
    failed_frames: list[int] = field(default_factory=list)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (N, 4) and (M, 4) (x, y, w, h) boxes: (N, M)."""
    a, b = a[:, None], b[None]
    x0 = np.maximum(a[..., 0], b[..., 0])
    y0 = np.maximum(a[..., 1], b[..., 1])
    x1 = np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2])
    y1 = np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    return inter / (a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter)


def link_tracks(
    boxes: list[np.ndarray], min_iou: float = 0.3, max_gap: int = 15
) -> list[np.ndarray]:
    """Track ids for the people of each frame: greedy best-IoU matching with the tracks seen in
    the last ``max_gap`` frames (each at its last box), so that a person who is missed for a
    few frames keeps its track.

    Arguments:
        boxes: per frame, (N_t, 4) (x, y, w, h) boxes.
        min_iou: a person continues a track when its box overlaps that track's last box by at
            least this; otherwise it starts a new track.
        max_gap: frames a track may be missing and still be continued.

    Returns:
        per frame, (N_t,) int track ids (0, 1, ... in order of appearance).
    """
    ids: list[np.ndarray] = []
    last_box: dict[int, np.ndarray] = {}  # track id -> its last box
    last_seen: dict[int, int] = {}  # track id -> the frame of that box
    for t, frame_boxes in enumerate(boxes):
        frame_ids = np.full(len(frame_boxes), -1)
        alive = [j for j, seen in last_seen.items() if t - seen <= max_gap]
        if len(frame_boxes) and alive:
            iou = _iou(frame_boxes, np.stack([last_box[j] for j in alive]))
            while iou.max() >= min_iou:
                i, j = np.unravel_index(np.argmax(iou), iou.shape)
                frame_ids[i] = alive[j]
                iou[i, :], iou[:, j] = -1, -1
        for i in range(len(frame_boxes)):
            if frame_ids[i] < 0:
                frame_ids[i] = len(last_seen)
            last_box[int(frame_ids[i])], last_seen[int(frame_ids[i])] = frame_boxes[i], t
        ids.append(frame_ids)
    return ids


def _smooth_tracks(
    results: list[PoseResult | None],
    tracks: list[np.ndarray],
    smooth: str,
    fps: float,
    sigma_scale: float,
    process_noise: float,
) -> None:
    """Replace each track's keypoints by their smoothed values, in place."""
    num_tracks = max((int(t.max()) + 1 for t in tracks if len(t)), default=0)
    for track in range(num_tracks):
        where = [
            (f, int(np.flatnonzero(t == track)[0])) for f, t in enumerate(tracks) if track in t
        ]
        first, last = where[0][0], where[-1][0]
        k = results[first].keypoints.shape[1]  # type: ignore[union-attr]
        z = np.full((last - first + 1, k, 2), np.nan)  # (T, K, 2), NaN where the person is absent
        sigma = np.full_like(z, np.nan)
        for f, i in where:
            z[f - first] = results[f].keypoints[i]  # type: ignore[union-attr]
            if smooth == "kalman":
                sigma[f - first] = results[f].sigma[i] * sigma_scale  # type: ignore[union-attr,index]
        if smooth == "one-euro":
            x = one_euro(z, fps)
        else:
            x = kalman_smooth(z, sigma, process_noise).x
        for f, i in where:
            results[f].keypoints[i] = x[f - first]  # type: ignore[union-attr]


def predict_video(
    checkpoint: str | Path,
    video: str | Path,
    out_dir: str | Path,
    detector: PersonDetector | None = None,
    smooth: str | None = None,
    process_noise: float = DEFAULT_PROCESS_NOISE,
    draw: bool = True,
    device: str | None = None,
    progress: bool = True,
) -> VideoSummary:
    """Poses on every frame of ``video``; writes ``<stem>_pose.mp4`` and ``<stem>_predictions.json``.

    Arguments:
        checkpoint: a posereg checkpoint.
        video: any file OpenCV's video reader opens.
        out_dir: output folder (created).
        detector: a :class:`posereg.detect.PersonDetector`; None: the whole frame is one box.
        smooth: None (off), ``"one-euro"`` or ``"kalman"`` (needs a head that predicts sigma).
        process_noise: the Kalman smoother's q (:mod:`posereg.smoothing`).
        draw: write the annotated video.
        progress: a progress bar on stderr (when it is a terminal).

    The json is a COCO results list, one entry per frame and person: ``frame`` (0-based) and
    ``image_id`` (= frame), ``track_id``, ``category_id``, ``bbox``, ``keypoints`` (x, y,
    confidence; smoothed when ``smooth`` is set), ``score``, ``sigma`` (the per-frame model's, K x
    2 pixels) and, with a detector, ``box_score``.

    Raises:
        FileNotFoundError: no such video. ValueError: OpenCV cannot read it, an unknown
        ``smooth``, or ``kalman`` with a head without sigma. OSError: outputs cannot be written.
    """
    from tqdm.auto import tqdm

    from posereg.outputs import write_atomic
    from posereg.predict import Predictor, _output_dir, result_entries
    from posereg.viz import draw_people

    if smooth is not None and smooth not in SMOOTHERS:
        raise ValueError(f"unknown smoother {smooth!r}; valid: {', '.join(SMOOTHERS)}")
    path = Path(video)
    if not path.is_file():
        raise FileNotFoundError(f"no such video: {path}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"{path}: OpenCV cannot open this video")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    predictor = Predictor.from_checkpoint(checkpoint, device=device)
    if predictor.finds_people and detector is not None:
        predictor.refuse_boxes("--detector")  # type: ignore[attr-defined]
    out = _output_dir(out_dir)
    summary = VideoSummary(
        out / f"{path.stem}_pose.mp4" if draw else None, out / f"{path.stem}_predictions.json"
    )

    results: list[PoseResult | None] = []
    box_scores: list[np.ndarray | None] = []
    start = time.perf_counter()
    bar = tqdm(total=total, unit="frame", desc=path.name, disable=not progress or None)
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        found = detector(frame) if detector is not None else None
        if found is not None and len(found.boxes) == 0:
            results.append(None)
        else:
            result = predictor(frame, None if found is None else found.boxes,
                               None if found is None else found.scores)  # fmt: skip
            if smooth == "kalman" and result.sigma is None:
                raise ValueError(
                    "--smooth kalman needs sigma, and this checkpoint's head predicts none; "
                    "use --smooth one-euro"
                )
            finite = np.isfinite(result.keypoints).all(axis=(1, 2))
            if result.sigma is not None:
                finite &= np.isfinite(result.sigma).all(axis=(1, 2))
            if not finite.all():
                summary.failed_frames.append(len(results))
                keep = np.flatnonzero(finite)
                result = result.select(keep)
                if found is not None:
                    found.scores = found.scores[keep]
            results.append(result)
        box_scores.append(None if found is None else found.scores)
        bar.update(1)
    bar.close()
    capture.release()
    elapsed = time.perf_counter() - start
    summary.num_frames = len(results)
    summary.fps = len(results) / elapsed if elapsed > 0 else 0.0
    if not results:
        raise ValueError(f"{path}: no frames could be read")

    tracks = link_tracks([r.boxes if r is not None else np.zeros((0, 4)) for r in results])
    summary.num_tracks = max((int(t.max()) + 1 for t in tracks if len(t)), default=0)
    if smooth is not None:
        _smooth_tracks(results, tracks, smooth, fps, predictor.sigma_scale, process_noise)

    entries = []
    for frame, (result, ids, scores) in enumerate(zip(results, tracks, box_scores, strict=True)):
        if result is None:
            continue
        for i, entry in enumerate(result_entries(result, frame)):
            entry = {"frame": frame, **entry, "track_id": int(ids[i])}
            if scores is not None:
                entry["box_score"] = round(float(scores[i]), 5)
            entries.append(entry)
    summary.num_instances = len(entries)
    write_atomic(summary.predictions, json.dumps(entries, allow_nan=False).encode())

    if draw and summary.video is not None:
        capture = cv2.VideoCapture(str(path))
        writer = None
        try:
            for result in tqdm(results, unit="frame", desc="drawing", disable=not progress or None):
                ok, frame = capture.read()
                if not ok:
                    break
                if writer is None:
                    h, w = frame.shape[:2]
                    fourcc = cv2.VideoWriter.fourcc(*"mp4v")
                    writer = cv2.VideoWriter(str(summary.video), fourcc, fps, (w, h))
                    if not writer.isOpened():
                        raise OSError(f"cannot write the video {summary.video} (mp4v)")
                if result is not None:
                    frame = draw_people(
                        frame, result.keypoints, predictor.skeleton, result.confidence,
                        result.region, result.boxes,
                    )  # fmt: skip
                writer.write(frame)
        finally:
            capture.release()
            if writer is not None:
                writer.release()
    if summary.failed_frames:
        print(
            f"posereg predict: {path.name}: non-finite poses left out in "
            f"{len(summary.failed_frames)} frame(s), first {summary.failed_frames[:5]}",
            file=sys.stderr,
        )
    return summary
