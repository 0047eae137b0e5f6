"""Two-stage lifting: the FC lifter learns, and train / eval / lift work through the CLI and API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tests._real_data import REPO, real
from tests.test_h36m_lift_data import _write_archives

from posereg.config import (
    LiftConfig,
    LiftDataConfig,
    LiftModelConfig,
    LiftTrainConfig,
    config_task,
)
from posereg.data.lift import synthetic_pairs
from posereg.engine.lift import evaluate_lifter, fit_lifter
from posereg.lift import Lifter, LiftResult, read_poses_2d
from posereg.models.lifter import FCLifter

POSEREG = str(Path(sys.executable).parent / "posereg")


@pytest.mark.parametrize("loss", ["l2", "rle"])
def test_a_lifter_overfits_a_tiny_set(loss):
    pairs = synthetic_pairs(64, seed=3, noise="none")
    cfg = LiftConfig(
        model=LiftModelConfig(hidden=256, dropout=0.0, loss=loss),
        train=LiftTrainConfig(epochs=150, batch_size=32, lr=3e-3, lr_decay=0.99, threads=1),
    )
    model, result = fit_lifter(cfg, pairs, pairs)
    start = result.history[0]["MPJPE"]
    # measured (300 steps): l2 from 189 to 11 mm, rle from 550 to 11 mm
    assert start > 60.0
    assert result.metrics.mpjpe < 20.0, result.metrics.mpjpe


def test_the_pelvis_is_exactly_zero_and_the_loss_ignores_it():
    model = FCLifter(hidden=32).eval()
    joints, sigma = model.predict_mm(torch.rand(3, 17, 2) * 500)
    assert torch.all(joints[:, 0] == 0.0) and torch.all(sigma > 0)
    out = model(torch.rand(3, 17, 2) * 500)
    target = torch.zeros(3, 17, 3)
    moved = target.clone()
    moved[:, 0] = 1e4  # a pelvis target that cannot be right must not change the loss
    assert float(model.loss(out, target)) == float(model.loss(out, moved))


def test_normalisation_makes_the_input_invariant_to_image_position_and_scale():
    model = FCLifter(hidden=32).eval()
    kp = torch.rand(2, 17, 2) * 300
    a = model.normalizer.normalize_2d(kp)
    b = model.normalizer.normalize_2d(2.5 * kp + torch.tensor([400.0, -120.0]))
    torch.testing.assert_close(a, b)


def test_top_down_configs_are_not_lift_configs():
    assert config_task(REPO / "configs/synth_rle.yaml") == "pose"
    assert config_task(REPO / "configs/lift_synth_rle.yaml") == "lift"
    assert config_task(REPO / "configs/lift_h36m_rle.yaml") == "lift"


def _run(*args, cwd=None):
    return subprocess.run(
        [POSEREG, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


TINY = [
    "data.num_train=256", "data.num_val=64", "model.hidden=64", "train.epochs=2",
    "train.batch_size=32",
]  # fmt: skip


@pytest.mark.slow
def test_train_eval_lift_through_the_cli(tmp_path):
    cfg = REPO / "configs/lift_synth_rle.yaml"
    r = _run("train", cfg, "--set", f"out_dir={tmp_path}", *TINY)
    assert r.returncode == 0, r.stderr
    run = tmp_path / "lift_synth_rle"
    assert {"config.yaml", "best.pt", "last.pt", "metrics.json", "log.csv"} <= {
        p.name for p in run.iterdir()
    }
    saved = json.loads((run / "metrics.json").read_text())
    recorded = saved["val"]
    assert set(saved["per_joint"]) == set(FCLifter().joint_names)
    assert "standing" in saved["per_action"] and len(saved["per_action"]["standing"]) == 2
    assert "val MPJPE" in r.stdout

    # eval of last.pt reproduces the run's final validation numbers
    r = _run("eval", cfg, "--checkpoint", run / "last.pt", "--set", *TINY,
             "--out", tmp_path / "eval.json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    printed = dict(line.split(": ") for line in r.stdout.splitlines() if not line.startswith(" "))
    assert float(printed["MPJPE"]) == pytest.approx(recorded["MPJPE"], abs=0.01)
    assert float(printed["PA-MPJPE"]) == pytest.approx(recorded["PA-MPJPE"], abs=0.01)
    for key in ("N-MPJPE", "PCK3D_150", "AUC3D"):
        assert float(printed[key]) == pytest.approx(recorded[key], abs=0.01)
    assert "  standing: MPJPE" in r.stdout  # per action (the synthetic pose classes)

    # lift a COCO-results json (as `posereg predict` writes) and an .npy array
    pairs = synthetic_pairs(3, seed=9, noise="none")
    records = [
        {"image_id": 7 + i, "category_id": 1, "score": 0.9,
         "keypoints": np.concatenate([kp, np.ones((17, 1))], 1).ravel().tolist()}
        for i, kp in enumerate(pairs.keypoints_2d)
    ]  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps(records))
    r = _run("lift", "--checkpoint", run / "best.pt", tmp_path / "results.json",
             "--out", tmp_path / "lifted")  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "lifted/poses_3d.json").read_text())
    assert [p["image_id"] for p in out["poses"]] == [7, 8, 9]
    joints = np.array([p["joints_3d"] for p in out["poses"]])
    sigma = np.array([p["sigma"] for p in out["poses"]])
    assert joints.shape == (3, 17, 3) and np.all(joints[:, 0] == 0) and np.all(sigma > 0)
    png = tmp_path / "lifted/poses_3d.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    # the same poses as an array give the same joints
    np.save(tmp_path / "poses.npy", pairs.keypoints_2d)
    r = _run("lift", "--checkpoint", run / "best.pt", tmp_path / "poses.npy",
             "--out", tmp_path / "lifted_npy", "--no-draw")  # fmt: skip
    assert r.returncode == 0, r.stderr
    again = json.loads((tmp_path / "lifted_npy/poses_3d.json").read_text())
    np.testing.assert_allclose(
        np.array([p["joints_3d"] for p in again["poses"]]), joints, atol=0.02
    )

    # user errors are one line naming the file
    np.save(tmp_path / "bad.npy", np.zeros((2, 16, 2)))
    r = _run("lift", "--checkpoint", run / "best.pt", tmp_path / "bad.npy", "--out", tmp_path)
    assert r.returncode == 2 and "bad.npy" in r.stderr and "(N, 17, 2 or 3)" in r.stderr
    assert "Traceback" not in r.stderr
    r = _run("train", "--resume", run)
    assert r.returncode == 2 and "not resumable" in r.stderr


def test_lift_refuses_a_top_down_checkpoint(tmp_path):
    from posereg.checkpoint import save_checkpoint

    save_checkpoint({"model": {}, "config": {}}, tmp_path / "pose.pt")
    np.save(tmp_path / "p.npy", np.zeros((1, 17, 2)))
    r = _run("lift", "--checkpoint", tmp_path / "pose.pt", tmp_path / "p.npy")
    assert r.returncode == 2
    assert "not a lifting checkpoint" in r.stderr and "Traceback" not in r.stderr


def test_python_api_returns_a_typed_result_and_l2_lifters_have_no_sigma():
    pairs = synthetic_pairs(128, seed=4, noise="coco")
    cfg = LiftConfig(
        model=LiftModelConfig(hidden=32, loss="l2"),
        train=LiftTrainConfig(epochs=1, batch_size=32, threads=1),
    )
    model, _ = fit_lifter(cfg, pairs, pairs)
    result = Lifter(model).lift(pairs.keypoints_2d[:5])
    assert isinstance(result, LiftResult) and result.sigma is None
    assert result.joints_3d.shape == (5, 17, 3) and result.joint_names[0] == "pelvis"
    assert result.to_json()[0]["sigma"] is None


def test_python_api_sigma_is_the_model_sigma_in_mm():
    model = FCLifter(hidden=16, loss="rle").eval()
    model.normalizer.std_3d.copy_(torch.linspace(50.0, 250.0, 51).reshape(17, 3))
    kp = np.random.default_rng(0).uniform(100, 900, (4, 17, 2))
    result = Lifter(model).lift(kp, image_ids=[3, 4, 5, 6])
    assert isinstance(result, LiftResult) and result.image_ids == [3, 4, 5, 6]
    raw = model(torch.as_tensor(kp, dtype=torch.float32)).sigma.detach().double().numpy()
    np.testing.assert_allclose(
        result.sigma, raw * model.normalizer.std_3d.double().numpy(), rtol=1e-6
    )
    assert np.all(result.joints_3d[:, 0] == 0.0)
    rec = result.to_json()[1]
    assert rec["image_id"] == 4 and np.array(rec["sigma"]).shape == (17, 3)
    np.testing.assert_allclose(rec["sigma"], result.sigma[1], atol=0.005)


def _red_pixels(png) -> int:
    import matplotlib.image

    rgb = matplotlib.image.imread(png)[..., :3]
    return int(((rgb[..., 0] > 0.6) & (rgb[..., 1] < 0.4) & (rgb[..., 2] < 0.4)).sum())


@pytest.mark.slow  # ~3-9 s: three matplotlib 3D figures
def test_the_3d_plot_draws_the_uncertainty(tmp_path):
    from posereg.lift import draw_lift
    from posereg.skeletons import H36M17

    joints = synthetic_pairs(1, seed=1, noise="none").joints_3d
    names = H36M17.keypoint_names
    small = LiftResult(joints, np.full((1, 17, 3), 5.0), names)
    large = LiftResult(joints, np.full((1, 17, 3), 80.0), names)
    none = LiftResult(joints, None, names)
    red = [
        _red_pixels(draw_lift(r, tmp_path / f"{i}.png")) for i, r in enumerate((none, small, large))
    ]
    assert red[0] == 0  # no sigma: black joints, no bars
    assert red[2] > 1.5 * red[1] > 0  # +- sigma bars grow with sigma


def test_read_poses_2d_errors_name_the_file_and_record(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps([{"keypoints": [1, 2, 1] * 17}, {"keypoints": [1, 2]}]))
    with pytest.raises(ValueError, match=r"r.json: record #1: 'keypoints' must be"):
        read_poses_2d(path)
    nan = np.zeros((2, 17, 2))
    nan[1, 3, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(ValueError, match=r"nan.npy: pose #1: NaN"):
        read_poses_2d(tmp_path / "nan.npy")


@pytest.mark.slow
def test_h36m_config_trains_on_videopose3d_archives_and_reports_per_action(tmp_path):
    p3, p2, _ = _write_archives(tmp_path, subjects=("S1", "S9"))
    overrides = [
        f"data.positions_3d={p3}", f"data.positions_2d={p2}", "data.train_subjects=[S1]",
        "data.test_subjects=[S9]", "model.hidden=32", "train.epochs=2", "train.batch_size=8",
    ]  # fmt: skip
    cfg = REPO / "configs/lift_h36m_rle.yaml"
    r = _run("train", cfg, "--set", f"out_dir={tmp_path}/runs", *overrides)
    assert r.returncode == 0, r.stderr
    r = _run("eval", cfg, "--checkpoint", tmp_path / "runs/lift_h36m_rle/last.pt", "--set",
             *overrides)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "  Walking: MPJPE" in r.stdout and "  Sitting: MPJPE" in r.stdout


def test_body3d_fixture_pairs_evaluate_through_a_lifter():
    val = LiftConfig(data=LiftDataConfig(source="body3d"))
    assert val.data.source == "body3d"
    from posereg.data.lift import h36m_body3d_pairs

    pairs = h36m_body3d_pairs(str(real("h36m", "test_h36m_body3d.npz")))
    model = FCLifter(hidden=16)
    model.normalizer.fit(
        torch.as_tensor(pairs.keypoints_2d).float(), torch.as_tensor(pairs.joints_3d).float()
    )
    metrics = evaluate_lifter(model, pairs)
    assert set(metrics.per_action) == {"Directions", "SittingDown", "Greeting", "WalkDog"}
    assert metrics.pa_mpjpe <= metrics.mpjpe
