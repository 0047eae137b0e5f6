"""Issue 20 §3: inputs that used to give a plausible but wrong result now fail or are flagged."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tests._real_data import REPO, real, tiny_checkpoint

from posereg.checkpoint import CheckpointError, save_checkpoint
from posereg.cli import main
from posereg.config import Config, LiftConfig, LiftDataConfig, LiftModelConfig, to_dict
from posereg.data.badinput import BadInputError
from posereg.models.build import build_lift_model

POSEREG = str(Path(sys.executable).parent / "posereg")


def _run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [POSEREG, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


# --------------------------------------------------------------------------- lifting eval config
LIFT_CFG = LiftConfig(
    data=LiftDataConfig(num_train=64, num_val=32),
    model=LiftModelConfig(hidden=32, num_blocks=1, loss="rle", loss_options={"q": "laplace"}),
)


@pytest.fixture(scope="module")
def lift_run(tmp_path_factory) -> tuple[Path, Path]:
    """(config.yaml, checkpoint) of a tiny untrained lifter saved as a lifting run saves it."""
    folder = tmp_path_factory.mktemp("lift")
    cfg = dataclasses.replace(LIFT_CFG, out_dir=str(folder / "runs"))
    state = {"task": "lift", "model": build_lift_model(cfg).state_dict(), "config": to_dict(cfg)}
    ck = save_checkpoint(state, folder / "best.pt")
    path = folder / "lift.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    return path, ck


@pytest.mark.parametrize(
    ("override", "key", "saved", "given"),
    [
        ("data.input_skeleton=coco17", "data.input_skeleton", "'h36m17'", "'coco17'"),
        ("model.hidden=64", "model.hidden", "32", "64"),
        ("model.num_blocks=2", "model.num_blocks", "1", "2"),
        ("model.loss=l2", "model.loss", "'rle'", "'l2'"),
        ("model.loss_options={q: gaussian}", "model.loss_options", "{'q': 'laplace'}",
         "{'q': 'gaussian'}"),
    ],
)  # fmt: skip
def test_lift_eval_refuses_a_config_of_another_lifter(
    lift_run, capsys, override, key, saved, given
):
    cfg, ck = lift_run
    assert main(["eval", str(cfg), "--checkpoint", str(ck), "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("posereg eval: error: ")
    assert f"{key}: checkpoint {saved}, given {given}" in err
    assert str(ck) in err and err.count("checkpoint ") == 1  # only the key that differs
    # the --set it suggests evaluates with the checkpoint's own setting
    assert f"{key}=" in err.partition(" --set ")[2]


def test_lift_eval_lists_every_differing_key_through_a_subprocess(lift_run):
    cfg, ck = lift_run
    r = _run("eval", cfg, "--checkpoint", ck, "--set", "data.input_skeleton=coco17",
             "model.hidden=64")  # fmt: skip
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "data.input_skeleton: checkpoint 'h36m17', given 'coco17'" in r.stderr
    assert "model.hidden: checkpoint 32, given 64" in r.stderr
    assert "--set data.input_skeleton=h36m17 model.hidden=32" in r.stderr


@pytest.mark.parametrize(
    "overrides",
    [
        [],  # its own config
        # keys that do not define the lifter: sizes of the sets, paths, the training loop
        ["data.num_val=16", "out_dir=/nonexistent", "train.batch_size=7", "model.dropout=0.1"],
    ],
)
def test_lift_eval_runs_with_its_own_config_and_ignores_other_keys(lift_run, capsys, overrides):
    cfg, ck = lift_run
    args = ["eval", str(cfg), "--checkpoint", str(ck)] + (
        ["--set", *overrides] if overrides else []
    )
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "MPJPE: " in out


def test_2d_eval_names_the_config_keys_when_a_checkpoint_does_not_load(tmp_path):
    from posereg.models.build import model_from_checkpoint

    ck = tiny_checkpoint(tmp_path / "tiny.pt")
    cfg = Config()
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, input_size=[64, 48]),
        model=dataclasses.replace(cfg.model, backbone="resnet34", width=0.25),
    )
    with pytest.raises(CheckpointError) as e:
        model_from_checkpoint(ck, cfg)
    message = str(e.value)
    assert "saved from another model/config" in message
    assert "model.backbone: checkpoint 'resnet18', given 'resnet34'" in message
    assert "model.width" not in message  # the same in both


def _json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


# --------------------------------------------------------------------------- COCO person category
def _coco_with(tmp_path: Path, categories: list | None) -> Path:
    data = json.loads(real("coco", "test_coco.json").read_text())
    if categories is None:
        del data["categories"]
    else:
        data["categories"] = categories
    return _json(tmp_path / "val.json", data)


def _eval_config(tmp_path: Path, ann: Path) -> Path:
    coco = real("coco")
    cfg = {
        "data": {"val_ann": str(ann), "val_images": str(coco), "train_ann": str(ann),
                 "train_images": str(coco), "input_size": [64, 48], "workers": 0},
        "model": {"backbone": "resnet18", "width": 0.25},
        "eval": {"batch_size": 8, "num_vis": 0},
        "out_dir": str(tmp_path / "runs"),
    }  # fmt: skip
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


NO_PERSON = [[], [{"id": 1, "name": "dog"}], [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}]]


@pytest.mark.parametrize("categories", NO_PERSON, ids=["empty", "dog", "dog-cat"])
def test_eval_refuses_a_coco_file_without_a_person_category(tmp_path, capsys, categories):
    ann = _coco_with(tmp_path, categories)
    ck = tiny_checkpoint(tmp_path / "tiny.pt")
    assert main(["eval", str(_eval_config(tmp_path, ann)), "--checkpoint", str(ck)]) == 2
    out = capsys.readouterr()
    err = out.err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"posereg eval: error: {ann}: categories: no person category")
    assert "AP" not in out.out  # no score is printed


def test_eval_of_a_file_without_a_person_category_is_one_line_through_a_subprocess(tmp_path):
    ann = _coco_with(tmp_path, [])
    ck = tiny_checkpoint(tmp_path / "tiny.pt")
    r = _run("eval", _eval_config(tmp_path, ann), "--checkpoint", ck)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"posereg eval: error: {ann}: categories: no person category (no category lists "
        "'keypoints' and none is named 'person'; categories: none); a COCO keypoint file needs "
        'one, e.g. {"id": 1, "name": "person", "keypoints": [...]}'
    ]


@pytest.mark.parametrize("categories", NO_PERSON, ids=["empty", "dog", "dog-cat"])
def test_coco_evaluation_ground_truth_needs_a_person_category(tmp_path, categories):
    from posereg.metrics.coco import evaluate_coco

    ann = _coco_with(tmp_path, categories)
    anns = json.loads(ann.read_text())["annotations"]
    preds = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"],
              "score": 1.0} for a in anns]  # fmt: skip
    with pytest.raises(BadInputError, match=rf"^{ann}: categories: no person category"):
        evaluate_coco(ann, preds)


@pytest.mark.parametrize(
    "categories",
    [None, [{"id": 1, "name": "person"}], [{"id": 7, "name": "dog"}, {"id": 1, "name": "person"}]],
    ids=["no-key", "person-without-keypoints", "person-second"],
)
def test_a_person_category_by_name_or_a_file_without_categories_still_evaluate(
    tmp_path, categories
):
    from posereg.metrics.coco import evaluate_coco

    ann = _coco_with(tmp_path, categories)
    anns = json.loads(ann.read_text())["annotations"]
    preds = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"],
              "score": 1.0} for a in anns]  # fmt: skip
    # the same AP as the file with its own person category (with keypoint names)
    assert evaluate_coco(ann, preds).ap == evaluate_coco(real("coco", "test_coco.json"), preds).ap


# --------------------------------------------------------------------------- predict --boxes
@pytest.fixture(scope="module")
def pose_checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ck") / "tiny.pt")


def _one_image(tmp_path: Path) -> Path:
    images = tmp_path / "in"
    images.mkdir()
    shutil.copy(real("coco", "000000000785.jpg"), images / "000000000785.jpg")  # 640 x 425
    return images


UNUSABLE = {  # (entries, skipped): every entry is for image 785 and unusable
    "outside": ([{"image_id": 785, "bbox": [5000, 10, 40, 80], "score": 0.9}], 1),
    "zero-size": ([{"image_id": 785, "bbox": [10, 10, 0, 0], "score": 0.9}], 1),
    "nan": ([{"image_id": 785, "bbox": [float("nan"), 10, 40, 80], "score": 0.9}], 1),
    "strings": ([{"image_id": 785, "bbox": ["a", "b", "c", "d"], "score": 0.9},
                 {"image_id": 785, "bbox": "10 10 40 80", "score": 0.9}], 2),
    "empty-bbox": ([{"image_id": 785, "bbox": [], "score": 0.9}], 1),
    "empty-list": ([], 0),
    "other-image": ([{"image_id": 9, "bbox": [10, 10, 40, 80], "score": 0.9}], 0),
}  # fmt: skip


@pytest.mark.parametrize("case", list(UNUSABLE))
def test_predict_with_no_usable_box_fails_every_image(tmp_path, capsys, pose_checkpoint, case):
    entries, skipped = UNUSABLE[case]
    dets = _json(tmp_path / "dets.json", entries)
    images = _one_image(tmp_path)
    out = tmp_path / "out"
    rc = main(["predict", str(images), "--checkpoint", str(pose_checkpoint), "--boxes", str(dets),
               "--out", str(out), "--device", "cpu", "--no-draw"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1, err  # the policy of an image with no usable input (docs/training.md)
    assert (
        f"posereg predict: 0 usable boxes in {dets} ({len(entries)} entries, {skipped} skipped)"
        in err
    )
    assert f"1 of 1 images failed: 000000000785.jpg (no usable box in {dets})" in err
    assert json.loads((out / "predictions.json").read_text()) == []


def test_predict_reports_the_usable_boxes_and_an_image_without_one_is_only_skipped(
    tmp_path, pose_checkpoint
):
    images = _one_image(tmp_path)
    shutil.copy(real("coco", "000000040083.jpg"), images / "000000040083.jpg")
    dets = _json(tmp_path / "dets.json", [
        {"image_id": 785, "bbox": [277.1, 45.7, 225.1, 333.6], "score": 0.99},
        {"image_id": 785, "bbox": [10, 10, 0, 0], "score": 0.9},
        {"image_id": 40083, "bbox": [5000, 10, 40, 80], "score": 0.9},
        {"image_id": 40083, "bbox": [10, 10, 40, 80], "score": 0.1},  # below the threshold
        {"image_id": 40083, "bbox": [10, 10, 40, 80], "score": 0.9, "category_id": 2},
    ])  # fmt: skip
    r = _run("predict", images, "--checkpoint", pose_checkpoint, "--boxes", dets,
             "--score-threshold", "0.5",
             "--out", tmp_path / "out", "--device", "cpu", "--no-draw")  # fmt: skip
    assert r.returncode == 0, r.stderr  # one image had a box: the other is a counted skip
    assert (
        f"posereg predict: 1 usable boxes in {dets} (5 entries, 2 skipped, "
        "2 below --score-threshold or not of the person category)"
    ) in r.stderr
    assert "skipped 1 image(s) with no usable box in the detections: 000000040083.jpg" in r.stderr
    assert "failed" not in r.stderr and "Traceback" not in r.stderr
    assert [p["image_id"] for p in json.loads((tmp_path / "out/predictions.json").read_text())] == [
        785
    ]


def test_predict_with_no_usable_box_exits_1_through_a_subprocess(tmp_path, pose_checkpoint):
    dets = _json(tmp_path / "dets.json", UNUSABLE["outside"][0])
    r = _run("predict", _one_image(tmp_path), "--checkpoint", pose_checkpoint, "--boxes", dets,
             "--out", tmp_path / "out", "--device", "cpu")  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"0 usable boxes in {dets} (1 entries, 1 skipped)" in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"posereg predict: 1 of 1 images failed: 000000000785.jpg (no usable box in {dets})"
    )
    assert r.stdout.strip().endswith("(0 poses)")


# --------------------------------------------------------------------------- degenerate 2D poses
@pytest.fixture(scope="module")
def trained_lifter(tmp_path_factory) -> Path:
    """A lifting checkpoint whose normaliser saw real poses (a few seconds of training)."""
    from posereg.config import LiftTrainConfig
    from posereg.data.lift import synthetic_pairs
    from posereg.engine.lift import _checkpoint_state, fit_lifter

    pairs = synthetic_pairs(128, seed=1, noise="none")
    cfg = dataclasses.replace(LIFT_CFG, train=LiftTrainConfig(epochs=1, batch_size=32, threads=1))
    model, result = fit_lifter(cfg, pairs, pairs)
    state = _checkpoint_state(model, cfg, 1, result.metrics, pairs)
    return save_checkpoint(state, tmp_path_factory.mktemp("lifter") / "best.pt")


def _poses(n: int = 3) -> np.ndarray:
    from posereg.data.lift import synthetic_pairs

    return synthetic_pairs(n, seed=9, noise="none").keypoints_2d  # (n, 17, 2) px


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((17, 2)),  # all zeros
        np.full((17, 2), 312.5),  # every joint on one pixel
        np.full((17, 2), 312.5) + np.linspace(-0.3, 0.3, 17)[:, None],  # under 1 px of spread
    ],
    ids=["zeros", "one-point", "subpixel"],
)
def test_degenerate_2d_poses_lift_to_nan_not_to_a_plausible_pose(trained_lifter, bad):
    from posereg.lift import Lifter

    poses = _poses()
    poses[1] = bad
    result = Lifter.from_checkpoint(trained_lifter).lift(poses)
    assert result.degenerate.tolist() == [False, True, False]
    assert np.isnan(result.joints_3d[1]).all() and np.isnan(result.sigma[1]).all()
    assert np.isfinite(result.joints_3d[[0, 2]]).all()
    record = result.to_json()[1]
    assert record["degenerate"] is True and record["joints_3d"] is None and record["sigma"] is None


def test_the_spread_is_measured_around_the_mid_hip_in_pixels():
    from posereg.models.lifter import MIN_SPREAD_PX

    model = build_lift_model(LIFT_CFG)
    kp = torch.as_tensor(_poses(1), dtype=torch.float32)
    x, spread = model.normalizer.centred_2d(kp)
    hips = list(model.normalizer.hips)
    assert torch.allclose(x[0, hips].mean(0), torch.zeros(2), atol=1e-3)
    assert float(spread[0]) == pytest.approx(float(x[0].norm(dim=-1).square().mean().sqrt()))
    # a pose scaled down to just under / over the threshold
    tiny = (kp - kp[:, hips].mean(1, keepdim=True)) / spread[:, None, None]
    for factor, expected in ((0.99, True), (1.01, False)):
        assert bool(model.normalizer.degenerate(tiny * factor * MIN_SPREAD_PX + 100)[0]) is expected


def test_lift_cli_names_the_degenerate_poses_and_writes_null(tmp_path, trained_lifter):
    poses = _poses()
    poses[0] = 0.0
    records = [
        {"image_id": 7 + i, "category_id": 1, "score": 0.9,
         "keypoints": np.concatenate([kp, np.ones((17, 1))], 1).ravel().tolist()}
        for i, kp in enumerate(poses)
    ]  # fmt: skip
    path = _json(tmp_path / "results.json", records)
    r = _run("lift", "--checkpoint", trained_lifter, path, "--out", tmp_path / "out", "--no-draw")
    assert r.returncode == 0, r.stderr  # two poses were lifted
    assert r.stderr.strip().splitlines() == [
        "posereg lift: 1 of 3 poses are degenerate (2D spread under 1 px around the mid-hip "
        "point, e.g. all zeros), lifted as null: #0 (image 7)"
    ]
    assert "lifted 2 poses (1 degenerate: null)" in r.stdout
    out = json.loads((tmp_path / "out/poses_3d.json").read_text())  # strict JSON: no NaN
    assert [p["joints_3d"] is None for p in out["poses"]] == [True, False, False]
    assert [p.get("degenerate", False) for p in out["poses"]] == [True, False, False]


def test_lift_cli_exits_1_when_every_pose_is_degenerate(tmp_path, trained_lifter):
    np.save(tmp_path / "zeros.npy", np.zeros((4, 17, 2)))
    r = _run("lift", "--checkpoint", trained_lifter, tmp_path / "zeros.npy", "--out",
             tmp_path / "out")  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "posereg lift: 4 of 4 poses are degenerate" in r.stderr
    assert "#0, #1, #2, #3" in r.stderr
    assert "lifted 0 poses (4 degenerate: null)" in r.stdout
    assert not (tmp_path / "out/poses_3d.png").exists()  # nothing to draw
    out = json.loads((tmp_path / "out/poses_3d.json").read_text())
    assert all(p["joints_3d"] is None for p in out["poses"])
