"""The family seam (posereg.family): configs and checkpoints name their family, a checkpoint of
the wrong family is one line naming the file and both families, the commands route through the
family (cli.py tests no task), and the families' protocol methods are the engine's and the
predictor's own computations, not copies."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tests._real_data import REPO, real, tiny_checkpoint, tiny_config

from posereg.checkpoint import describe_checkpoint, save_checkpoint
from posereg.cli import main
from posereg.config import ConfigError, LiftConfig, LiftDataConfig, LiftModelConfig, to_dict
from posereg.family import (
    TASKS,
    Family,
    ImageFamily,
    family_for,
    family_of_checkpoint,
    family_of_config,
)
from posereg.models.build import build_lift_model

POSEREG = str(Path(sys.executable).parent / "posereg")
PHOTO = real("coco", "000000000785.jpg")

#: a small Keypoint R-CNN (the architecture of configs/synth_kprcnn_rle.yaml, narrower)
TINY_KPRCNN = ["model.options={min_size: 128, max_size: 128, fpn_channels: 16, "
               "keypoint_layers: [16], box_representation: 32}"]  # fmt: skip

#: a small dense one-stage model (configs/synth_dense_rle.yaml's, narrower)
TINY_DENSE = ["model.width=0.25", "model.fpn_channels=16"]

LIFT_CFG = LiftConfig(
    data=LiftDataConfig(num_train=64, num_val=32),
    model=LiftModelConfig(hidden=16, num_blocks=1, loss="rle"),
)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A real top-down checkpoint, a real lifting one (as a lifting run saves it) and the
    configs of both families."""
    folder = tmp_path_factory.mktemp("families")
    lift = dataclasses.replace(LIFT_CFG, out_dir=str(folder / "runs"))
    torch.manual_seed(0)
    state = {"task": "lift", "model": build_lift_model(lift).state_dict(), "config": to_dict(lift)}
    (folder / "lift.yaml").write_text(yaml.safe_dump(to_dict(lift)))
    kprcnn = family_for("keypoint_rcnn")
    people = kprcnn.load_config(REPO / "configs/synth_kprcnn_rle.yaml", TINY_KPRCNN)
    (folder / "keypoint_rcnn.yaml").write_text(yaml.safe_dump(to_dict(people)))
    people_state = kprcnn.save_state(kprcnn.build_model(people), people)
    dense = family_for("dense")
    one_stage = dense.load_config(REPO / "configs/synth_dense_rle.yaml", TINY_DENSE)
    (folder / "dense.yaml").write_text(yaml.safe_dump(to_dict(one_stage)))
    dense_state = dense.save_state(dense.build_model(one_stage), one_stage)
    return {
        "dense": save_checkpoint(dense_state, folder / "dense.pt"),
        "dense.yaml": folder / "dense.yaml",
        "keypoint_rcnn": save_checkpoint(people_state, folder / "kprcnn.pt"),
        "keypoint_rcnn.yaml": folder / "keypoint_rcnn.yaml",
        "topdown": tiny_checkpoint(folder / "pose.pt"),
        "lift": save_checkpoint(state, folder / "lift.pt"),
        "topdown.yaml": tiny_config(folder),
        "lift.yaml": folder / "lift.yaml",
    }


def test_configs_and_checkpoints_name_their_family(checkpoints):
    for task in TASKS:
        assert family_for(task).name == task
        assert family_of_config(checkpoints[f"{task}.yaml"]).name == task
        assert family_of_checkpoint(checkpoints[task]).name == task
        family = family_for(task)
        info = describe_checkpoint(checkpoints[task])  # posereg info
        assert f"family: {family.title} ({family.maps}; `posereg {family.command}`)" in info
    assert all(isinstance(family_for(t), Family) for t in TASKS)
    # inference on images: top-down; lifting takes 2D keypoints (posereg lift)
    assert [t for t in TASKS if isinstance(family_for(t), ImageFamily)] == [
        t for t in TASKS if t != "lift"
    ]
    assert family_of_config(REPO / "configs/lift_synth_rle.yaml").name == "lift"
    assert family_of_config(REPO / "configs/synth_rle.yaml").name == "topdown"


@pytest.mark.parametrize("task", ["nosuchfamily", "topdown", 3])
def test_a_config_task_that_names_no_family_is_refused_naming_the_file(tmp_path, task):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"task": task}))
    with pytest.raises(ConfigError) as e:
        family_of_config(path)
    assert str(e.value) == (
        f"{path}: task: {task!r}: expected {' or '.join(TASKS[1:])}, or no task key for a "
        "top-down run"
    )


def _one_line(out: subprocess.CompletedProcess, command: str) -> str:
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-3000:]
    assert lines[0].startswith(f"posereg {command}: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("command", "given", "wanted", "holds"),
    [("predict", "lift", "top-down", "lifting"), ("lift", "topdown", "lifting", "top-down")],
)
def test_a_checkpoint_of_the_wrong_family_is_one_line_naming_the_file_and_both_families(
    checkpoints, tmp_path, command, given, wanted, holds
):
    """A lifter given to ``posereg predict`` on a photo, a top-down model to ``posereg lift``."""
    ck = checkpoints[given]
    poses = tmp_path / "poses.npy"
    np.save(poses, np.zeros((1, 17, 2)))
    inputs = PHOTO if command == "predict" else poses
    out = subprocess.run(
        [POSEREG, command, str(inputs), "--checkpoint", str(ck), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    line = _one_line(out, command)
    assert f"{ck}: not a {wanted} checkpoint (it holds a {holds} model" in line
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_eval_refuses_a_checkpoint_of_the_other_family(checkpoints, capsys):
    for config, ck, wanted, holds in (
        ("topdown.yaml", "lift", "top-down", "lifting"),
        ("lift.yaml", "topdown", "lifting", "top-down"),
    ):
        argv = ["eval", str(checkpoints[config]), "--checkpoint", str(checkpoints[ck])]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("posereg eval: error: ")
        assert f"{checkpoints[ck]}: not a {wanted} checkpoint (it holds a {holds} model" in err


def test_the_cli_tests_no_task_itself():
    """The commands ask posereg.family; a new family adds no case to cli.py."""
    source = (REPO / "src/posereg/cli.py").read_text()
    sniffs = ("config_task", "read_task", '== "lift"', "load_lift_config", "engine.lift",
              "engine.train import", "engine.evaluate import")  # fmt: skip
    for sniff in sniffs:
        assert sniff not in source, sniff


def test_top_down_predict_is_the_predictors(checkpoints):
    """TopDownFamily.predict gives what Predictor.from_checkpoint gives (one decoding path)."""
    from posereg.predict import Predictor

    family = family_for("topdown")
    model, cfg, _ = family.model_from_checkpoint(checkpoints["topdown"])
    predictor = Predictor.from_checkpoint(checkpoints["topdown"], device="cpu")
    image = predictor.load_image(PHOTO)
    box = np.array([[40.0, 30.0, 200.0, 300.0]])
    got = family.predict(model, cfg, [image, image], [box, None])
    want = [predictor(image, box), predictor(image)]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.keypoints, w.keypoints)
        np.testing.assert_array_equal(g.sigma, w.sigma)
        np.testing.assert_array_equal(g.boxes, w.boxes)
    assert got[1].boxes.tolist() == [[0, 0, image.shape[1], image.shape[0]]]


def test_top_down_step_loss_is_the_heads_loss_on_a_real_batch(checkpoints):
    from posereg.data.dataset import collate

    family = family_for("topdown")
    cfg = family.load_config(checkpoints["topdown.yaml"])
    model = family.build_model(cfg)
    data = family.build_data(cfg, "train")
    batch = collate([data[i] for i in range(2)])
    loss = family.train_step_loss(model, batch)
    with torch.no_grad():
        want = model.loss(model(batch.image), batch.target, batch.target_weight)
    assert loss.requires_grad and torch.allclose(loss.detach(), want)


def test_lift_family_evaluates_as_posereg_eval_does(checkpoints, capsys):
    family = family_for("lift")
    model, _, _ = family.model_from_checkpoint(checkpoints["lift"])
    cfg = family.load_config(checkpoints["lift.yaml"])
    metrics = family.evaluate(model, cfg)
    assert (
        main(["eval", str(checkpoints["lift.yaml"]), "--checkpoint", str(checkpoints["lift"])]) == 0
    )
    printed = dict(line.split(": ") for line in capsys.readouterr().out.splitlines())
    assert printed["MPJPE"] == f"{metrics['MPJPE']:.2f}" and metrics["MPJPE"] > 0
    pairs = family.build_data(cfg, "val")
    x = torch.as_tensor(pairs.keypoints_2d[:8], dtype=torch.float32)  # (8, 17, 2) px
    y = torch.as_tensor(pairs.joints_3d[:8], dtype=torch.float32)  # (8, 17, 3) mm
    with torch.no_grad():  # eval mode (no dropout): both forward passes are the same
        assert torch.allclose(family.train_step_loss(model, (x, y)), model.loss(model(x), y))
