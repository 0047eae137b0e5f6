"""Video prediction (annotated video, per-frame json, smoothing) and the person detector, through
the real `posereg predict` command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from _real_data import real, tiny_checkpoint
from posereg.cli import main
from posereg.detect import PersonDetector
from posereg.predict import PoseResult, Predictor
from posereg.smoothing import kalman_smooth, one_euro
from posereg.synth.generate import generate, synth_config
from posereg.video import _smooth_tracks, link_tracks

POSEREG = str(Path(sys.executable).parent / "posereg")
NUM_FRAMES = 6


def _posereg(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [POSEREG, *args, "--device", "cpu"], capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real posereg checkpoint of a tiny random RLE model, with evaluation metrics."""
    return tiny_checkpoint(
        tmp_path_factory.mktemp("ck") / "tiny.pt", {"AP": 0.01, "sigma_calibration": 1.5}
    )


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A short mp4 (mp4v) of synthetic frames rendered by posereg.synth."""
    root = tmp_path_factory.mktemp("clip")
    config = synth_config("easy", image_size=(96, 128))
    generate(
        root / "synth", "val", NUM_FRAMES, seed=0, config=config, num_workers=0, progress=False
    )
    frames = sorted((root / "synth" / "images" / "val").iterdir())
    path = root / "walk.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (128, 96))
    for f in frames:
        writer.write(cv2.imread(str(f)))
    writer.release()
    return path


def _frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


@pytest.fixture(scope="module")
def raw_run(tmp_path_factory, checkpoint, clip) -> tuple[Path, subprocess.CompletedProcess]:
    """`posereg predict CLIP` without smoothing: (output folder, the finished process)."""
    out_dir = tmp_path_factory.mktemp("raw")
    return out_dir, _posereg("predict", str(clip), "--checkpoint", str(checkpoint), "--out",
                             str(out_dir))  # fmt: skip


@pytest.mark.slow
def test_video_gives_an_annotated_video_and_one_entry_per_frame_and_person(
    raw_run, checkpoint, clip
):
    out_dir, out = raw_run
    assert out.returncode == 0, out.stderr
    assert f"{NUM_FRAMES} poses in {NUM_FRAMES} frames, 1 track(s)" in out.stdout
    assert re.search(r"[0-9.]+ frames/s", out.stdout)
    entries = json.loads((out_dir / "walk_predictions.json").read_text())
    assert [e["frame"] for e in entries] == list(range(NUM_FRAMES))
    assert [e["image_id"] for e in entries] == list(range(NUM_FRAMES))
    assert {e["track_id"] for e in entries} == {0}
    # the same numbers as Predictor on the decoded frames (the one inference path)
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    frames = _frames(clip)
    assert len(frames) == NUM_FRAMES
    for entry, frame in zip(entries, frames, strict=True):
        result = predictor(frame)
        kp = np.array(entry["keypoints"]).reshape(-1, 3)
        np.testing.assert_allclose(kp[:, :2], result.keypoints[0], atol=1e-3)
        np.testing.assert_allclose(entry["sigma"], result.sigma[0], atol=1e-3)
        # the 90% predictive region of the flow, as Predictor's (docs/uncertainty.md)
        assert entry["region_p"] == 0.9
        np.testing.assert_allclose(entry["region"], result.region[0], atol=1e-3)
        assert entry["bbox"] == [0, 0, 128, 96]
    # the annotated video: every frame, drawn on
    drawn = _frames(out_dir / "walk_pose.mp4")
    assert len(drawn) == NUM_FRAMES and drawn[0].shape == frames[0].shape
    assert np.abs(drawn[0].astype(int) - frames[0].astype(int)).max() > 100


@pytest.mark.slow
def test_kalman_smoothing_through_the_cli(tmp_path, raw_run, checkpoint, clip):
    smooth = _posereg("predict", str(clip), "--checkpoint", str(checkpoint), "--no-draw",
                      "--smooth", "kalman", "--process-noise", "2", "--out", str(tmp_path))  # fmt: skip
    assert smooth.returncode == 0, smooth.stderr
    assert not (tmp_path / "walk_pose.mp4").exists()
    raw = np.array(
        [e["keypoints"] for e in json.loads((raw_run[0] / "walk_predictions.json").read_text())]
    )
    raw_sigma = [e["sigma"] for e in json.loads((raw_run[0] / "walk_predictions.json").read_text())]
    entries = json.loads((tmp_path / "walk_predictions.json").read_text())
    assert [e["frame"] for e in entries] == list(range(NUM_FRAMES))
    raw = raw.reshape(NUM_FRAMES, -1, 3)
    # sigma x the checkpoint's sigma_calibration (1.5) is the measurement noise
    expected = kalman_smooth(raw[..., :2], np.array(raw_sigma) * 1.5, process_noise=2.0).x
    got = np.array([e["keypoints"] for e in entries]).reshape(NUM_FRAMES, -1, 3)
    np.testing.assert_allclose(got[..., :2], expected, atol=2e-3)
    # confidence and sigma stay the per-frame model's
    np.testing.assert_array_equal(got[..., 2], raw[..., 2])
    assert [e["sigma"] for e in entries] == raw_sigma


def _result(keypoints: np.ndarray, sigma: np.ndarray, boxes: np.ndarray) -> PoseResult:
    n, k = keypoints.shape[:2]
    return PoseResult(keypoints.copy(), sigma.copy(), np.ones((n, k)), boxes, np.ones(n))


@pytest.mark.parametrize("smooth", ["kalman", "one-euro"])
def test_each_track_is_smoothed_on_its_own_with_gaps(smooth):
    """Two people, listed in either order; the second is missed in frames 3-4 and keeps its
    track: per track, the smoother sees its own frames, with NaN where the person is absent."""
    rng = np.random.default_rng(0)
    frames, k = 8, 3
    a = 100 + np.cumsum(rng.normal(0, 2, (frames, k, 2)), axis=0)
    b = 300 + np.cumsum(rng.normal(0, 2, (frames, k, 2)), axis=0)
    sa, sb = rng.uniform(1, 5, (frames, k, 2)), rng.uniform(1, 5, (frames, k, 2))
    box_a, box_b = np.array([[50.0, 50, 100, 100]]), np.array([[250.0, 250, 100, 100]])
    present_b = [t not in (3, 4) for t in range(frames)]
    results = []
    for t in range(frames):
        if present_b[t]:  # the detector lists b first in odd frames
            order = [1, 0] if t % 2 else [0, 1]
            kp, sg = np.stack([a[t], b[t]])[order], np.stack([sa[t], sb[t]])[order]
            results.append(_result(kp, sg, np.concatenate([box_a, box_b])[order]))
        else:
            results.append(_result(a[t][None], sa[t][None], box_a))
    tracks = link_tracks([r.boxes for r in results])
    assert [list(t) for t in tracks[:3]] == [[0, 1], [1, 0], [0, 1]]
    _smooth_tracks(results, tracks, smooth, 30.0, sigma_scale=2.0, process_noise=1.0)
    zb = np.where(np.array(present_b)[:, None, None], b, np.nan)
    if smooth == "kalman":
        want_a = kalman_smooth(a, 2.0 * sa).x
        want_b = kalman_smooth(zb, 2.0 * np.where(np.isnan(zb), np.nan, sb)).x
    else:
        want_a, want_b = one_euro(a, 30.0), one_euro(zb, 30.0)
    for t, (r, ids) in enumerate(zip(results, tracks, strict=True)):
        np.testing.assert_allclose(r.keypoints[list(ids).index(0)], want_a[t])
        if present_b[t]:
            np.testing.assert_allclose(r.keypoints[list(ids).index(1)], want_b[t])


def test_smoothing_is_for_videos_only(tmp_path, checkpoint, capsys):
    image = str(real("coco", "000000000785.jpg"))
    # in-process: the check comes before anything is loaded (a subprocess would only add the
    # few seconds of importing torch for the error path)
    code = main(["predict", image, "--checkpoint", str(checkpoint), "--smooth", "one-euro",
                 "--out", str(tmp_path)])  # fmt: skip
    assert code == 2
    assert "posereg predict: error: --smooth applies to videos" in capsys.readouterr().err


# --------------------------------------------------------------------------- person detector
@pytest.fixture(scope="module")
def detector_weights(tmp_path_factory) -> Path:
    """Weights of torchvision's fasterrcnn_mobilenet_v3_large_320_fpn, made here: random, but
    with the person class favoured so that it finds people in any photo."""
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.manual_seed(0)
    model = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[1] = 8.0
    path = tmp_path_factory.mktemp("det") / "detector.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.slow
def test_detector_boxes_flow_into_the_pose_predictor(tmp_path, checkpoint, detector_weights):
    image = cv2.imread(str(real("coco", "000000000785.jpg")))
    image = cv2.resize(image, (320, 213), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(tmp_path / "small.png"), image)
    out = _posereg("predict", str(tmp_path / "small.png"), "--checkpoint", str(checkpoint),
                   "--detector", "fasterrcnn_mobilenet_v3_large_320_fpn", "--detector-weights",
                   str(detector_weights), "--no-draw", "--out", str(tmp_path / "out"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    entries = json.loads((tmp_path / "out" / "predictions.json").read_text())
    found = PersonDetector("fasterrcnn_mobilenet_v3_large_320_fpn", detector_weights, 0.5)(image)
    assert 0 < len(found.boxes) == len(entries)
    np.testing.assert_allclose([e["bbox"] for e in entries], found.boxes, atol=0.01)
    np.testing.assert_allclose([e["box_score"] for e in entries], found.scores, atol=1e-5)
    result = Predictor.from_checkpoint(checkpoint, device="cpu")(image, found.boxes, found.scores)
    np.testing.assert_allclose([e["score"] for e in entries], result.scores, rtol=1e-9)
    kp = np.array([e["keypoints"] for e in entries]).reshape(len(entries), -1, 3)
    np.testing.assert_allclose(kp[..., :2], result.keypoints, atol=1e-3)


def test_missing_detector_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))  # an empty torchvision cache
    expected = (
        tmp_path / "empty" / "hub" / "checkpoints" / "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"
    )
    with pytest.raises(FileNotFoundError) as e:
        PersonDetector("fasterrcnn")
    message = str(e.value)
    assert f"no weights for the fasterrcnn detector at {expected}" in message
    assert "fasterrcnn_resnet50_fpn(weights='DEFAULT')" in message
    assert "--detector-weights FILE" in message


def test_a_file_that_is_not_the_detectors_weights_is_named(tmp_path):
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"other.pth: not a fasterrcnn_mobilenet_v3_large_320_fpn"):
        PersonDetector("fasterrcnn_mobilenet_v3_large_320_fpn", tmp_path / "other.pth")
