"""Single-stage 3D (data.depth): depth targets, flip, back-projection, MPJPE, train/eval, predict."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from posereg.config import Config, ConfigError, DataConfig, EvalConfig, ModelConfig, from_dict
from posereg.data.badinput import BadInputError
from posereg.data.dataset import TopDownDataset, TransformConfig
from posereg.data.depth import root_joints
from posereg.decode import root_relative_depth
from posereg.engine.eval3d import evaluate_depth
from posereg.engine.evaluate import primary_metric, primary_score
from posereg.metrics.mpjpe import back_project
from posereg.models.build import check_depth
from posereg.skeletons import COCO17, H36M17
from posereg.synth.generate import SynthConfig, generate

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
POSEREG = str(Path(sys.executable).parent / "posereg")
K = np.array([[200.0, 0.0, 32.0], [0.0, 210.0, 30.0], [0.0, 0.0, 1.0]])


def _z() -> np.ndarray:
    """Per-joint camera depths: 4000 + 50 k mm; joint 9 (left_wrist) 2 m further back."""
    z = 4000.0 + 50.0 * np.arange(17)
    z[9] = 6000.0
    return z


def _write_set(tmp_path: Path, with_3d: bool = True) -> Path:
    """One 64x64 image, one person: 2D keypoints inside the image, joints_3d with depths _z()."""
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images/a.png"), np.full((64, 64, 3), 90, np.uint8))
    rng = np.random.default_rng(0)
    xy = rng.uniform(16, 48, size=(17, 2))
    joints = np.concatenate([xy, _z()[:, None]], axis=1)  # X, Y do not matter for the target
    ann = {
        "id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 900.0,
        "bbox": [12.0, 12.0, 40.0, 40.0],
        "keypoints": np.concatenate([xy, np.full((17, 1), 2.0)], 1).ravel().tolist(),
    }  # fmt: skip
    if with_3d:
        ann.update(joints_3d=joints.tolist(), camera={"K": K.tolist()})
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 64, "width": 64}],
        "annotations": [ann],
        "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17.keypoint_names)}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def _dataset(ann: Path, flip: bool) -> TopDownDataset:
    transform = TransformConfig(
        augment=flip, flip_prob=1.0, scale_factor=0.0, rotation_factor=0.0, half_body_prob=0.0
    )
    return TopDownDataset.from_coco(
        ann, ann.parent / "images", input_size=(64, 64), transform=transform, depth_range=2000.0
    )


def test_depth_target_is_root_relative_over_2000_mm_with_the_official_weights(tmp_path):
    sample = _dataset(_write_set(tmp_path), flip=False)[0]
    # root = mid-hip (COCO-17 has no pelvis): (z[11] + z[12]) / 2 = 4000 + 50 * 11.5 = 4575
    expected = (_z() - 4575.0) / 2000.0
    assert root_joints(COCO17) == (11, 12) and root_joints(H36M17) == (0,)
    assert sample.target.shape == (17, 3) and sample.target_weight.shape == (17, 3)
    np.testing.assert_allclose(sample.target[:, 2].numpy(), expected, atol=1e-6)
    assert sample.target[0, 2] == pytest.approx(-0.2875) and sample.target[9, 2] == pytest.approx(
        0.7125
    )
    # |d| > 0.5 (the wrist 1.4 m behind the root): weight 0 on all three coordinates, as officially
    weight = sample.target_weight.numpy()
    assert (weight[9] == 0).all() and (np.delete(weight, 9, axis=0) == 1).all()


def test_flip_swaps_depth_with_the_flip_pairs_and_keeps_its_sign(tmp_path):
    ann = _write_set(tmp_path)
    plain, flipped = _dataset(ann, flip=False)[0], _dataset(ann, flip=True)[0]
    assert flipped.flipped and not plain.flipped
    d = (_z() - 4575.0) / 2000.0
    np.testing.assert_allclose(flipped.target[:, 2].numpy(), d[list(COCO17.flip_index)], atol=1e-6)
    # left_ankle (15) of the mirrored crop is the right ankle (16): depth 0.1125, not -0.1125
    assert flipped.target[15, 2] == pytest.approx((4800.0 - 4575.0) / 2000.0)
    # u is mirrored about the crop centre as in 2D (u -> -u, left and right swapped); v is kept
    np.testing.assert_allclose(
        flipped.target[15, 0].numpy(), -plain.target[16, 0].numpy(), atol=1e-5
    )
    np.testing.assert_allclose(
        flipped.target[15, 1].numpy(), plain.target[16, 1].numpy(), atol=1e-5
    )
    # the wrist's zero weight moves with it (9 -> 10)
    assert (flipped.target_weight[10] == 0).all() and (flipped.target_weight[9] == 1).all()


def test_a_file_without_joints_3d_is_one_error_naming_file_and_field(tmp_path):
    ann = _write_set(tmp_path, with_3d=False)
    with pytest.raises(BadInputError) as e:
        _dataset(ann, flip=False)
    assert str(ann) in str(e.value) and "'joints_3d'" in str(e.value)
    assert "annotation id 1" in str(e.value)


@pytest.mark.slow
def test_train_on_a_file_without_joints_3d_says_so_without_a_traceback(tmp_path):
    ann = _write_set(tmp_path, with_3d=False)
    cfg = _config(tmp_path, ann, ann, "regression", {"dim": 3})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run(
        [POSEREG, "train", str(path)], capture_output=True, text=True, timeout=120, env=ENV
    )
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert str(ann) in out.stderr and "no 'joints_3d' field" in out.stderr


def test_depth_config_fields_are_typed_and_ranged():
    with pytest.raises(
        ConfigError, match=r"data.depth_range_mm: 0.0 is out of range; allowed: > 0"
    ):
        from_dict(Config, {"data": {"depth": True, "depth_range_mm": 0.0}})
    with pytest.raises(ConfigError, match=r"data.depth: expected true/false, got 'yes'"):
        from_dict(Config, {"data": {"depth": "yes"}})


def test_depth_and_head_must_agree():
    cfg = Config(data=DataConfig(depth=True, input_size=(64, 64)), model=ModelConfig())
    with pytest.raises(ConfigError, match=r"predicts 2 coordinates; set model.head_options"):
        check_depth(cfg)
    cfg = Config(
        data=DataConfig(input_size=(64, 64)),
        model=ModelConfig(head="integral", head_options={"depth": 4}),
    )
    with pytest.raises(ConfigError, match=r"predicts 3 coordinates but data.depth is false"):
        check_depth(cfg)


def test_best_checkpoint_keeps_the_lowest_mpjpe():
    cfg = Config(data=DataConfig(depth=True), eval=EvalConfig())
    assert primary_metric(cfg) == "MPJPE"
    assert primary_score({"MPJPE": 80.0}, cfg) > primary_score({"MPJPE": 120.0}, cfg)
    pa = Config(data=DataConfig(depth=True), eval=EvalConfig(primary_metric="PA-MPJPE"))
    assert primary_score({"PA-MPJPE": 50.0}, pa) > primary_score({"PA-MPJPE": 51.0}, pa)


def test_back_project_inverts_the_pinhole_projection():
    rng = np.random.default_rng(1)
    joints = rng.uniform([-500, -800, 2500], [500, 800, 5000], size=(3, 17, 3))
    uv_h = np.einsum("ij,nkj->nki", K, joints)
    uv = uv_h[..., :2] / uv_h[..., 2:]
    np.testing.assert_allclose(back_project(uv, joints[..., 2], K), joints, atol=1e-9)


# ----------------------------------------------------------------------------- generated renders


@pytest.fixture(scope="module")
def synth3d(tmp_path_factory) -> Path:
    """A tiny rendered set (6 train, 4 val images) with the generator's joints_3d and cameras."""
    root = tmp_path_factory.mktemp("synth3d")
    config = SynthConfig.preset(
        "easy", image_size=(96, 96), noise={"scale": 0.0, "outlier_prob": 0.0, "swap_prob": 0.0}
    )
    for split, n in (("train", 6), ("val", 4)):
        generate(root, split, n, seed=3, config=config, num_workers=1, progress=False)
    return root


def test_a_perfect_prediction_back_projects_to_the_generators_joints(synth3d):
    ann = synth3d / "annotations/person_keypoints_val.json"
    ds = TopDownDataset.from_coco(
        ann, synth3d / "images/val", input_size=(64, 64), depth_range=2000.0
    )
    t = ds.table
    # the generator's cameras: projecting its joints_3d gives its clean 2D keypoints
    uv_h = np.einsum("nij,nkj->nki", t.intrinsics, t.joints_3d)
    uv = uv_h[..., :2] / uv_h[..., 2:]
    raw = json.loads(ann.read_text())["annotations"]
    clean = np.array([a["keypoints_clean"] for a in raw]).reshape(len(raw), 17, 3)
    clean = clean[np.isin([a["id"] for a in raw], t.ann_ids)]
    labelled = clean[..., 2] > 0
    assert labelled.sum() > 20
    assert np.abs(uv - clean[..., :2])[labelled].max() < 0.02  # px (the file rounds to 1e-3 px)
    # a perfect (u, v, d), d with any common offset (the depth codec makes it root-relative): ~0 mm
    depth = root_relative_depth(t.joints_3d[..., 2] / 2000.0 + 0.3, root_joints(ds.skeleton), 2000)
    result = evaluate_depth(uv, depth, ds)
    assert result.mpjpe < 1e-6 and result.pa_mpjpe < 1e-6 and result.num_poses == len(t)
    # 100 mm too deep on the right wrist alone: MPJPE = |ray to 100 mm further| / 17 per pose
    wrong = depth.copy()
    wrong[:, 10] += 100.0
    ray = np.linalg.norm(t.joints_3d[:, 10] / t.joints_3d[:, 10, 2:3], axis=-1) * 100.0
    assert evaluate_depth(uv, wrong, ds).mpjpe == pytest.approx(float(np.mean(ray / 17)), rel=1e-6)


def _config(tmp_path: Path, train: Path, val: Path, head: str, options: dict) -> dict:
    model = {"backbone": "resnet18", "width": 0.25, "head": head, "head_options": options}
    return {
        "name": head, "out_dir": str(tmp_path / "runs"),
        "data": {
            "train_ann": str(train), "train_images": str(train.parent.parent / "images/train"),
            "val_ann": str(val), "val_images": str(val.parent.parent / "images/val"),
            "input_size": [64, 64], "depth": True, "workers": 0,
        },
        "model": model,
        "optim": {"lr": 1e-3, "schedule": "constant"},
        "train": {"epochs": 2, "max_steps": 4, "batch_size": 4, "threads": 1, "eval_every": 1,
                  "progress": False},
        "eval": {"batch_size": 8, "num_vis": 2},
    }  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    "head, options", [("regression", {"dim": 3}), ("integral", {"depth": 4, "deconv_channels": 16})]
)
def test_train_writes_mpjpe_and_keeps_the_best_one(tmp_path, synth3d, head, options):
    ann = synth3d / "annotations"
    cfg = _config(
        tmp_path,
        ann / "person_keypoints_train.json",
        ann / "person_keypoints_val.json",
        head,
        options,
    )
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run(
        [POSEREG, "train", str(path)], capture_output=True, text=True, timeout=300, env=ENV
    )
    assert out.returncode == 0, out.stderr[-2000:]
    run = tmp_path / "runs" / head
    val = json.loads((run / "metrics.json").read_text())["val"]
    assert 0 < val["PA-MPJPE"] < val["MPJPE"] < 5000  # mm; PA can only lower it
    with (run / "val_log.csv").open() as f:
        logged = [float(r["MPJPE"]) for r in csv.DictReader(f)]
    assert len(logged) == 2
    import torch

    best = torch.load(run / "best.pt", weights_only=False)
    assert best["metrics"]["MPJPE"] == pytest.approx(min(logged))
    assert f"MPJPE {val['MPJPE']:.1f} mm" in out.stdout
    if head == "regression":  # posereg eval reports the same MPJPE from best.pt
        out = subprocess.run(
            [POSEREG, "eval", str(path), "--checkpoint", str(run / "best.pt")],
            capture_output=True, text=True, timeout=120, env=ENV,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        printed = dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)
        assert float(printed["MPJPE"]) == pytest.approx(min(logged), abs=1e-3)
        assert float(printed["PA-MPJPE"]) < float(printed["MPJPE"])
    if head == "regression":  # the checkpoint predicts depth (and its sigma) through predict
        image = sorted((synth3d / "images/val").iterdir())[0]
        outdir = tmp_path / "pred"
        out = subprocess.run(
            [POSEREG, "predict", str(image), "--checkpoint", str(run / "best.pt"),
             "--out", str(outdir)],
            capture_output=True, text=True, timeout=120, env=ENV,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        entry = json.loads(next(outdir.glob("*.json")).read_text())[0]
        depth, sigma = np.array(entry["depth"]), np.array(entry["depth_sigma"])
        assert depth.shape == (17,) and sigma.shape == (17,) and (sigma > 0).all()
        assert abs(depth[11] + depth[12]) < 0.2  # root-relative: mid-hip at 0 (rounded to 0.1)
