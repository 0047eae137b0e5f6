"""The dense one-stage family (``task: dense``) through the commands: ``posereg train`` of a tiny
config on a generated ``multi`` set, ``eval`` reproducing the run's AP, ``predict`` on a real
photo; its RLE / L1 / OKS arms by ``--set``; and its bad inputs, one line each."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml

from _real_data import REPO, real, tiny_checkpoint
from posereg.checkpoint import load_checkpoint
from posereg.cli import main
from posereg.dense_losses import OKSLoss
from posereg.family import family_for
from posereg.losses import L1Loss, RLELoss
from posereg.synth import SynthConfig, generate

PHOTO = real("coco", "000000000785.jpg")
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
    config = dataclasses.replace(SynthConfig.preset("multi"), image_size=(128, 128))
    for split, n, seed in (("train", 4, 0), ("val", 2, 1)):
        generate(root / "multi", split, n, seed=seed, config=config, num_workers=0, progress=False)
    cfg = {
        "task": "dense", "name": "tiny", "out_dir": str(root / "runs"),
        "data": {
            "train_ann": str(root / "multi/annotations/person_keypoints_train.json"),
            "train_images": str(root / "multi/images/train"),
            "val_ann": str(root / "multi/annotations/person_keypoints_val.json"),
            "val_images": str(root / "multi/images/val"),
            "workers": 0,
        },
        **TINY,
    }  # fmt: skip
    (root / "tiny.yaml").write_text(yaml.safe_dump(cfg))
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
    onnx = tmp_path / "dense.onnx"
    last = run["run"] / "last.pt"
    assert main(["export", "--checkpoint", str(last), "--out", str(onnx)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("posereg export: error: the dense one-stage model has no ONNX export")
    assert not onnx.exists()
