"""Calibrated sigma (issue 19, item 3): a per-keypoint Laplace scale c_k fitted on held-out data,
saved in checkpoints and reported as c_k x sigma by Predictor, predict json, serve json, the
overlays and the lifter; checkpoints without it give c = 1 and say so."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _real_data import real, tiny_checkpoint, tiny_config
from posereg.checkpoint import load_checkpoint, save_checkpoint
from posereg.errors import CheckpointError
from posereg.uncertainty import (
    MIN_RESIDUALS,
    SigmaCalibration,
    fit_sigma_scale,
    laplace_within,
)

POSEREG = str(Path(sys.executable).parent / "posereg")
PHOTO = real("coco", "000000000785.jpg")  # 640 x 425, one person
BOX = [[220.0, 20.0, 200.0, 380.0]]
K = 17
# distinct per keypoint and per axis: a transposed or mis-broadcast scale would not match
SCALE_2D = np.stack([0.5 + 0.1 * np.arange(K), 0.7 + 0.05 * np.arange(K)], axis=1)  # (17, 2)


def _laplace_residuals(c: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Residuals c_kd x sigma x Laplace(0, 1) with sigma varying over ~two decades."""
    rng = np.random.default_rng(seed)
    k, d = c.shape
    sigma = np.exp(rng.uniform(-1.0, 3.5, (n, k, d)))
    return c * sigma * rng.laplace(size=(n, k, d)), sigma


@pytest.mark.parametrize("per_axis", [False, True])
def test_the_fit_recovers_a_known_scale_per_keypoint(per_axis):
    c = np.array([[0.3, 0.3], [1.0, 1.0], [2.5, 2.5], [7.0, 7.0]])
    if per_axis:
        c[:, 1] *= 3.0  # y three times x
    residual, sigma = _laplace_residuals(c, 3000, seed=1)
    fitted = fit_sigma_scale(residual, sigma, np.ones((3000, 4), bool), per_axis=per_axis)
    # |e| of a unit Laplace has mean 1 and sd 1: the MLE's relative s.e. is 1 / sqrt(3000 x D)
    np.testing.assert_allclose(fitted, c, rtol=0.06)
    # calibrated, the fraction within t x c sigma is the Laplace's 1 - exp(-t) at every t
    t = np.array([0.5, 1.0, 2.0, 3.0])
    inside = np.abs(residual)[..., None] <= t * (fitted * sigma)[..., None]
    np.testing.assert_allclose(inside.mean(axis=(0, 1, 2)), laplace_within(t), atol=0.01)


def test_unlabelled_residuals_are_ignored_and_sparse_keypoints_take_the_pooled_scale():
    c = np.full((3, 2), 2.0)
    residual, sigma = _laplace_residuals(c, 2000, seed=2)
    labelled = np.ones((2000, 3), bool)
    labelled[::2, 0] = False
    residual[::2, 0] = 1e6  # unlabelled: must not count
    labelled[MIN_RESIDUALS // 2 - 1 :, 2] = False  # keypoint 2: too few labelled residuals
    residual[:, 2] *= 50.0
    fitted = fit_sigma_scale(residual, sigma, labelled)
    assert fitted[0, 0] == pytest.approx(2.0, rel=0.06)
    pooled = np.abs(residual / sigma)[labelled].mean()
    assert fitted[2, 0] == pytest.approx(pooled, rel=1e-12)
    none = fit_sigma_scale(residual, sigma, np.zeros((2000, 3), bool))
    assert none.tolist() == [[1.0, 1.0]] * 3


def _calibrated_checkpoint(path: Path, scale: np.ndarray | None) -> Path:
    """A real tiny RLE checkpoint, with ``scale`` saved as its sigma calibration (or none)."""
    tiny_checkpoint(path, {"AP": 0.01, "sigma_calibration": 1.5})
    if scale is not None:
        state = load_checkpoint(path)
        state["sigma_calibration"] = SigmaCalibration(scale).to_state()
        save_checkpoint(state, path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ck")
    return {
        "calibrated": _calibrated_checkpoint(folder / "calibrated.pt", SCALE_2D),
        "old": _calibrated_checkpoint(folder / "old.pt", None),
    }


def test_predictor_reports_c_times_sigma_in_pixels_and_old_checkpoints_give_one(checkpoints):
    from posereg.predict import Predictor, result_entries

    predictor = Predictor.from_checkpoint(checkpoints["calibrated"], device="cpu")
    assert predictor.calibration.fitted
    np.testing.assert_allclose(predictor.calibration.scale, SCALE_2D, rtol=1e-6)
    result = predictor(str(PHOTO), BOX)
    assert result.sigma is not None and result.sigma_calibrated is not None
    np.testing.assert_allclose(result.sigma_calibrated, SCALE_2D * result.sigma, rtol=1e-6)
    entry = result_entries(result, 785)[0]
    np.testing.assert_allclose(entry["sigma_calibrated"], result.sigma_calibrated[0], atol=6e-4)
    assert result.select(np.array([0])).sigma_calibrated is not None

    old = Predictor.from_checkpoint(checkpoints["old"], device="cpu")
    assert not old.calibration.fitted and old.calibration.scale.tolist() == [[1.0, 1.0]] * K
    same = old(str(PHOTO), BOX)
    np.testing.assert_array_equal(same.sigma_calibrated, same.sigma)
    np.testing.assert_allclose(same.sigma, result.sigma, rtol=1e-6)  # same weights
    assert "c = 1" in old.calibration.describe("pixels")


def test_a_damaged_calibration_is_a_checkpoint_error_naming_the_file(tmp_path):
    state = {"sigma_calibration": {"scale": [[1.0, 1.0]] * 3}}
    with pytest.raises(CheckpointError, match=r"ck\.pt: sigma_calibration\.scale must be 17 x 2"):
        SigmaCalibration.from_state(state, 17, 2, "ck.pt")


def _posereg(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [POSEREG, *map(str, args)], capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


def test_predict_json_and_overlay_carry_the_calibrated_sigma(checkpoints, tmp_path):
    from posereg.predict import predict_files

    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"image_id": 785, "bbox": BOX[0], "score": 1.0}]))
    summary = predict_files(checkpoints["calibrated"], [str(PHOTO)], tmp_path / "cal", str(boxes),
                            device="cpu")  # fmt: skip
    # the CLI prints these lines (posereg predict: ...)
    assert any("c_k fitted on the validation set" in line for line in summary.lines())
    (entry,) = json.loads(summary.predictions.read_text())
    sigma, calibrated = np.array(entry["sigma"]), np.array(entry["sigma_calibrated"])
    assert sigma.shape == calibrated.shape == (K, 2)
    np.testing.assert_allclose(calibrated, SCALE_2D * sigma, rtol=2e-3, atol=2e-3)

    # an old checkpoint: c = 1, and the report says so
    summary = predict_files(checkpoints["old"], [str(PHOTO)], tmp_path / "old", str(boxes),
                            device="cpu")  # fmt: skip
    assert any("sigma_calibrated = sigma (c = 1)" in line for line in summary.lines())
    (old,) = json.loads(summary.predictions.read_text())
    assert old["sigma_calibrated"] == old["sigma"]
    # the overlays differ only by the calibrated-sigma discs (same weights, same keypoints)
    import cv2

    a = cv2.imread(str(tmp_path / "cal" / "000000000785_pose.png")).astype(int)
    b = cv2.imread(str(tmp_path / "old" / "000000000785_pose.png")).astype(int)
    assert a.shape == b.shape and (np.abs(a - b).max(axis=2) > 8).sum() > 50


def test_the_overlay_fills_the_calibrated_sigma_ellipse_translucently():
    from posereg.skeletons import get_skeleton
    from posereg.viz import SIGMA_ALPHA, draw_pose

    image = np.zeros((120, 160, 3), np.uint8)
    keypoints = np.full((K, 2), np.nan)
    keypoints[0] = (80.0, 60.0)
    sigma = np.full((K, 2), np.nan)
    sigma[0] = (30.0, 12.0)
    drawn = draw_pose(image, keypoints, get_skeleton("coco17"), np.ones(K), sigma_axes=sigma)
    green = 255 * SIGMA_ALPHA  # confidence 1: BGR (0, 255, 0)
    assert drawn[60, 80 + 22, 1] == pytest.approx(green, abs=2)  # inside along x (a = 30)
    assert drawn[60 + 20, 80, 1] == 0  # outside along y (b = 12)
    assert drawn[60, 80 + 36, 1] == 0
    assert drawn[60, 80 + 22, 0] == drawn[60, 80 + 22, 2] == 0


def test_serve_json_reports_sigma_calibrated_and_the_scales(checkpoints):
    from posereg.predict import Predictor
    from posereg.serve.app import _response, create_app
    from posereg.serve.schema import ModelInfo, PredictResponse, Timings

    answers = {}
    for name, path in checkpoints.items():
        predictor = Predictor.from_checkpoint(path, device="cpu")
        result = predictor(str(PHOTO), BOX)
        timings = Timings(decode_ms=0, queue_ms=0, predict_ms=0, total_ms=0)
        data = json.loads(_response(predictor, result, np.zeros((425, 640, 3), np.uint8),
                                    timings).model_dump_json())  # fmt: skip
        PredictResponse.model_validate(data)
        app = create_app(predictor)
        (route,) = [r for r in app.routes if getattr(r, "path", "") == "/v1/model"]
        info = ModelInfo.model_validate(asyncio.run(route.endpoint()).model_dump())
        answers[name] = (data, info)
        kp = data["people"][0]["keypoints"]
        sigma = np.array([k["sigma"] for k in kp])
        calibrated = np.array([k["sigma_calibrated"] for k in kp])
        np.testing.assert_allclose(calibrated, predictor.calibration.scale * sigma, rtol=1e-6)
    data, info = answers["calibrated"]
    assert data["sigma_calibration_fitted"] and info.sigma_calibration_fitted
    np.testing.assert_allclose(info.keypoint_sigma_scale, SCALE_2D, rtol=1e-6)
    data, info = answers["old"]
    assert not data["sigma_calibration_fitted"] and not info.sigma_calibration_fitted
    assert info.keypoint_sigma_scale == [(1.0, 1.0)] * K


def test_training_fits_c_on_the_validation_set_and_saves_it(tmp_path):
    """A real (tiny) run: best.pt and last.pt carry c_k; last.pt's equal a fit on a fresh
    evaluation of its weights, and Predictor reads them."""
    from posereg.config import load_config
    from posereg.engine.builders import build_datasets
    from posereg.engine.evaluate import evaluate
    from posereg.engine.train import train
    from posereg.models.build import model_from_checkpoint
    from posereg.predict import Predictor

    cfg = load_config(tiny_config(tmp_path, train={"epochs": 1}))
    run = train(cfg, device="cpu").run_dir
    for name in ("best.pt", "last.pt"):
        saved = load_checkpoint(run / name)["sigma_calibration"]
        assert saved["estimator"] == "laplace_mle" and saved["data"] == "val"
        assert np.array(saved["scale"]).shape == (K, 2)
    model, cfg_saved, _ = model_from_checkpoint(run / "last.pt")
    _, val_set = build_datasets(cfg_saved)
    evaluated = evaluate(model, val_set, cfg_saved, torch.device("cpu"))
    saved = np.array(load_checkpoint(run / "last.pt")["sigma_calibration"]["scale"])
    np.testing.assert_allclose(saved, evaluated.sigma_fit.scale, rtol=1e-5)
    # per keypoint and axis, on the residuals of the labelled validation keypoints, in pixels
    preds, truth = evaluated.predictions, val_set.table.keypoints
    expected = fit_sigma_scale(
        truth[..., :2] - preds.keypoints, preds.sigma, truth[..., 2] > 0, per_axis=True
    )
    np.testing.assert_allclose(saved, expected, rtol=1e-5)
    assert not np.array_equal(saved[:, 0], saved[:, 1])
    predictor = Predictor.from_checkpoint(run / "last.pt", device="cpu")
    assert predictor.calibration.fitted
    np.testing.assert_allclose(predictor.calibration.scale, saved)
    from posereg.checkpoint import describe_checkpoint

    info = describe_checkpoint(run / "last.pt")
    assert f"sigma_calibration: c from {saved.min():.4g} to {saved.max():.4g} (17 keypoints" in info


def _lift_checkpoint(path: Path, scale: np.ndarray | None) -> Path:
    """A real ``task: lift`` checkpoint of a small random RLE lifter (sigma varies per joint)."""
    from posereg.config import LiftConfig, LiftModelConfig, to_dict
    from posereg.models.lifter import FCLifter

    torch.manual_seed(0)
    model = FCLifter(hidden=16, loss="rle")
    model.normalizer.std_3d.copy_(torch.linspace(50.0, 250.0, 51).reshape(17, 3))
    cfg = LiftConfig(model=LiftModelConfig(hidden=16, loss="rle"))
    state = {"task": "lift", "model": model.state_dict(), "config": to_dict(cfg), "epoch": 1}
    if scale is not None:
        state["sigma_calibration"] = SigmaCalibration(scale).to_state()
    return save_checkpoint(state, path)


def test_the_lifter_reports_c_times_sigma_in_mm(tmp_path):
    from posereg.data.lift import synthetic_pairs
    from posereg.lift import Lifter

    scale = np.linspace(0.2, 3.0, 51).reshape(17, 3)
    kp = synthetic_pairs(4, seed=5, noise="none").keypoints_2d
    lifter = Lifter.from_checkpoint(_lift_checkpoint(tmp_path / "cal.pt", scale))
    result = lifter.lift(kp)
    assert result.calibration is not None and result.calibration.fitted
    np.testing.assert_allclose(result.sigma_calibrated, scale * result.sigma, rtol=1e-6)
    rec = result.to_json()[2]
    np.testing.assert_allclose(rec["sigma_calibrated"], result.sigma_calibrated[2], atol=0.006)

    old = Lifter.from_checkpoint(_lift_checkpoint(tmp_path / "old.pt", None)).lift(kp)
    assert old.calibration is not None and not old.calibration.fitted
    np.testing.assert_array_equal(old.sigma_calibrated, old.sigma)
    np.testing.assert_allclose(old.sigma, result.sigma, rtol=1e-6)


def test_lift_training_fits_c_per_joint_and_axis_on_the_validation_pairs(tmp_path):
    """A tiny lifting run: last.pt's c makes the calibrated sigma match the mean |error| of its
    validation pairs per joint and axis (the Laplace MLE), and `posereg lift` reports it."""
    from posereg.config import LiftConfig, LiftDataConfig, LiftModelConfig, LiftTrainConfig
    from posereg.engine.lift import build_lift_data, train_lift
    from posereg.lift import Lifter
    from posereg.models.lifter import predict_lifter

    cfg = LiftConfig(
        name="tiny_lift", out_dir=str(tmp_path),
        data=LiftDataConfig(num_train=256, num_val=64),
        model=LiftModelConfig(hidden=64, loss="rle"),
        train=LiftTrainConfig(epochs=1, batch_size=32, threads=1),
    )  # fmt: skip
    run = train_lift(cfg, device="cpu").run_dir
    assert run is not None
    lifter = Lifter.from_checkpoint(run / "last.pt")
    assert lifter.calibration.fitted and lifter.calibration.scale.shape == (17, 3)
    _, val = build_lift_data(cfg, train=False)
    joints, sigma = predict_lifter(lifter.model, val.keypoints_2d)
    calibrated = lifter.calibration.apply(sigma)
    error = np.abs(val.joints_3d - joints)[:, 1:]  # (N, 16, 3) mm, the pelvis left out
    ratio = (error / calibrated[:, 1:]).mean(axis=0)  # (16, 3)
    np.testing.assert_allclose(ratio, 1.0, rtol=1e-4)  # the MLE: mean |r| / (c sigma) = 1
    assert lifter.calibration.scale[0].tolist() == [0.0, 0.0, 0.0]  # the pelvis is exact

    np.save(tmp_path / "poses.npy", val.keypoints_2d[:2])
    r = _posereg("lift", "--checkpoint", run / "last.pt", tmp_path / "poses.npy",
                 "--out", tmp_path / "lifted", "--no-draw")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "c_k fitted on the validation set" in r.stdout and "mm" in r.stdout
    out = json.loads((tmp_path / "lifted" / "poses_3d.json").read_text())
    assert out["sigma_calibration"]["fitted"] is True
    pose = out["poses"][1]
    np.testing.assert_allclose(pose["sigma_calibrated"], calibrated[1], atol=0.006)
