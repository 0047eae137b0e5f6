"""The dense one-stage family (``task: dense``) through the commands: ``posereg train`` of a tiny
config on a generated ``multi`` set, ``eval`` reproducing the run's AP, ``predict`` on a real
photo; its RLE / L1 / OKS arms by ``--set``; its ONNX export (parity with PyTorch, ``posereg
export`` then ``predict`` with the ``.onnx``); and its bad inputs, one line each."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx as onnx_proto
import pytest
import torch
import yaml

from _real_data import REPO, real, tiny_checkpoint, tiny_multi_config
from posereg.checkpoint import load_checkpoint, save_checkpoint
from posereg.cli import main
from posereg.data.image_io import read_image
from posereg.dense_losses import OKSLoss
from posereg.export_multiperson import check_people_onnx
from posereg.families.multiperson import images_to_tensors
from posereg.family import family_for
from posereg.losses import L1Loss, RLELoss

PHOTO = real("coco", "000000000785.jpg")
POSEREG = str(Path(sys.executable).parent / "posereg")
#: a narrow dense model; score threshold 0 so that the barely trained model finds people
TINY = {
    "model": {
        "keypoint_loss": "rle",
        "width": 0.25,
        "fpn_channels": 16,
        "head_convs": 1,
        "max_people": 5,
    },  # fmt: skip
    "train": {"steps": 3, "batch_size": 2, "threads": 1, "log_every": 1},
    "optim": {"warmup_steps": 1},
    "eval": {"score_threshold": 0.0, "batch_size": 2},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("dense")
    tiny_multi_config(root, "dense", TINY)
    assert main(["train", str(root / "tiny.yaml")]) == 0  # the CLI, in this process
    return {"root": root, "config": root / "tiny.yaml", "run": root / "runs" / "tiny"}


def test_train_eval_predict(run, capsys):
    last = run["run"] / "last.pt"
    state = load_checkpoint(last)
    assert state["task"] == "dense" and state["step"] == 3
    header = (run["run"] / "train_log.csv").read_text().splitlines()[0]
    assert header == "step,epoch,lr,loss,objectness,box,centerness,keypoint"
    metrics = json.loads((run["run"] / "metrics.json").read_text())["val"]
    assert metrics["num_people"] > 0

    assert main(["eval", str(run["config"]), "--checkpoint", str(last)]) == 0
    lines = capsys.readouterr().out.splitlines()
    printed = dict(line.split(": ", 1) for line in lines if ": " in line)
    assert printed["AP"] == f"{metrics['AP']:.4f}"
    assert printed["clean_AP"] == f"{metrics['clean_AP']:.4f}"

    out = run["root"] / "predict"
    assert main(["predict", str(PHOTO), "--checkpoint", str(last), "--out", str(out)]) == 0
    people = json.loads((out / "predictions.json").read_text())
    assert 0 < len(people) <= 5  # model.max_people
    assert all(len(p["bbox"]) == 4 and len(p["keypoints"]) == 51 for p in people)
    assert all(p["region_p"] == 0.9 and len(p["region"]) == 17 for p in people)  # RLE's flow
    assert (out / "000000000785_pose.png").is_file()


@pytest.mark.parametrize(
    ("loss", "criterion"), [("rle", RLELoss), ("l1", L1Loss), ("oks", OKSLoss)]
)
def test_the_shipped_config_and_its_loss_arms_train_a_step(run, loss, criterion):
    """configs/synth_dense_rle.yaml with keypoint_loss rle, l1 or oks (by --set) gives that
    loss, and one step's loss on a real batch of the generated set back-propagates."""
    family = family_for("dense")
    small = ["model.width=0.25", "model.fpn_channels=16", f"model.keypoint_loss={loss}"]
    small += [] if loss == "rle" else ["model.loss_options={}"]
    cfg = family.load_config(REPO / "configs/synth_dense_rle.yaml", small)
    tiny = family.load_config(run["config"])
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(tiny.data, synth=None))
    torch.manual_seed(0)
    model = family.build_model(cfg)
    assert type(model.keypoint_loss) is criterion
    data = family.build_data(cfg, "train")
    loss_value = family.train_step_loss(model, ([data[0][0], data[1][0]], [data[0][1], data[1][1]]))
    assert loss_value.requires_grad and torch.isfinite(loss_value)
    loss_value.backward()


def test_bad_input_is_one_line(run, tmp_path, capsys):
    topdown = tiny_checkpoint(tmp_path / "pose.pt")
    assert main(["eval", str(run["config"]), "--checkpoint", str(topdown)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"posereg eval: error: {topdown}: not a dense one-stage checkpoint (it holds a top-down "
        "model: person crops -> 2D keypoints, for `posereg predict`); give a checkpoint of a "
        "dense one-stage run (whole images -> people (boxes + 2D keypoints), one pass)"
    )
    onnx, last = tmp_path / "dense.onnx", run["run"] / "last.pt"
    assert main(["export", "--checkpoint", str(last), "--out", str(onnx), "--int8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "posereg export: error: --int8: dense one-stage exports are float32 only"
    assert not onnx.exists()


@pytest.mark.parametrize(("nms", "flip_test"), [("box", False), ("oks", False), ("box", True)])
def test_onnx_runtime_finds_the_same_people_as_pytorch(run, tmp_path, nms, flip_test):
    """The trained checkpoint's export: two images of other sizes than the trace's 128x96 (one
    not a multiple of 32: padded in the graph), other people counts; box NMS in the graph, or
    (oks) the candidates in the graph and OKS-NMS after it in the runner; the flip test in the
    graph."""
    family = family_for("dense")
    model, cfg, _ = family.model_from_checkpoint(run["run"] / "last.pt")
    val = sorted((run["root"] / "multi/images/val").glob("*"))
    images = images_to_tensors([read_image(val[0]), read_image(val[1])[:112, :80]])
    with torch.no_grad():  # a threshold that the best tenth of image 0's locations pass
        out = model(images[0][None])
    threshold = float(torch.sqrt(out.logits.sigmoid() * out.centerness.sigmoid()).quantile(0.9))
    # oks: max_people 10, below the candidates' count, so the runner's post-step must cut
    most = 100 if nms == "box" else 10
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, nms=nms, max_people=most, flip_test=flip_test),
        eval=dataclasses.replace(cfg.eval, score_threshold=threshold),
    )
    people = family.people_module(model, cfg)
    path = family.export_onnx(model, cfg, tmp_path / "dense.onnx", 17)
    with torch.no_grad():
        counts = [len(people(image)[0]) for image in images]
    assert counts[0] > 0 and counts[1] > 0 and counts[0] != counts[1], counts
    parity = check_people_onnx(people, path, images, atol=1e-3, sigma_rtol=1e-4)
    assert parity.people == sum(counts)
    assert parity.keypoints < 1e-3 and parity.boxes < 1e-3 and parity.sigma < 1e-4
    # the runner (what Predictor / posereg predict use) gives the PyTorch model's people
    onnx_model, onnx_cfg, _ = family.model_from_checkpoint(path)
    assert onnx_model.family == "dense" and onnx_cfg.model.nms == nms
    assert onnx_model.metadata["flip_test"] == str(flip_test).lower()
    got = family.infer(onnx_model, onnx_cfg, images)
    want = family.infer(model, cfg, images)
    for g, w in zip(got, want, strict=True):
        assert 0 < len(g.scores) == len(w.scores)
        np.testing.assert_allclose(g.scores, w.scores, atol=1e-5)  # both best first
        np.testing.assert_allclose(g.keypoints, w.keypoints, atol=1e-3)
        np.testing.assert_allclose(g.sigma, w.sigma, rtol=1e-4)
        np.testing.assert_allclose(g.confidence, w.confidence, atol=1e-5)
    if nms == "oks":  # the graph's candidates, cut to max_people by the runner as by PyTorch
        assert len(got[0].scores) == len(got[1].scores) == 10 < min(counts)


def test_posereg_export_then_predict_with_the_onnx_gives_the_checkpoints_people(run, tmp_path):
    last, onnx = run["run"] / "last.pt", tmp_path / "dense.onnx"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [POSEREG, "export", "--checkpoint", str(last), "--out", str(onnx)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == str(onnx) and lines[1].startswith("onnxruntime vs PyTorch: max abs")
    assert float(lines[1].rsplit(" ", 1)[1]) < 1e-3
    meta = {p.key: p.value for p in onnx_proto.load(str(onnx)).metadata_props}
    assert meta["family"] == "dense" and meta["nms"] == "box"
    done = subprocess.run(
        [POSEREG, "predict", str(PHOTO), "--checkpoint", str(onnx), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (
        main(["predict", str(PHOTO), "--checkpoint", str(last), "--out", str(tmp_path / "p")]) == 0
    )
    got = json.loads((tmp_path / "o/predictions.json").read_text())
    want = json.loads((tmp_path / "p/predictions.json").read_text())
    assert 0 < len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g["keypoints"], w["keypoints"], atol=2e-3)  # x, y, score
        np.testing.assert_allclose(g["bbox"], w["bbox"], atol=2e-3)
        np.testing.assert_allclose(g["score"], w["score"], atol=1e-4)
    assert "region" not in got[0] and want[0]["region_p"] == 0.9  # the flow is not exported


def test_each_evaluation_fits_the_sigma_calibration_on_the_people_found(run):
    """fit_people_calibration on hand-made results: each person found by its box (a prediction
    far from everyone changes nothing), c_k per axis = mean |residual| / sigma against the clean
    truth; and the run's checkpoint holds the fit of its own last evaluation, which predict
    applies."""
    from posereg.data.multiperson import MultiPersonDataset
    from posereg.engine.multiperson import fit_people_calibration, predict_people
    from posereg.predict import Predictor
    from posereg.result import PoseResult

    cfg = yaml.safe_load(run["config"].read_text())
    val = MultiPersonDataset.from_coco(cfg["data"]["val_ann"], cfg["data"]["val_images"])
    t = val.table
    results = []
    for index in range(len(val)):
        rows = val.people(index)
        clean = t.keypoints_clean[rows]  # (M, K, 3)
        keypoints = clean[..., :2] + np.array([2.0, -1.0])  # 2 px right, 1 px up
        sigma = np.broadcast_to(np.array([4.0, 0.5]), keypoints.shape)
        far = np.array([[0.0, 0.0, 3.0, 3.0]])  # a spurious person in the corner, scored first
        results.append(
            PoseResult(
                np.concatenate([np.full((1, 17, 2), 500.0), keypoints]),
                np.concatenate([np.full((1, 17, 2), 1e-3), sigma]),
                np.ones((len(rows) + 1, 17)),
                np.concatenate([far, t.boxes[rows] + np.array([1.0, 0.0, 0.0, 0.0])]),
                np.concatenate([[1.0], np.linspace(0.9, 0.5, len(rows))]),
            )
        )
    fit = fit_people_calibration(val, results)
    assert fit is not None and fit.fitted and fit.truth == "clean"
    np.testing.assert_allclose(fit.scale, np.tile([0.5, 2.0], (17, 1)), rtol=1e-9)
    no_sigma = [dataclasses.replace(r, sigma=None) for r in results]
    assert fit_people_calibration(val, no_sigma) is None
    # an image where the model found nobody (no sigma there) does not stop the fit on the others
    nobody = dataclasses.replace(results[0].select(np.zeros(0, dtype=int)), sigma=None)
    partial = fit_people_calibration(val, [nobody, *results[1:]])
    assert partial is not None
    np.testing.assert_allclose(partial.scale, fit.scale, rtol=1e-9)

    # the run's checkpoint holds its last evaluation's fit: here the 3-step model's boxes
    # match nobody (IoU < 0.5), so none, and predict's c is 1
    last = run["run"] / "last.pt"
    family = family_for("dense")
    model, saved_cfg, state = family.model_from_checkpoint(last)
    _, found = predict_people(family, model, saved_cfg, val, torch.device("cpu"))
    assert fit_people_calibration(val, found) is None and "sigma_calibration" not in state
    assert not Predictor.from_checkpoint(last).calibration.fitted
    # a checkpoint with a fit (the hand-made one): predict applies it to every person's sigma
    with_fit = run["root"] / "with_fit.pt"
    save_checkpoint({**state, "sigma_calibration": fit.to_state()}, with_fit)
    predictor = Predictor.from_checkpoint(with_fit)
    assert predictor.calibration.fitted
    np.testing.assert_allclose(predictor.calibration.scale, fit.scale)
    result = predictor(read_image(PHOTO))
    assert len(result.scores) > 0
    np.testing.assert_allclose(result.sigma_calibrated, result.sigma * fit.scale)
    out = run["root"] / "predict_fit"
    assert main(["predict", str(PHOTO), "--checkpoint", str(with_fit), "--out", str(out)]) == 0
    people = json.loads((out / "predictions.json").read_text())
    sigma = np.array([p["sigma"] for p in people])  # (N, K, 2)
    calibrated = np.array([p["sigma_calibrated"] for p in people])
    np.testing.assert_allclose(calibrated, sigma * fit.scale, rtol=1e-3, atol=1e-3)
